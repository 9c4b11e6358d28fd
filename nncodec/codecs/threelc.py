"""``3lc``: ternary quantization, base-3 packing and zero-run coding (spec/codecs/3lc.md).

An array->bytes stage for float tensors (float64, float32, float16, bfloat16),
after 3LC (Lim, Andersen and Kaminsky, MLSys 2019):

1. ``M = fl32(max|T| * s)`` with the sparsity multiplier ``s >= 1``; each
   element becomes ``q = rne(T / M)``, which is -1, 0 or 1;
2. five consecutive ternary digits ``p = q + 1`` make one byte
   ``81*p0 + 27*p1 + 9*p2 + 3*p3 + p4`` (0..242; five zeros give 121); the
   last group is padded with ``q = 0``;
3. a run of ``r`` bytes equal to 121 becomes ``r // 14`` bytes 255, then one
   byte ``243 + (r % 14 - 2)`` for a remainder of 2..13, or a literal 121 for 1.

The payload is ``M`` as a little-endian float32, then the bytes of step 3.
A value decodes to ``q * M``. The sparsity multiplier only steers the encoder;
decoders need nothing but the payload. Error feedback (carrying ``T - T^`` into
the next round) is the caller's job: see :class:`nncodec.federated.ErrorFeedback`.

Everything here is vectorized NumPy; there is no compiled kernel.
"""

from __future__ import annotations

import math
import struct

import numpy as np

from .. import dtypes
from ..dtypes import FLOAT_DTYPES, round_float
from ..errors import CorruptError, UnsupportedError, UsageError
from .base import ArraySpec, ArrayToBytesCodec, Context, cfg_only, finite_number

__all__ = ["ThreeLC", "ternarize", "pack", "unpack", "ZERO_GROUP", "RUN_MAX", "MAX_SPARSITY"]

ZERO_GROUP = 121  #: the byte of five zero digits (p = 1, 1, 1, 1, 1)
LITERAL_MAX = 242  #: largest byte holding one group
RUN_MAX = 14  #: groups in one run byte 255
MAX_SPARSITY = 1e6
_WEIGHTS = np.array([81, 27, 9, 3, 1], dtype=np.int32)


# ------------------------------------------------------------------ model


