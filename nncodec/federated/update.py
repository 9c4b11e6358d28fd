"""Model updates: the difference between a model and a base both sides hold (spec/UPDATES.md).

An update is an ordinary .nnc file (or byte string) whose records hold, per
tensor, a *delta* against the base, and whose metadata names the base by a
SHA-256 hash (:func:`base_sha256`). Decoding against any other base raises
:class:`~nncodec.errors.BaseMismatchError`.

Two kinds of delta, told apart by the record's dtype (spec/UPDATES.md §3):

* **xor** -- the bit patterns of the new tensor XOR those of the base, stored
  as the unsigned integer of the same width for floats and complex (the tensor's
  own dtype for integers and bool). Exact: ``new = base ^ delta`` bit for bit. Used by
  the lossless mode and for every tensor a lossy update does not quantize.
* **sub** -- ``new - base`` in the tensor's float dtype, quantized; decoded
  as ``new^ = round(base + delta^)``. Used for the quantized tensors.

Quantizers for the sub deltas (``quantizer=``):

* ``"scalar"`` -- uniform step, by default with subtractive dither from
  ``seed`` (one per client and round) and a stream per tensor name: the error
  is uniform on [-step/2, step/2) and the update unbiased;
* ``"stochastic"`` -- stochastic rounding (``floor(t + u)``, u uniform from the
  same generator): unbiased, keeps zeros at zero (good after sparsification);
  stored as a plain ``scalar`` stage since decoding is the same;
* ``"3lc"`` -- ternary with sparsity multiplier (spec/codecs/3lc.md).

``topk`` (fraction kept) or ``threshold`` (absolute) zero the small entries of
each delta first; the levels are then coded with ``zerorun`` (run lengths of
the zeros, i.e. the indices, and the values as two rANS streams) or ``ans``,
whichever is smaller. ``error_feedback`` carries what was not sent into the
next round.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import struct

import numpy as np

from .._memory import release_array
from .. import dither as _dither
from .. import dtypes
from ..api import Writer, iter_decode, shared_memory_aliases
from ..codecs import ArraySpec, Context, codec_class
from ..errors import BaseMismatchError, CorruptError, UsageError
from ..format.constants import DEFAULT_LIMITS, Limits
from ..encode import smallest
from ..pipeline import Pipeline

__all__ = [
    "UpdateOptions", "ErrorFeedback", "base_sha256", "encode_update", "write_update", "decode_update",
    "read_update", "apply_update", "stochastic_round", "KEY_VERSION", "KEY_BASE", "KEY_FULL", "KEY_REMOVED",
]

KEY_VERSION = "nncodec.update.version"
KEY_BASE = "nncodec.update.base_sha256"
KEY_FULL = "nncodec.update.full"
KEY_REMOVED = "nncodec.update.removed"
UPDATE_VERSION = "1"
HASH_MAGIC = b"nncodec.base.v1\x00"
QUANTIZERS = ("scalar", "stochastic", "3lc")
SUB_DTYPES = dtypes.FLOAT_DTYPES
to_dtype = dtypes.round_float


# ------------------------------------------------------------------ base hash


def base_sha256(model: dict) -> str:
    """The hex SHA-256 of a model (spec/UPDATES.md §2): names, dtypes, shapes and bytes.

    Tensors are taken in the byte order of their UTF-8 names; each adds its
    name, dtype name, shape and little-endian C-order bytes, with lengths.
    """
    h = hashlib.sha256(HASH_MAGIC)
    h.update(struct.pack("<Q", len(model)))
    items = sorted(((_name_bytes(n), n) for n in model), key=lambda t: t[0])
    for nb, n in items:
        arr, dt = dtypes.as_stored(_array(model[n], n))
        db = dt.encode("ascii")
        h.update(struct.pack("<I", len(nb)) + nb + struct.pack("<B", len(db)) + db)
        h.update(struct.pack("<B", arr.ndim) + b"".join(struct.pack("<Q", d) for d in arr.shape))
        h.update(struct.pack("<Q", arr.nbytes))
        h.update(arr.reshape(-1).view(np.uint8).data if arr.size else b"")
        release_array(arr)  # a memory-mapped model's pages go back once hashed
    return h.hexdigest()


def _releasing(plan):
    """The plan's entries; after each, the pages of its memory-mapped arrays go back."""
    for item in plan:
        yield item
        release_array(item[1])
        release_array(item[3])


