"""plan(): the pipeline and payload of every tensor, under one set of EncodeOptions.

Which tensors are lossy (documented in README.md):

* a tensor is lossy when its dtype is a float (float64/32/16, bfloat16), it has at
  least two dimensions and at least :data:`MIN_LOSSY_ELEMENTS` elements;
* everything else stays lossless: 1-D tensors (biases, norm parameters), tiny
  tensors, integer and bool buffers, float8;
* ``keep`` patterns (shell globs on names) force lossless, ``lossy`` patterns force
  lossy for float tensors of any shape; ``keep`` wins over ``lossy``;
* a per-tensor ``overrides`` entry gives one tensor its own settings.
"""

from __future__ import annotations

import collections
import dataclasses
import fnmatch
import math

import numpy as np

from .. import dtypes
from ..chunks import Pieces, crc32, ordered, piece_bounds, resolve_threads, rows_per_chunk
from ..codecs import Context
from ..errors import UsageError
from ..format.constants import DEFAULT_LIMITS, Limits
from ..pipeline import Pipeline
from .candidates import encode_lossless, lossless_candidates, lossy_candidates, smallest
from .filesize import Layout, file_bytes, record_bytes, tensor_header, tensor_record_bytes
from .options import RATE_TOLERANCE, EncodeOptions
from .rate import allocate, choose, measure, rate_at

#: tensors with fewer elements stay lossless by default
MIN_LOSSY_ELEMENTS = 1024
LOSSY_DTYPES = dtypes.FLOAT_DTYPES  #: the float dtypes nncodec can code lossily
LOSSLESS = EncodeOptions()


@dataclasses.dataclass(frozen=True)
class Coded:
    """One tensor, coded: what ``Writer.add_encoded`` takes."""

    dtype: str
    shape: tuple
    pipeline: Pipeline
    payload: bytes  #: or a :class:`nncodec.chunks.Pieces` for a chunked record


def is_lossy(name: str, arr: np.ndarray, opts: EncodeOptions) -> bool:
    """The documented rule (module docstring)."""
    sel = opts.selection
    if name in sel.overrides:
        return sel.overrides[name] != "lossless"
    try:
        dt = dtypes.from_numpy(arr.dtype)
    except Exception:
        return False
    if dt not in LOSSY_DTYPES:
        return False
    if any(fnmatch.fnmatchcase(name, p) for p in sel.keep):
        return False
    if any(fnmatch.fnmatchcase(name, p) for p in sel.lossy):
        return True
    return arr.ndim >= 2 and arr.size >= MIN_LOSSY_ELEMENTS


def _candidates_override(name: str, value):
    """The pipelines an override names, or None (a step, "lossy", "lossless")."""
    if isinstance(value, Pipeline):
        return [value]
    if isinstance(value, (list, tuple)):
        if not value or not all(isinstance(p, Pipeline) for p in value):
            raise UsageError(f"override for {name!r}: a list of candidates must hold Pipelines")
        return list(value)
    return None


def _split(tensors: dict, opts: EncodeOptions):
    """(chosen lossy names, fixed steps of overridden ones, free names whose steps are allocated)."""
    ov = opts.selection.overrides
    chosen = [n for n, a in tensors.items() if is_lossy(n, a, opts)]
    fixed = {n: float(v) for n, v in ov.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and n in chosen}
    free = [n for n in chosen if n not in fixed and _candidates_override(n, ov.get(n)) is None]
    return chosen, fixed, free


def _code_steps(tensors: dict, steps: dict, opts: EncodeOptions, limits: Limits, threads: int, tick) -> dict:
    """name -> (pipeline, payload) of lossy tensors at the given scalar steps."""
    jobs = (lambda n=n, st=st: smallest(dtypes.as_stored(tensors[n])[0], lossy_candidates(n, st, opts),
                                        Context(name=n, limits=limits)) for n, st in steps.items())
    out = {}
    for n, r in zip(steps, ordered(jobs, threads)):
        out[n] = r
        tick(n, tensors[n].nbytes)
    return out


def _code_lossy(tensors: dict, opts: EncodeOptions, limits: Limits, threads: int = 1, tick=None) -> dict:
    """name -> (pipeline, payload) for the lossy tensors under an ``snr``, ``step`` or
    ``max_error`` target (whole-file targets: :func:`_code_to_size`)."""
    tick = tick or (lambda label, nbytes, extra=0: None)
    _, fixed, free = _split(tensors, opts)
    steps = allocate({n: tensors[n] for n in free}, opts, lambda n: tick(f"analysing {n}", tensors[n].nbytes),
                     importance=_importance(tensors, opts))
    steps.update(fixed)
    return _code_steps(tensors, steps, opts, limits, threads, tick)