def ternarize(x: np.ndarray, sparsity: float = 1.0) -> tuple[float, np.ndarray]:
    """``(M, q)``: the float32 scale and the int8 levels in {-1, 0, 1} of a float array.

    ``x`` is taken as float64 (exact for the four float dtypes); ``M`` is
    ``fl32(fl64(max|x| * sparsity))`` and ``q = rne(x / M)`` (clipped to [-1, 1]:
    ``M`` may round below ``max|x|``); with ``M = 0`` every level is 0.
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    mx = float(np.max(np.abs(x))) if x.size else 0.0
    with np.errstate(over="ignore"):
        m = float(np.float32(mx * sparsity))
    if not math.isfinite(m):
        raise UsageError(f"3lc: max|x| * sparsity = {mx * sparsity!r} does not fit float32")
    if m == 0.0:
        return 0.0, np.zeros(x.size, np.int8)
    q = np.clip(np.rint(x / m), -1, 1).astype(np.int8)
    return m, q


def pack(q: np.ndarray) -> bytes:
    """Base-3 packing (five digits per byte, consecutive quintuples) and zero-run coding."""
    q = np.asarray(q).reshape(-1)
    n = q.size
    groups = -(-n // 5)
    p = np.ones(groups * 5, np.int32)
    p[:n] = q.astype(np.int32) + 1
    b = (p.reshape(groups, 5) @ _WEIGHTS).astype(np.uint8)
    zero = b == ZERO_GROUP
    if not zero.any():
        return b.tobytes()
    # runs of ZERO_GROUP: [start, end)
    edges = np.diff(np.concatenate(([0], zero.view(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    r = ends - starts
    full, rem = r // RUN_MAX, r % RUN_MAX
    run_len = full + (rem > 0)  # output bytes per run
    # output length of each input byte: 1 outside runs, run_len at a run's start, 0 inside
    out_len = np.ones(groups, np.int64)
    out_len[zero] = 0
    out_len[starts] = run_len
    off = np.cumsum(out_len) - out_len
    out = np.empty(int(out_len.sum()), np.uint8)
    keep = ~zero
    out[off[keep]] = b[keep]
    if full.sum():
        base = np.repeat(off[starts], full)
        within = np.arange(base.size) - np.repeat(np.cumsum(full) - full, full)
        out[base + within] = 255
    has = rem > 0
    tail = np.where(rem == 1, ZERO_GROUP, 243 + rem - 2)
    out[off[starts][has] + full[has]] = tail[has]
    return out.tobytes()


def unpack(body, n: int, what: str = "3lc") -> np.ndarray:
    """Invert :func:`pack` for ``n`` elements: int8 levels; CorruptError on any bad byte count or padding."""
    b = np.frombuffer(body, np.uint8)
    groups = -(-n // 5)
    if b.size > groups:
        raise CorruptError(f"{what}: {b.size} bytes after M, but {n} elements are only {groups} groups")
    run = b > LITERAL_MAX
    cnt = np.where(run, b.astype(np.int64) - 241, 1)
    total = int(cnt.sum())
    if total != groups:
        raise CorruptError(
            f"{what}: the bytes expand to {total} groups of five digits, {n} elements need {groups}"
            + (" (truncated)" if total < groups else "")
        )
    g = np.repeat(np.where(run, ZERO_GROUP, b), cnt).astype(np.int32)
    d = np.empty((groups, 5), np.int8)
    for j in range(4, -1, -1):
        d[:, j] = g % 3
        g //= 3
    d = d.reshape(-1)
    if n < groups * 5 and (d[n:] != 1).any():
        raise CorruptError(f"{what}: padding digits of the last group must be 1 (a zero level)")
    return d[:n] - 1


# ------------------------------------------------------------------ codec


def _sparsity_arg(v) -> float:
    f = finite_number(v, 1.0, MAX_SPARSITY)
    if f is None:
        raise UsageError(f"3lc: sparsity must be a finite number in [1, {MAX_SPARSITY:g}], found {v!r:.100}")
    return f


class ThreeLC(ArrayToBytesCodec):
    """3LC ternary coding of a float tensor (spec/codecs/3lc.md).

    ``sparsity`` (s >= 1) scales the threshold: a larger s sends more zeros
    and a larger M. It is stored in the configuration so an encoding can be
    reproduced; decoding ignores it.
    """

    codec_id = "3lc"

    def __init__(self, sparsity: float = 1.0):
        self.sparsity = _sparsity_arg(sparsity)

    def get_config(self) -> dict:
        return {"sparsity": self.sparsity} if self.sparsity != 1.0 else {}

    @classmethod
    def from_config(cls, config: dict) -> "ThreeLC":
        cid = cls.codec_id
        cfg_only(config, cid, ("sparsity",))
        v = config.get("sparsity", 1.0)
        try:
            return cls(v)
        except UsageError:
            raise CorruptError(f"codec {cid!r}: configuration 'sparsity' = {v!r:.100}, "
                               f"must be a finite number in [1, {MAX_SPARSITY:g}]") from None

    def encode(self, arr: np.ndarray, ctx: Context) -> bytes:
        arr, name = dtypes.as_stored(np.asarray(arr))
        if name not in FLOAT_DTYPES:
            raise ctx.error(UnsupportedError, self.codec_id, f"codes {', '.join(FLOAT_DTYPES)} tensors, not {name}")
        x = arr.reshape(-1).astype(np.float64)
        if x.size and not np.isfinite(x).all():
            i = int(np.flatnonzero(~np.isfinite(x))[0])
            raise ctx.error(UsageError, self.codec_id, f"element {i} is {x[i]!r}; 3lc needs finite values")
        try:
            m, q = ternarize(x, self.sparsity)
        except UsageError as e:
            raise ctx.error(UsageError, self.codec_id, str(e)) from None
        if name in ("float16", "bfloat16") and m:
            with np.errstate(over="ignore"):
                if not np.isfinite(np.float32(m).astype(dtypes.to_numpy(name))):
                    raise ctx.error(UsageError, self.codec_id, f"M = {m!r} is not finite in {name}")
        return struct.pack("<f", m) + pack(q)

    def decode(self, data, spec: ArraySpec, ctx: Context) -> np.ndarray:
        what = f"tensor {ctx.name!r}, codec {self.codec_id!r}"
        if spec.dtype not in FLOAT_DTYPES:
            raise CorruptError(f"{what}: codes {', '.join(FLOAT_DTYPES)} tensors, not {spec.dtype}")
        buf = memoryview(data).cast("B")
        if len(buf) < 4:
            raise CorruptError(f"{what}: payload of {len(buf)} bytes has no room for M (4 bytes; truncated)")
        (m,) = struct.unpack("<f", buf[:4])
        if not math.isfinite(m) or math.copysign(1.0, m) < 0:
            raise CorruptError(f"{what}: M = {m!r} must be finite and non-negative (sign bit clear)")
        q = unpack(buf[4:], spec.size, what)
        res = round_float(q.astype(np.float64) * m, spec.dtype)
        if spec.dtype != "float64" and spec.size and m:
            with np.errstate(over="ignore"):
                if not np.isfinite(res).all():
                    raise CorruptError(f"{what}: M = {m!r} is not finite in {spec.dtype}")
        return res.reshape(spec.shape)