def _name_bytes(n) -> bytes:
    if not isinstance(n, str):
        raise UsageError(f"tensor names must be strings, found {n!r:.80}")
    return n.encode("utf-8", "surrogatepass")


def _array(v, name) -> np.ndarray:
    if hasattr(v, "detach") and hasattr(v, "numpy"):  # a torch tensor
        v = v.detach().cpu().numpy()
    a = np.asarray(v)
    try:
        dtypes.from_numpy(a.dtype)
    except Exception as e:
        raise UsageError(f"tensor {name!r}: {e}") from None
    return a


# ------------------------------------------------------------------ options


@dataclasses.dataclass
class UpdateOptions:
    """How to code an update. The default (no quantizer) is lossless.

    ``quantizer`` -- None (lossless xor deltas), ``"scalar"``, ``"stochastic"``
    or ``"3lc"``; ``step`` (absolute) or ``rel_step`` (times each delta's RMS,
    default 1.0) sets the scalar/stochastic step; ``dither`` (scalar only,
    default True) and ``seed``; ``topk`` (fraction of each tensor kept, by
    magnitude) or ``threshold`` (absolute); ``sparsity`` (3lc's s);
    ``min_elements`` -- float tensors smaller than this stay lossless.

    With error feedback the quantization error of a round must be smaller than
    what it codes, or the residual grows round after round: keep ``rel_step``
    at 2 or below (the dithered error's RMS is ``rel_step / sqrt(12)`` times
    the RMS of the compensated delta).
    """

    quantizer: str | None = None
    step: float | None = None
    rel_step: float | None = None
    dither: bool | None = None
    seed: int = 0
    topk: float | None = None
    threshold: float | None = None
    sparsity: float = 1.0
    min_elements: int = 0

    def __post_init__(self):
        if self.quantizer is None and (self.topk is not None or self.threshold is not None):
            self.quantizer = "stochastic"
        if self.quantizer is None and (self.step is not None or self.rel_step is not None):
            self.quantizer = "scalar"
        if self.quantizer is not None and self.quantizer not in QUANTIZERS:
            raise UsageError(f"unknown quantizer {self.quantizer!r}; choose one of {', '.join(QUANTIZERS)} "
                             f"(or none for a lossless update)")
        if self.step is not None and self.rel_step is not None:
            raise UsageError("give step or rel_step, not both")
        for k in ("step", "rel_step", "threshold"):
            v = getattr(self, k)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise UsageError(f"{k} = {v!r}: must be a positive number")
        if self.topk is not None and not (isinstance(self.topk, (int, float)) and 0 < self.topk <= 1):
            raise UsageError(f"topk = {self.topk!r}: must be a fraction in (0, 1]")
        if self.topk is not None and self.threshold is not None:
            raise UsageError("give topk or threshold, not both")
        if self.dither is None:
            self.dither = self.quantizer == "scalar" and self.topk is None and self.threshold is None
        if self.dither and self.quantizer != "scalar":
            raise UsageError(f"dither applies to the scalar quantizer, not {self.quantizer!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or not 0 <= self.seed < 2**64:
            raise UsageError(f"seed must be an integer in [0, 2**64), found {self.seed!r}")
        self.seed = int(self.seed)
        if self.quantizer == "3lc":
            codec_class("3lc")(self.sparsity)  # validates
        if isinstance(self.min_elements, bool) or not isinstance(self.min_elements, int) or self.min_elements < 0:
            raise UsageError(f"min_elements = {self.min_elements!r}: must be a non-negative integer")

    @property
    def lossless(self) -> bool:
        return self.quantizer is None


def _options(opts, kw) -> UpdateOptions:
    if opts is not None and kw:
        raise UsageError(f"give options either as UpdateOptions or as keywords, not both ({sorted(kw)})")
    if opts is None:
        try:
            return UpdateOptions(**kw)
        except TypeError as e:
            raise UsageError(f"update options: {e}") from None
    if not isinstance(opts, UpdateOptions):
        raise UsageError(f"opts must be an UpdateOptions, found {type(opts).__name__}")
    return opts


# ------------------------------------------------------------------ error feedback


class ErrorFeedback:
    """The residual a client keeps between rounds: what it meant to send minus what arrived.

    >>> ef = ErrorFeedback()
    >>> data = encode_update(model, base, quantizer="3lc", error_feedback=ef)

    or by hand: ``target = ef.compensate(delta)``; code ``target``; then
    ``ef.update_residual(target, decoded)``. Residuals are float64 arrays keyed
    by tensor name; :meth:`state_dict` / :meth:`load_state_dict` persist them.
    """

    def __init__(self, decay: float = 1.0):
        if not (isinstance(decay, (int, float)) and 0.0 <= decay <= 1.0):
            raise UsageError(f"decay = {decay!r}: must be in [0, 1]")
        self.decay = float(decay)
        self.residual: dict = {}

    def compensate(self, update: dict) -> dict:
        """``update + decay * residual`` per tensor (float64)."""
        out = {}
        for k, v in update.items():
            v = np.asarray(v, dtype=np.float64)
            r = self.residual.get(k)
            out[k] = v + self.decay * r if r is not None and r.shape == v.shape else v.copy()
        return out

    def update_residual(self, sent: dict, decoded: dict) -> None:
        """Keep ``sent - decoded`` for every tensor in ``sent``."""
        for k, v in sent.items():
            self.residual[k] = np.asarray(v, dtype=np.float64) - np.asarray(decoded[k], dtype=np.float64)

    def norm(self) -> float:
        """The L2 norm of the whole residual."""
        return math.sqrt(sum(float(np.dot(r.reshape(-1), r.reshape(-1))) for r in self.residual.values()))

    def state_dict(self) -> dict:
        return {k: v.copy() for k, v in self.residual.items()}

    def load_state_dict(self, state: dict) -> None:
        self.residual = {k: np.asarray(v, dtype=np.float64).copy() for k, v in state.items()}

    def reset(self) -> None:
        self.residual.clear()


# ------------------------------------------------------------------ quantization


def stochastic_round(t: np.ndarray, seed: int, stream: int) -> np.ndarray:
    """``floor(t_i + u_i)`` with ``u_i`` the dither generator's [0, 1) value of element i (int64).

    Unbiased: ``E[result] = t``, with variance ``f(1 - f)``, f the fraction of t.
    """
    t = np.asarray(t, dtype=np.float64).reshape(-1)
    u = _dither.uniform(seed, stream, 0, t.size)
    return np.floor(t + u).astype(np.int64)


def _sparsify(d: np.ndarray, o: UpdateOptions) -> np.ndarray:
    if o.topk is not None:
        k = int(math.ceil(o.topk * d.size))
        if k < d.size:
            out = np.zeros_like(d)
            idx = np.argpartition(np.abs(d).reshape(-1), d.size - k)[d.size - k:]
            out.reshape(-1)[idx] = d.reshape(-1)[idx]
            return out
        return d
    if o.threshold is not None:
        return np.where(np.abs(d) >= o.threshold, d, 0.0)
    return d


def _quantize(name: str, d64: np.ndarray, dt: str, o: UpdateOptions, ctx: Context):
    """``(pipeline, payload, decoded delta in dtype)`` for a sub delta, or None to send it as xor."""
    target = _sparsify(d64, o)
    with np.errstate(over="ignore"):
        d = to_dtype(target, dt).reshape(d64.shape)
    if not np.isfinite(d).all():
        raise UsageError(f"tensor {name!r}: the delta with the error-feedback residual is not finite in {dt}")
    if o.quantizer == "3lc":
        pipe = Pipeline([codec_class("3lc")(o.sparsity)])
        payload = pipe.encode(d, ctx)
    else:
        nz = target[target != 0]
        if nz.size == 0:
            return None  # nothing to send
        step = o.step if o.step is not None else (o.rel_step or 1.0) * math.sqrt(float(np.mean(nz * nz)))
        stream = _dither.stream_for_name(name)
        scalar = codec_class("scalar")
        levels = None
        if o.quantizer == "scalar":
            q = scalar(step, dither=o.dither, seed=o.seed, stream=stream) if o.dither else scalar(step)
        else:  # stochastic rounding: levels made here, decoded as a plain scalar stage
            q = scalar(step)
            lv = stochastic_round(d.astype(np.float64) / step, o.seed, stream)
            if lv.size and np.abs(lv).max() > 2**31 - 1:
                raise UsageError(f"tensor {name!r}: step {step!r} too small (levels beyond int32)")
            levels = lv.astype(np.int32).reshape(d.shape)
        candidates = [Pipeline([q, codec_class("ans")()]), Pipeline([q, codec_class("zerorun")()])]
        pipe, payload = smallest(d, candidates, ctx, levels=levels)
    dec = pipe.decode_coded(payload, ArraySpec(dt, d.shape), ctx)
    return pipe, payload, dec


def _xor(new: np.ndarray, base: np.ndarray) -> np.ndarray:
    _, dt = dtypes.as_stored(new)
    if dt == "bool":
        return new != base
    if dtypes.kind(dt) in ("i", "u") and dt not in dtypes.PACKED:
        return new ^ base
    u = dtypes.uint_view(dt)  # floats, complex, packed FP4: their bits as the unsigned integer of their width
    return new.view(u) ^ base.view(u)


# ------------------------------------------------------------------ encoding


def write_update(file, model: dict, base: dict, *, opts: UpdateOptions | None = None, error_feedback=None,
                 metadata: dict | None = None, aliases: dict | None = None, base_hash: str | None = None,
                 limits: Limits = DEFAULT_LIMITS, **kw) -> list:
    """Write the update from ``base`` to ``model`` to ``file`` (a path or a writable binary stream).

    ``aliases`` (name -> target name in ``model``) are written as alias
    records; without it, arrays of ``model`` that are the same memory become
    aliases. ``base_hash`` skips hashing ``base`` when the caller has it.
    Returns the written records' :class:`~nncodec.api.TensorInfo`.
    """
    o = _options(opts, kw)
    if not isinstance(model, dict) or not isinstance(base, dict):
        raise UsageError("model and base must be dicts of arrays")
    md = dict(metadata or {})
    for k in list(md):
        if k.startswith("nncodec.update."):
            raise UsageError(f"metadata key {k!r} is reserved for the update format")
    if aliases is None:
        aliases = shared_memory_aliases(model)
    md[KEY_VERSION] = UPDATE_VERSION
    md[KEY_BASE] = base_hash or base_sha256(base)
    full = []
    plan = []
    for name, v in model.items():
        if name in aliases:
            continue
        arr, dt = dtypes.as_stored(_array(v, name))
        b = base.get(name)
        if b is not None:
            b, bdt = dtypes.as_stored(_array(b, name))
            if bdt != dt or b.shape != arr.shape:
                b = None
        if b is None:
            full.append(name)
        plan.append((name, arr, dt, b))
    removed = [n for n in base if n not in model]
    if full:
        md[KEY_FULL] = json.dumps(full, ensure_ascii=False)
    if removed:
        md[KEY_REMOVED] = json.dumps(removed, ensure_ascii=False)
    sent, decoded = {}, {}
    with Writer(file, metadata=md, limits=limits) as w:
        w.expect_aliases(aliases.values())
        for name, arr, dt, b in _releasing(plan):
            if b is None:
                w.add(name, arr)
                continue
            res = None
            if not o.lossless and dt in SUB_DTYPES and arr.size >= max(o.min_elements, 1):
                with np.errstate(over="ignore", invalid="ignore"):
                    d64 = arr.astype(np.float64) - b.astype(np.float64)
                    finite = np.isfinite(to_dtype(d64, dt)).all()
                if not finite:  # inf/nan weights or a delta beyond the dtype: send it exactly
                    w.add(name, _xor(arr, b))
                    continue
                if error_feedback is not None:
                    d64 = error_feedback.compensate({name: d64})[name]
                ctx = Context(name=name, limits=limits)
                res = _quantize(name, d64, dt, o, ctx)
                if res is None:  # nothing left to send: a zero xor delta (new^ = base)
                    res = np.zeros(arr.shape, dtypes.uint_view(dt))
                if error_feedback is not None:
                    sent[name] = d64
                    decoded[name] = res[2] if isinstance(res, tuple) else res
            if res is None:
                w.add(name, _xor(arr, b))
            elif not isinstance(res, tuple):
                w.add(name, res)
            else:
                pipe, payload, _ = res
                w.add_encoded(name, dt, arr.shape, pipe, payload)
        for a, t in aliases.items():
            w.add_alias(a, t)
    if error_feedback is not None:
        error_feedback.update_residual(sent, decoded)
    return w.infos


def encode_update(model: dict, base: dict, *, opts: UpdateOptions | None = None, error_feedback=None,
                  metadata: dict | None = None, base_hash: str | None = None, **kw) -> bytes:
    """The update from ``base`` to ``model`` as bytes (see :class:`UpdateOptions` for ``**kw``).

    Lossless by default: :func:`decode_update` then returns ``model`` bit for
    bit. With ``error_feedback`` (an :class:`ErrorFeedback`) the residual of
    earlier rounds is added before quantizing, and the new residual kept.
    """
    buf = io.BytesIO()
    write_update(buf, model, base, opts=opts, error_feedback=error_feedback, metadata=metadata, base_hash=base_hash,
                 **kw)
    return buf.getvalue()


# ------------------------------------------------------------------ decoding


def _json_list(md: dict, key: str, what: str) -> list:
    raw = md.get(key)
    if raw is None:
        return []
    try:
        v = json.loads(raw)
    except ValueError:
        v = None
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v) or len(set(v)) != len(v):
        raise CorruptError(f"{what}: metadata {key!r} must be a JSON list of distinct tensor names")
    return v


