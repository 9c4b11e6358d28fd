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

import numpy as np

from .. import dtypes
from ..chunks import Pieces, crc32, ordered, piece_bounds, resolve_threads, rows_per_chunk
from ..codecs import Context
from ..errors import UsageError
from ..format.constants import DEFAULT_LIMITS, Limits
from ..pipeline import Pipeline
from .candidates import encode_lossless, lossless_candidates, lossy_candidates, smallest
from .options import EncodeOptions
from .rate import allocate

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


def _code_lossy(tensors: dict, opts: EncodeOptions, limits: Limits, threads: int = 1, tick=None) -> dict:
    """name -> (pipeline, payload) for the lossy tensors, the rate allocated across them.

    With a ``bits`` target the payloads are measured after coding; if they overshoot by
    more than 1% (the rate model is an estimate), the budget is scaled down once and the
    tensors coded again.
    """
    ov = opts.selection.overrides
    chosen = {n: a for n, a in tensors.items() if is_lossy(n, a, opts)}
    fixed = {n: float(v) for n, v in ov.items() if isinstance(v, (int, float)) and n in chosen}
    free = {n: a for n, a in chosen.items() if n not in fixed and _candidates_override(n, ov.get(n)) is None}

    tick = tick or (lambda label, nbytes, extra=0: None)

    def code(o):
        steps = allocate(free, o, lambda n: tick(f"analysing {n}", tensors[n].nbytes))
        steps.update(fixed)
        jobs = (lambda n=n, st=st: smallest(dtypes.as_stored(tensors[n])[0], lossy_candidates(n, st, o),
                                            Context(name=n, limits=limits)) for n, st in steps.items())
        out = {}
        for n, r in zip(steps, ordered(jobs, threads)):
            out[n] = r
            tick(n, tensors[n].nbytes)
        return out

    coded = code(opts)
    bits = opts.target.bits
    if bits is not None and free:
        n_weights = sum(tensors[n].size for n in coded)
        got = 8 * sum(len(p) for _, p in coded.values())
        target = bits * n_weights
        if got > 1.01 * target:
            again = sum(tensors[n].nbytes for n in free) + sum(tensors[n].nbytes for n in coded)
            tick("rate feedback: coding again", 0, again)
            coded = code(opts.with_bits(bits * target / got))
    return coded


def iter_plan(tensors: dict, options: EncodeOptions | None = None, *, limits: Limits = DEFAULT_LIMITS,
              threads: int | None = 1, progress=None):
    """Yield ``(name, Coded)`` in the order of ``tensors``; ``threads`` code tensors and the
    pieces of large tensors in parallel (None: every core); the output never depends on it.
    ``progress(label, done, total)`` follows the whole job in bytes of work: the lossy
    tensors' analysis (rate allocation) and coding, then each tensor as it is yielded.

    The lossy tensors are coded first, together (rate allocation needs them all, and
    the rate feedback pass needs their payloads); the others are coded as they are
    yielded, a bounded window ahead, so a writer holds a few payloads at a time (and the
    pieces of the tensor being assembled).
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

    if not opts.lossless:
        lossy = [n for n, a in tensors.items() if is_lossy(n, a, opts)]
        state["total"] += 2 * sum(tensors[n].nbytes for n in lossy)  # analysis and coding
    coded = {} if opts.lossless else _code_lossy(tensors, opts, limits, threads, tick)
    ov = opts.selection.overrides
    small = opts.lossless_spec.small_bytes

    def jobs():
        # (name, dtype, shape, pieces, rows, pipeline or None, job); a job returns
        # (pipeline, payload) for a whole tensor, or the bytes of one piece
        for name, arr in tensors.items():
            arr, dt = dtypes.as_stored(np.asarray(arr))
            cands = _candidates_override(name, ov.get(name))
            ctx = Context(name=name, limits=limits)
            if cands is not None:
                yield (name, dt, arr.shape, 1, None, None), (lambda a=arr, c=cands, x=ctx: smallest(a, c, x))
                continue
            if name in coded:
                yield (name, dt, arr.shape, 1, None, None), (lambda r=coded[name]: r)
                continue
            rows = rows_per_chunk(arr.shape) if arr.nbytes > small else None
            if rows is None:
                yield (name, dt, arr.shape, 1, None, None), (lambda a=arr, x=ctx: encode_lossless(a, x, opts))
                continue
            pipe, = lossless_candidates(dt, arr.nbytes, opts, arr.shape)
            bounds = piece_bounds(arr.shape[0], rows)
            for a, b in bounds:
                yield ((name, dt, arr.shape, len(bounds), rows, pipe),
                       (lambda p=pipe, x=arr[a:b], c=ctx: _piece(p, x, c)))

    metas = collections.deque()

    def calls():
        for meta, job in jobs():
            metas.append(meta)
            yield job

    parts: list = []
    for result in ordered(calls(), threads):
        name, dt, shape, n, rows, pipe = metas.popleft()
        if n == 1:
            p, payload = result
            yield name, Coded(dt, shape, p, payload)
            tick(name, tensors[name].nbytes)
            continue
        parts.append(result)
        if len(parts) == n:
            yield name, Coded(dt, shape, pipe, Pieces(rows, tuple(p for p, _ in parts), tuple(c for _, c in parts)))
            parts = []
            tick(name, tensors[name].nbytes)


def _piece(pipe: Pipeline, x, ctx):
    """One piece's bytes and their CRC-32, both on the worker thread."""
    data = pipe._encode_bytes(x, ctx)
    return data, crc32(data)


def plan(tensors: dict, options: EncodeOptions | None = None, *, limits: Limits = DEFAULT_LIMITS,
         threads: int | None = 1) -> dict:
    """name -> :class:`Coded` (pipeline and payload) for every tensor of ``tensors``."""
    return dict(iter_plan(tensors, options, limits=limits, threads=threads))