def _importance(tensors: dict, opts: EncodeOptions) -> dict:
    """name -> (scale, columns or None) of ``opts.importance`` over all the tensors (``auto``
    reads the norm tensors, which are not lossy); see :mod:`nncodec.importance`."""
    if opts.importance is None:
        return {}
    from ..importance import resolve

    return resolve(opts.importance, tensors)


#: mantissa width of each float dtype the near-lossless mode rounds
MANTISSA_BITS = {"float64": 52, "float32": 23, "float16": 10, "bfloat16": 7}


def round_mantissa(arr: np.ndarray, dtype: str, keep: int) -> np.ndarray:
    """``arr`` (a stored float array of dtype ``dtype``) with its mantissas rounded to ``keep``
    bits, to nearest with ties to even, on the bit patterns: a normal value moves by at most
    ``2**-(keep+1)`` of itself, a subnormal by at most ``2**-(keep+1)`` times the smallest
    normal. Zeros, signs, infinities and NaNs are kept; a finite value that would round to
    infinity is truncated instead. ``arr`` itself when ``keep`` covers the mantissa."""
    width = MANTISSA_BITS[dtype]
    if keep >= width or arr.size == 0:
        return arr
    drop = width - keep
    ut = dtypes.uint_view(dtype)
    t = ut.type
    nbits = 8 * ut.itemsize
    u = arr.view(ut)
    exp = t(((1 << (nbits - 1)) - 1) & ~((1 << width) - 1))
    low = t((1 << drop) - 1)
    finite = (u & exp) != exp
    with np.errstate(over="ignore"):
        r = (u + (t((1 << (drop - 1)) - 1) + ((u >> t(drop)) & t(1)))) & ~low
    r = np.where(finite & ((r & exp) == exp), u & ~low, r)
    r = np.where(finite, r, u).astype(ut, copy=False)
    return r.view(arr.dtype).reshape(arr.shape)


def is_near_lossless(name: str, arr, opts: EncodeOptions) -> bool:
    """Whether a tensor that is not lossy is rounded by the near-lossless mode (options.LosslessSpec):
    a float tensor (float64/32/16, bfloat16) of more than ``small_bytes`` bytes that no ``keep``
    pattern or override names, when a rate target other than ``step``/``max_error`` is in force."""
    keep = opts.near_lossless_bits
    if keep is None or name in opts.selection.overrides or is_lossy(name, arr, opts):
        return False
    try:
        dt = dtypes.from_numpy(arr.dtype)
    except Exception:
        return False
    if dt not in MANTISSA_BITS or keep >= MANTISSA_BITS[dt] or arr.nbytes <= opts.lossless_spec.small_bytes:
        return False
    return not any(fnmatch.fnmatchcase(name, p) for p in opts.selection.keep)


def _iter_other(tensors: dict, names, opts: EncodeOptions, limits: Limits, threads: int):
    """Yield ``(name, pipeline, payload)`` for the tensors ``names`` (in order) that are not
    coded by the rate allocation: overrides with candidate pipelines, lossless and
    near-lossless tensors; ``threads`` code them a bounded window ahead, the pieces of large
    tensors in parallel."""
    ov = opts.selection.overrides
    small = opts.lossless_spec.small_bytes
    keep = opts.near_lossless_bits

    def jobs():
        # (name, pieces, rows, pipeline or None), job; a job returns (pipeline, payload) for a
        # whole tensor, or the bytes of one piece and their CRC-32
        for name in names:
            arr, dt = dtypes.as_stored(np.asarray(tensors[name]))
            cands = _candidates_override(name, ov.get(name))
            ctx = Context(name=name, limits=limits)
            if cands is not None:
                yield (name, 1, None, None), (lambda a=arr, c=cands, x=ctx: smallest(a, c, x))
                continue
            if keep is not None and is_near_lossless(name, arr, opts):
                yield (name, 1, None, None), (lambda a=arr, d=dt, x=ctx: _near_lossless(a, d, keep, x, opts))
                continue
            rows = rows_per_chunk(arr.shape) if arr.nbytes > small else None
            if rows is None:
                yield (name, 1, None, None), (lambda a=arr, x=ctx: encode_lossless(a, x, opts))
                continue
            pipe, = lossless_candidates(dt, arr.nbytes, opts, arr.shape)
            bounds = piece_bounds(arr.shape[0], rows)
            for a, b in bounds:
                yield (name, len(bounds), rows, pipe), (lambda p=pipe, x=arr[a:b], c=ctx: _piece(p, x, c))

    metas = collections.deque()

    def calls():
        for meta, job in jobs():
            metas.append(meta)
            yield job

    parts: list = []
    for result in ordered(calls(), threads):
        name, n, rows, pipe = metas.popleft()
        if n == 1:
            yield (name, *result)
            continue
        parts.append(result)
        if len(parts) == n:
            yield name, pipe, Pieces(rows, tuple(p for p, _ in parts), tuple(c for _, c in parts))
            parts = []