def check_base(md: dict, base_hash: str, what: str = "update") -> None:
    """Raise unless ``md`` is update metadata for the base with hash ``base_hash``."""
    if md.get(KEY_VERSION) is None or md.get(KEY_BASE) is None:
        raise CorruptError(f"{what}: not an nncodec update (metadata {KEY_BASE!r} is missing); "
                           f"decode it with nncodec.decode_bytes / nncodec decode instead")
    if md[KEY_VERSION] != UPDATE_VERSION:
        raise CorruptError(f"{what}: update format version {md[KEY_VERSION]!r:.20} is not {UPDATE_VERSION!r}; "
                           f"a newer nncodec wrote it")
    if md[KEY_BASE] != base_hash:
        raise BaseMismatchError(
            f"{what}: the update was made against a base with SHA-256 {md[KEY_BASE]:.64}, but the base given "
            f"has SHA-256 {base_hash}; decode it against the same base model it was encoded from"
        )


def apply_delta(name: str, delta: np.ndarray, base: np.ndarray, what: str = "update") -> np.ndarray:
    """The new tensor from its delta record (spec/UPDATES.md §3); CorruptError if the pair does not fit."""
    b, bdt = dtypes.as_stored(_array(base, name))
    d, ddt = dtypes.as_stored(delta)
    where = f"{what}: tensor {name!r}"
    if d.shape != b.shape:
        raise CorruptError(f"{where}: delta shape {list(d.shape)} differs from the base's {list(b.shape)}")
    if (dtypes.kind(bdt) in ("f", "c") or bdt in dtypes.PACKED) and ddt == dtypes.uint_view(bdt).name:
        return (b.view(dtypes.uint_view(bdt)) ^ d).view(b.dtype)
    if ddt == bdt and dtypes.kind(bdt) in "iu":
        return b ^ d
    if ddt == bdt and bdt == "bool":
        return b != d
    if ddt == bdt and bdt in SUB_DTYPES:
        with np.errstate(over="ignore", invalid="ignore"):
            out = to_dtype(b.astype(np.float64) + d.astype(np.float64), bdt).reshape(b.shape)
        if out.size and not np.isfinite(out[np.isfinite(b)]).all():
            raise CorruptError(f"{where}: base + delta overflows {bdt}")
        return out
    raise CorruptError(f"{where}: a delta of dtype {ddt} does not apply to a {bdt} base "
                       f"(expected {dtypes.uint_view(bdt).name if dtypes.kind(bdt) == 'f' else bdt})")


class UpdateReader:
    """Decode an update tensor by tensor as its bytes arrive; iterate for ``(name, new array)``.

    After iteration :attr:`aliases` maps alias names to their targets and
    :attr:`metadata` holds the file's metadata.
    """

    def __init__(self, data, base: dict, *, base_hash: str | None = None, limits: Limits = DEFAULT_LIMITS,
                 what: str = "update"):
        self._stream = iter_decode(data, limits=limits)
        self._base = base
        self._hash = base_hash or base_sha256(base)
        self._what = what
        self.metadata: dict = {}
        self.aliases: dict = {}

    def __iter__(self):
        what = self._what
        checked = False
        full: set = set()
        seen: dict = {}
        out: dict = {}  # the new tensors an alias may still point at
        done: set = set()
        # a StreamReader says which tensors it keeps for aliases to come (the rest, but the
        # last one, can go once handed out); other streams: keep everything
        last = None
        for name, arr in self._stream:
            kept = getattr(self._stream, "kept", None)
            if not checked:
                self.metadata = dict(self._stream.metadata)
                check_base(self.metadata, self._hash, what)
                full = set(_json_list(self.metadata, KEY_FULL, what))
                checked = True
            known = getattr(self._stream, "aliases", None)  # a StreamReader names its aliases
            target = known.get(name) if known is not None else seen.get(id(arr))
            if target is not None:
                self.aliases[name] = target
                done.add(name)
                yield name, out[target]
                continue
            seen[id(arr)] = name
            if name in full:
                new = arr
            elif name not in self._base:
                raise CorruptError(f"{what}: tensor {name!r} is a delta, but the base has no tensor of that name")
            else:
                new = apply_delta(name, arr, self._base[name], what)
                release_array(self._base[name])  # a memory-mapped base's pages go back
            arr = None
            if kept is not None and last is not None and last not in kept:
                out.pop(last, None)
            out[name] = new
            done.add(name)
            last = name
            yield name, new
            new = None
        if not checked:
            self.metadata = dict(self._stream.metadata)
            check_base(self.metadata, self._hash, what)
        removed = _json_list(self.metadata, KEY_REMOVED, what)
        missing = [n for n in self._base if n not in done and n not in removed]
        if missing:
            raise CorruptError(f"{what}: base tensor {missing[0]!r} is neither in the update nor listed as removed")
        bad = [n for n in removed if n in done or n not in self._base]
        if bad:
            raise CorruptError(f"{what}: {bad[0]!r} is listed as removed but is in the update or not in the base")


def read_update(data, base: dict, *, limits: Limits = DEFAULT_LIMITS, base_hash: str | None = None,
                what: str = "update") -> UpdateReader:
    """An :class:`UpdateReader` over ``data`` (bytes, a path or a readable binary stream)."""
    return UpdateReader(data, base, base_hash=base_hash, limits=limits, what=what)


def decode_update(data, base: dict, *, limits: Limits = DEFAULT_LIMITS, base_hash: str | None = None) -> dict:
    """Apply the update ``data`` to ``base`` and return the new model (a dict of arrays).

    ``data`` is bytes, a path, or a readable binary stream (decoded as it
    arrives). Raises :class:`~nncodec.errors.BaseMismatchError` when ``base``
    is not the model the update was encoded against.
    """
    return dict(read_update(data, base, limits=limits, base_hash=base_hash))


def apply_update(base: dict, data, **kw) -> dict:
    """``decode_update(data, base)``, argument order for ``model = apply_update(model, update)``."""
    return decode_update(data, base, **kw)