def _near_lossless(arr: np.ndarray, dt: str, keep: int, ctx, opts: EncodeOptions) -> tuple:
    """The smallest lossless coding of ``arr`` with its mantissas rounded to ``keep`` bits; the
    exact values when that is stored raw anyway (rounding would buy nothing)."""
    pipe, payload = encode_lossless(round_mantissa(arr, dt, keep), ctx, opts)
    if pipe.serializer.codec_id == "raw":
        return encode_lossless(arr, ctx, opts)
    return pipe, payload


#: (pass, file bytes, target bytes, step factor) of each coding pass of the last whole-file target
last_passes: list = []

#: raw bytes of the lossless tensors a whole-file target codes ahead and holds until they are
#: written; past it, only their record sizes are kept and they are coded again when written
HOLD_BYTES = 1 << 28
#: coding passes a whole-file target may take (each codes every rate-allocated tensor)
MAX_PASSES = 6
#: the passes aim at the target less this fraction of it, and end once a file lands in
#: [target x (1 - options.RATE_TOLERANCE), target]
AIM = 0.0025


def float_elements(tensors: dict) -> int:
    """The floating-point elements of a model (what ``bits`` counts per): the elements of every
    tensor of a float dtype (float64/32/16, bfloat16, float8), each stored tensor once."""
    n = 0
    for a in tensors.values():
        try:
            dt = dtypes.from_numpy(a.dtype)
        except Exception:
            continue
        if dtypes.kind(dt) == "f":
            n += int(a.size)
    return n


def _code_to_size(tensors: dict, opts: EncodeOptions, limits: Limits, threads: int, tick, layout: Layout) -> dict:
    """name -> (pipeline, payload or None) for every tensor of ``tensors`` under a whole-file
    target (bits, size, ratio); ``None`` payloads (lossless tensors past :data:`HOLD_BYTES`)
    are coded again when written and give the same bytes.

    The tensors outside the rate allocation are coded first and their records counted
    exactly, with the container (:mod:`.filesize`); the rest of the target is the
    allocated tensors' budget. Each pass codes them, measures the exact file, corrects each
    tensor's measured curve by the rate its coder really spent (one factor per tensor) and
    scales every step by one factor so that the corrected curves meet the budget; the first
    correction also re-allocates at equal slope. The passes aim just below the target
    (:data:`AIM`) and stop once a file lands in [target x (1 - RATE_TOLERANCE), target]; else
    the file kept is the pass closest to the aim, if within RATE_TOLERANCE of the target
    (a UsageError otherwise).
    """
    target = opts.target
    names = list(tensors)
    _, fixed, free = _split(tensors, opts)
    n_float = float_elements(tensors)
    data_bytes = sum(int(np.asarray(a).nbytes) for a in tensors.values())
    T = target.file_bytes(n_float, data_bytes)
    what = _describe_target(target, T, n_float)

    out: dict = {}
    held = 0
    others = [n for n in names if n not in fixed and n not in free]
    for name, pipe, payload in _iter_other(tensors, others, opts, limits, threads):
        out[name] = (pipe, payload)
        tick(f"coding {name}", tensors[name].nbytes)
    out.update(_code_steps(tensors, fixed, opts, limits, threads, tick))
    targets = layout.targets

    def coded(name, res):
        arr = tensors[name]
        return Coded(dtypes.from_numpy(arr.dtype), tuple(arr.shape), res[0], res[1])

    fixed_rec = {n: tensor_record_bytes(n, coded(n, r), n in targets) for n, r in out.items()}
    for name in others:  # payloads past the holding budget are dropped (coded again when written)
        held += int(tensors[name].nbytes)
        if held > HOLD_BYTES:
            out[name] = (out[name][0], None)

    def file_size(free_rec: dict) -> int:
        return file_bytes([(n, fixed_rec[n] if n in fixed_rec else free_rec[n]) for n in names], layout)

    if not free:
        size = file_size({})
        if size > T * (1 + RATE_TOLERANCE):
            raise UsageError(f"{what} cannot be met: no tensor is left to code lossily (they are all kept, "
                             f"overridden or too small) and the file is {size} bytes")
        return out

    free_t = {n: tensors[n] for n in free}
    curves = measure(free_t, opts, lambda n: tick(f"analysing {n}", tensors[n].nbytes), _importance(tensors, opts))
    # a free record's bytes besides its payload: first from a representative header, then measured
    over = {}
    for n in free:
        arr = tensors[n]
        pipe = lossy_candidates(n, float(curves[n][0][len(curves[n][0]) // 2]) * (1 + 1e-12), opts)[0]
        h = tensor_header(n, dtypes.from_numpy(arr.dtype), arr.shape, pipe, b"", n in targets)
        rows = rows_per_chunk(tuple(arr.shape))
        extra = 0
        if rows is not None:  # a chunk table: about 20 characters a piece
            extra = 40 + 20 * -(-arr.shape[0] // rows)
        over[n] = record_bytes(h, 0) + extra + 4
    base = file_size({n: over[n] for n in free})  # the file with empty free payloads
    k = {n: 1.0 for n in free}

    def predict(choice, c):
        return sum(k[n] * rate_at(curves[n], c * curves[n][0][j]) for n, j in choice.items())

    coarsest = {n: 0 for n in free}
    C_MAX, C_MIN = 2.0 ** 8, 2.0 ** -6

    def solve(choice, budget):
        lo, hi = math.log2(C_MIN), math.log2(C_MAX)
        if predict(choice, 2.0 ** hi) > budget:
            return None
        if predict(choice, 2.0 ** lo) < budget:
            return False
        for _ in range(50):
            mid = (lo + hi) / 2
            if predict(choice, 2.0 ** mid) > budget:
                lo = mid
            else:
                hi = mid
        return 2.0 ** hi

    budget = 8.0 * (T - base)
    min_bytes = base + predict(coarsest, C_MAX) / 8
    if budget <= 0 or min_bytes > T * (1 + RATE_TOLERANCE):
        raise UsageError(f"{what} is below the smallest file these options make (about {min_bytes:,.0f} bytes, "
                         f"{8 * min_bytes / max(n_float, 1):.3f} bits per parameter: the container and the tensors "
                         f"coded losslessly take {base:,} bytes); ask for more")
    lossless_est = _lossless_estimate(free_t, opts, limits) + base
    if T >= lossless_est * (1 - RATE_TOLERANCE):
        raise UsageError(f"{what} is at or above the lossless size of this model (about {lossless_est:,.0f} bytes, "
                         f"{8 * lossless_est / max(n_float, 1):.2f} bits per parameter): lossy coding has nothing to "
                         f"trade; encode without a rate target for the exact file")
    best = None
    choice = None
    last_passes.clear()
    for it in range(MAX_PASSES):
        budget = 8.0 * (T * (1 - AIM) - base)
        if it < 2:
            choice = choose({n: (c[0], c[1] * k[n], *c[2:]) for n, c in curves.items()}, budget)
        c = solve(choice, budget)
        if c is None or c is False:
            finest = base + predict(choice, C_MIN) / 8
            if c is False:
                raise UsageError(f"{what} is above the largest file lossy coding makes with these options (about "
                                 f"{finest:,.0f} bytes); encode without a rate target for a lossless file")
            c = C_MAX
        steps = {n: float(c * curves[n][0][j]) for n, j in choice.items()}
        if it:
            tick("rate feedback: coding again", 0, sum(tensors[n].nbytes for n in steps))
        res = _code_steps(tensors, steps, opts, limits, threads, tick)
        rec = {n: tensor_record_bytes(n, coded(n, r), n in targets) for n, r in res.items()}
        size = file_size(rec)
        last_passes.append((it, size, T, c))
        inside = T * (1 - RATE_TOLERANCE) <= size <= T
        rank = (not inside, abs(size - T * (1 - AIM)))
        if best is None or rank < best[0]:
            best = (rank, size, res)
        if inside:
            break
        for n, r in res.items():  # calibrate each curve at the step coded, and the record overheads
            est = rate_at(curves[n], steps[n])
            got = 8.0 * len(r[1])
            if est > 0 and got > 0:
                k[n] = got / est
            over[n] = rec[n] - len(r[1])
        base = file_size({n: over[n] for n in free})
        del res
    _, size, res = best
    if abs(size - T) > RATE_TOLERANCE * T:
        if size > T:
            raise UsageError(f"{what} could not be met: the smallest file coded is {size:,} bytes "
                             f"({8 * size / max(n_float, 1):.3f} bits per parameter); ask for more")
        raise UsageError(f"{what} could not be met: the largest file coded is {size:,} bytes "
                         f"({8 * size / max(n_float, 1):.3f} bits per parameter)")
    out.update(res)
    return out


def _describe_target(target, T: float, n_float: int) -> str:
    if target.bits is not None:
        return f"bits = {target.bits:g} ({T:,.0f} bytes for {n_float:,} float parameters)"
    if target.size is not None:
        return f"size = {target.size:,} bytes"
    return f"ratio = {target.ratio:g} ({T:,.0f} bytes)"


def _lossless_estimate(tensors: dict, opts: EncodeOptions, limits: Limits) -> float:
    """About the bytes the lossless coder gives these tensors: each one's sample of up to
    :data:`.rate.SAMPLE` elements (a strided pick of rows of at most 256 elements) coded,
    scaled to the tensor."""
    from .rate import SAMPLE

    total = 0.0
    for n, a in tensors.items():
        arr, dt = dtypes.as_stored(np.asarray(a))
        flat = arr.reshape(-1)
        if flat.size > SAMPLE:
            run = 256
            starts = (np.arange(SAMPLE // run) * ((flat.size - run) / (SAMPLE // run - 1))).astype(np.int64)
            flat = flat[(starts[:, None] + np.arange(run)).reshape(-1)]
        _, payload = encode_lossless(np.ascontiguousarray(flat), Context(name=n, limits=limits), opts)
        total += len(payload) * (arr.size / max(flat.size, 1))
    return total


def iter_plan(tensors: dict, options: EncodeOptions | None = None, *, limits: Limits = DEFAULT_LIMITS,
              threads: int | None = 1, progress=None, layout: Layout | None = None):
    """Yield ``(name, Coded)`` in the order of ``tensors``; ``threads`` code tensors and the
    pieces of large tensors in parallel (None: every core); the output never depends on it.
    ``progress(label, done, total)`` follows the whole job in bytes of work: the lossy
    tensors' analysis (rate allocation) and coding, then each tensor as it is yielded.

    The lossy tensors are coded first, together (rate allocation needs them all, and
    the rate feedback pass needs their payloads); the others are coded as they are
    yielded, a bounded window ahead, so a writer holds a few payloads at a time (and the
    pieces of the tensor being assembled). A whole-file target (``bits``, ``size``,
    ``ratio``) codes every tensor first (see :func:`_code_to_size`); ``layout`` says what
    the file holds besides the tensor records (the metadata record, aliases), by default
    nothing.
    """
    opts = LOSSLESS if options is None else options
    if not isinstance(opts, EncodeOptions):
        raise UsageError(f"options must be an EncodeOptions, found {type(opts).__name__}")
    threads = resolve_threads(threads)
    state = {"done": 0, "total": sum(getattr(a, "nbytes", 0) for a in tensors.values())}

    def tick(label, nbytes, extra=0):
        state["total"] += extra
        state["done"] += nbytes
        if progress is not None:
            progress(label, state["done"], state["total"])

    whole = not opts.lossless and opts.target.whole_file
    if not opts.lossless:
        lossy = [n for n, a in tensors.items() if is_lossy(n, a, opts)]
        state["total"] += 2 * sum(tensors[n].nbytes for n in lossy)  # analysis and coding
        if whole:
            state["total"] += sum(a.nbytes for n, a in tensors.items() if n not in set(lossy))
    if opts.lossless:
        coded = {}
    elif whole:
        coded = _code_to_size(tensors, opts, limits, threads, tick, layout or Layout())
    else:
        coded = _code_lossy(tensors, opts, limits, threads, tick)
    rest = _iter_other(tensors, [n for n in tensors if coded.get(n, (None, None))[1] is None], opts, limits,
                       threads)
    for name, arr in tensors.items():
        r = coded.get(name)
        if r is None or r[1] is None:
            got, pipe, payload = next(rest)
            assert got == name
        else:
            pipe, payload = r
        arr = np.asarray(arr)
        yield name, Coded(dtypes.from_numpy(arr.dtype), tuple(arr.shape), pipe, payload)
        tick(name, tensors[name].nbytes)


def _piece(pipe: Pipeline, x, ctx):
    """One piece's bytes and their CRC-32, both on the worker thread."""
    data = pipe._encode_bytes(x, ctx)
    return data, crc32(data)


def plan(tensors: dict, options: EncodeOptions | None = None, *, limits: Limits = DEFAULT_LIMITS,
         threads: int | None = 1) -> dict:
    """name -> :class:`Coded` (pipeline and payload) for every tensor of ``tensors``."""
    return dict(iter_plan(tensors, options, limits=limits, threads=threads))
