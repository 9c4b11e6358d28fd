"""The transform stages ``dct`` and ``lowrank`` (spec/codecs/dct.md, lowrank.md).

Both are array->array stages over float tensors (float64, float32, float16,
bfloat16) of rank 2 or more, and both are meant to sit in front of a
quantizer and an entropy coder.

* ``dct`` is an orthonormal 2-D DCT-II over tiles of the last two axes: a
  quantization error of size e in the coefficients is an error of the same
  size e in the weights (Parseval). It is lossless up to floating-point
  rounding.
* ``lowrank`` stores a truncated SVD, W ~ A.B with A = U.diag(sqrt s) and
  B = diag(sqrt s).V^T; it is lossy, with squared Frobenius error equal to the
  sum of the discarded squared singular values.

Encoded arrays are float64 for float64 tensors and float32 otherwise (the
"working dtype"). Decoders compute in float64 and round to the tensor's dtype:
float64 as is, float32 to nearest-even, float16 and bfloat16 to float32 first,
then to the dtype (the quantizers' rule, spec/codecs/scalar.md).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .. import dtypes
from ..errors import CorruptError, UnsupportedError, UsageError
from .base import ArraySpec, ArrayToArrayCodec, Context, cfg_choice, cfg_int, cfg_only

__all__ = [
    "DCT",
    "LowRank",
    "dct_matrix",
    "scan_order",
    "block_frequencies",
    "choose_rank",
    "singular_values",
    "FLOAT_DTYPES",
    "MAX_BLOCK",
]

FLOAT_DTYPES = ("float64", "float32", "float16", "bfloat16")
#: largest side of a DCT block
MAX_BLOCK = 1024
#: largest rank a ``lowrank`` configuration may declare
MAX_RANK = (1 << 31) - 1
SCANS = ("natural", "zigzag")


# ------------------------------------------------------------------ shared helpers


def _work_name(name: str) -> str:
    return "float64" if name == "float64" else "float32"


def _check_float(name: str, codec_id: str, err=UnsupportedError) -> None:
    if name not in FLOAT_DTYPES:
        raise err(f"codec {codec_id!r} transforms {', '.join(FLOAT_DTYPES)} tensors, not {name}")


def _to_dtype(values: np.ndarray, name: str) -> np.ndarray:
    """Round float64 values to ``name``: float64 as is, else RNE to float32, then RNE to the dtype."""
    if name == "float64":
        return values.astype(np.float64, copy=False)
    with np.errstate(over="ignore", invalid="ignore"):
        v32 = values.astype(np.float32)
        if name == "float32":
            return v32
        return v32.astype(dtypes.to_numpy(name))


def _finish(work: np.ndarray, spec: ArraySpec, ctx: Context, codec_id: str) -> np.ndarray:
    out = _to_dtype(work, spec.dtype).reshape(spec.shape)
    with np.errstate(over="ignore", invalid="ignore"):
        bad = ~np.isfinite(out.astype(np.float64) if spec.dtype in ("float16", "bfloat16") else out)
    if bad.any():
        i = int(np.flatnonzero(bad.reshape(-1))[0])
        raise ctx.error(CorruptError, codec_id,
                        f"element {i} reconstructs to {work.reshape(-1)[i]!r}, not finite in {spec.dtype}")
    return out


def _float_input(arr, codec_id: str, ctx: Context):
    """The tensor (stored form), its dtype name, and its values as float64; refuse non-finite values."""
    arr, name = dtypes.as_stored(np.asarray(arr))
    _check_float(name, codec_id, UnsupportedError)
    x = arr.astype(np.float64)
    if x.size and not np.isfinite(x).all():
        i = int(np.flatnonzero(~np.isfinite(x.reshape(-1)))[0])
        raise ctx.error(UsageError, codec_id, f"element {i} is {x.reshape(-1)[i]!r}; transforms need finite values")
    return arr, name, x


def _check_input(arr, want: ArraySpec, ctx: Context, codec_id: str) -> np.ndarray:
    got = ArraySpec.of(np.asarray(arr))
    if got != want:
        raise ctx.error(CorruptError, codec_id, f"input is {got.dtype}{list(got.shape)}, expected "
                                                f"{want.dtype}{list(want.shape)}")
    return np.asarray(arr).astype(np.float64)


# ------------------------------------------------------------------ dct


@functools.lru_cache(maxsize=64)
def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n, dtype=np.float64)[:, None]
    j = np.arange(n, dtype=np.float64)[None, :]
    d = np.cos(np.pi * (2.0 * j + 1.0) * k / (2.0 * n)) * math.sqrt(2.0 / n)
    d[0, :] = math.sqrt(1.0 / n)
    d.setflags(write=False)
    return d


def dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix ``D`` of size n (float64, read-only).

    ``D[k, j] = a_k cos(pi (2j + 1) k / (2n))`` with ``a_0 = sqrt(1/n)`` and
    ``a_k = sqrt(2/n)`` for k > 0; ``D @ D.T`` is the identity.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_BLOCK:
        raise UsageError(f"dct: block side must be an integer in [1, {MAX_BLOCK}], found {n!r}")
    return _dct_matrix(int(n))


@functools.lru_cache(maxsize=64)
def _scan(bh: int, bw: int, scan: str) -> np.ndarray:
    if scan == "natural":
        p = np.arange(bh * bw, dtype=np.int64)
    else:
        out = []
        for s in range(bh + bw - 1):
            us = range(max(0, s - bw + 1), min(s, bh - 1) + 1)
            if s % 2 == 0:
                us = reversed(us)
            out.extend(u * bw + (s - u) for u in us)
        p = np.array(out, dtype=np.int64)
    p.setflags(write=False)
    return p


def scan_order(bh: int, bw: int, scan: str = "natural") -> np.ndarray:
    """Position k of a block's coefficient vector holds natural coefficient ``P[k] = u*bw + v``."""
    for v, what in ((bh, "block height"), (bw, "block width")):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 1 <= v <= MAX_BLOCK:
            raise UsageError(f"dct: {what} must be an integer in [1, {MAX_BLOCK}], found {v!r}")
    if scan not in SCANS:
        raise UsageError(f"dct: scan must be one of {list(SCANS)}, found {scan!r}")
    return _scan(int(bh), int(bw), scan)


def block_frequencies(bh: int, bw: int, scan: str = "natural") -> tuple[np.ndarray, np.ndarray]:
    """``(u, v)``: the vertical and horizontal frequency of each coefficient of a block, in scan order.

    ``u + v`` (or ``hypot(u / bh, v / bw)``) is what a quantizer would scale its
    step by to quantize high frequencies more coarsely.
    """
    p = scan_order(bh, bw, scan)
    return p // bw, p % bw


class DCT(ArrayToArrayCodec):
    """Orthonormal 2-D DCT-II over ``block`` tiles of the last two axes (spec/codecs/dct.md).

    A tensor of shape ``(..., R, C)`` is a stack of L = prod(...) matrices.
    Each matrix is zero-padded at the bottom and right to whole tiles of
    ``block = (bh, bw)`` and each tile is transformed; ``block=None`` makes the
    whole R x C matrix one tile (one tile per k x k kernel of a conv weight
    ``(out, in, kh, kw)``). The encoded array has shape ``(T, bh*bw)``: one row
    per tile (matrix, tile row, tile column in C order), the coefficients of a
    tile in ``scan`` order ("natural": row-major, "zigzag": JPEG's order).
    """

    codec_id = "dct"

    def __init__(self, block=(8, 8), scan: str = "natural"):
        if block is not None:
            if not isinstance(block, (tuple, list)) or len(block) != 2:
                raise UsageError(f"dct: block must be a pair (height, width) or None, found {block!r}")
            scan_order(block[0], block[1])  # validates both sides
            block = (int(block[0]), int(block[1]))
        if scan not in SCANS:
            raise UsageError(f"dct: scan must be one of {list(SCANS)}, found {scan!r}")
        self.block = block
        self.scan = scan

    def get_config(self) -> dict:
        return {"block": None if self.block is None else list(self.block), "scan": self.scan}

    @classmethod
    def from_config(cls, config: dict) -> "DCT":
        cid = cls.codec_id
        cfg_only(config, cid, ("block", "scan"))
        if "block" not in config:
            raise CorruptError(f"codec {cid!r}: configuration 'block' is missing ([height, width] or null)")
        b = config["block"]
        if b is not None:
            if not isinstance(b, list) or len(b) != 2:
                raise CorruptError(f"codec {cid!r}: configuration 'block' = {b!r:.100}, must be "
                                   f"[height, width] or null")
            b = tuple(cfg_int({"block": v}, "block", cid, 1, MAX_BLOCK) for v in b)
        scan = cfg_choice(config, "scan", cid, SCANS)
        return cls(block=b, scan=scan)

    # -- geometry

    def _geometry(self, shape: tuple, err=CorruptError):
        if len(shape) < 2:
            raise err(f"codec 'dct' transforms tensors of rank 2 or more, not shape {list(shape)}")
        lead = math.prod(shape[:-2])
        r, c = shape[-2], shape[-1]
        if self.block is None:
            bh, bw = max(r, 1), max(c, 1)
            if bh > MAX_BLOCK or bw > MAX_BLOCK:
                raise err(f"codec 'dct' with block null makes a {bh}x{bw} block from shape {list(shape)}; "
                          f"blocks are at most {MAX_BLOCK} on a side (give a block size)")
        else:
            bh, bw = self.block
        tr, tc = -(-r // bh), -(-c // bw)
        return lead, r, c, bh, bw, tr, tc

    def block_shape(self, spec: ArraySpec) -> tuple[int, int]:
        """The tile ``(bh, bw)`` used for a tensor of this spec."""
        g = self._geometry(tuple(spec.shape), UsageError)
        return g[3], g[4]

    def resolve(self, spec: ArraySpec) -> ArraySpec:
        _check_float(spec.dtype, self.codec_id, UnsupportedError)
        lead, _, _, bh, bw, tr, tc = self._geometry(tuple(spec.shape))
        return ArraySpec(_work_name(spec.dtype), (lead * tr * tc, bh * bw))

    def frequencies(self, spec: ArraySpec) -> tuple[np.ndarray, np.ndarray]:
        """``(u, v)`` of each column of the encoded array (see :func:`block_frequencies`)."""
        bh, bw = self.block_shape(spec)
        return block_frequencies(bh, bw, self.scan)

    def frequency_index(self, spec: ArraySpec) -> np.ndarray:
        """``u + v`` for every element of the encoded array (a read-only broadcast view, no copy)."""
        u, v = self.frequencies(spec)
        out = self.resolve(spec)
        return np.broadcast_to((u + v).astype(np.int32), out.shape)

    # -- coding

    def encode(self, arr: np.ndarray, ctx: Context) -> np.ndarray:
        arr, name, x = _float_input(arr, self.codec_id, ctx)
        try:
            lead, r, c, bh, bw, tr, tc = self._geometry(x.shape, UsageError)
        except UsageError as e:
            raise ctx.error(UsageError, self.codec_id, str(e)) from None
        return forward(x.reshape(lead, r, c), bh, bw, self.scan).astype(_work_name(name))

    def decode(self, arr: np.ndarray, spec: ArraySpec, ctx: Context) -> np.ndarray:
        y = _check_input(arr, self.resolve(spec), ctx, self.codec_id)
        if y.size and not np.isfinite(y).all():
            i = int(np.flatnonzero(~np.isfinite(y.reshape(-1)))[0])
            raise ctx.error(CorruptError, self.codec_id, f"coefficient {i} is {y.reshape(-1)[i]!r}, not finite")
        lead, r, c, bh, bw, tr, tc = self._geometry(tuple(spec.shape))
        x = inverse(y, lead, r, c, bh, bw, self.scan)
        return _finish(x, spec, ctx, self.codec_id)


def forward(x: np.ndarray, bh: int, bw: int, scan: str = "natural") -> np.ndarray:
    """Coefficients ``(T, bh*bw)`` (float64) of a float64 stack ``x`` of shape ``(L, R, C)``."""
    lead, r, c = x.shape
    tr, tc = -(-r // bh), -(-c // bw)
    pad = np.zeros((lead, tr * bh, tc * bw), dtype=np.float64)
    pad[:, :r, :c] = x
    tiles = pad.reshape(lead, tr, bh, tc, bw).transpose(0, 1, 3, 2, 4)  # (L, TR, TC, bh, bw)
    dh, dw = _dct_matrix(bh), _dct_matrix(bw)
    y = np.matmul(np.matmul(dh, tiles), dw.T)  # D_h . X . D_w^T per tile
    y = y.reshape(lead * tr * tc, bh * bw)
    return np.ascontiguousarray(y[:, _scan(bh, bw, scan)])


def inverse(y: np.ndarray, lead: int, r: int, c: int, bh: int, bw: int, scan: str = "natural") -> np.ndarray:
    """The float64 stack ``(L, R, C)`` whose coefficients are ``y`` (``(T, bh*bw)``)."""
    tr, tc = -(-r // bh), -(-c // bw)
    nat = np.empty_like(y, dtype=np.float64)
    nat[:, _scan(bh, bw, scan)] = y
    tiles = nat.reshape(lead, tr, tc, bh, bw)
    dh, dw = _dct_matrix(bh), _dct_matrix(bw)
    x = np.matmul(np.matmul(dh.T, tiles), dw)  # D_h^T . Y . D_w per tile
    x = x.transpose(0, 1, 3, 2, 4).reshape(lead, tr * bh, tc * bw)
    return np.ascontiguousarray(x[:, :r, :c])


# ------------------------------------------------------------------ lowrank


def _matrix_shape(shape: tuple, rows: int, err=CorruptError) -> tuple[int, int]:
    if len(shape) < 2:
        raise err(f"codec 'lowrank' factorizes tensors of rank 2 or more, not shape {list(shape)}")
    if not 1 <= rows <= len(shape) - 1:
        raise err(f"codec 'lowrank': rows = {rows} for shape {list(shape)}; must be in [1, {len(shape) - 1}]")
    return math.prod(shape[:rows]), math.prod(shape[rows:])


def singular_values(w, rows: int = 1) -> np.ndarray:
    """The singular values (float64, descending) of ``w`` viewed as a matrix (see :class:`LowRank`)."""
    w = np.asarray(w)
    m, n = _matrix_shape(w.shape, rows, UsageError)
    x = w.astype(np.float64).reshape(m, n)
    if x.size == 0:
        return np.zeros(0)
    if not np.isfinite(x).all():
        raise UsageError("lowrank: the tensor has values that are not finite")
    return np.linalg.svd(x, compute_uv=False)


def _rank_from_s(s: np.ndarray, m: int, n: int, energy=None, rd_slope=None) -> int:
    if (energy is None) == (rd_slope is None):
        raise UsageError("lowrank: give exactly one of energy and rd_slope")
    e2 = s.astype(np.float64) ** 2
    if energy is not None:
        if isinstance(energy, bool) or not isinstance(energy, (int, float, np.floating, np.integer)) \
                or not 0.0 <= float(energy) <= 1.0:
            raise UsageError(f"lowrank: energy must be a number in [0, 1], found {energy!r}")
        total = float(e2.sum())
        if total == 0.0 or float(energy) == 0.0:
            return 0
        kept = np.cumsum(e2)
        r = int(np.searchsorted(kept, float(energy) * total, side="left")) + 1
        return min(r, s.size)
    if isinstance(rd_slope, bool) or not isinstance(rd_slope, (int, float, np.floating, np.integer)) \
            or not (math.isfinite(float(rd_slope)) and float(rd_slope) >= 0.0):
        raise UsageError(f"lowrank: rd_slope must be a finite number >= 0, found {rd_slope!r}")
    # keep component i iff the distortion it removes beats the cost of its m + n parameters
    return int(np.count_nonzero(e2 > float(rd_slope) * (m + n)))


def choose_rank(w, energy=None, rd_slope=None, rows: int = 1) -> int:
    """The rank to keep for ``w`` (viewed as a matrix with ``rows`` leading axes as rows).

    * ``energy=e`` (in [0, 1]): the smallest r with sum(s[:r]**2) >= e * sum(s**2)
      (0 for an all-zero tensor).
    * ``rd_slope=lam`` (>= 0): the r minimizing ``D(r) + lam * r * (m + n)``, with
      D(r) = sum(s[r:]**2) the squared error and r*(m + n) the stored values:
      component i is kept iff s_i**2 > lam * (m + n).
    """
    w = np.asarray(w)
    m, n = _matrix_shape(w.shape, rows, UsageError)
    return _rank_from_s(singular_values(w, rows), m, n, energy, rd_slope)


class LowRank(ArrayToArrayCodec):
    """Truncated SVD W ~ A.B, stored as A (m x r) then B (r x n) (spec/codecs/lowrank.md).

    The tensor is viewed as an m x n matrix: m = product of its first ``rows``
    axes, n = product of the rest (``rows=1`` makes a conv weight
    ``(out, in, kh, kw)`` the matrix ``(out, in*kh*kw)``). Give exactly one of
    ``rank`` (fixed), ``energy`` or ``rd_slope`` (chosen per tensor by
    :func:`choose_rank`; the configuration then describes the last tensor
    encoded, so use one instance per thread).
    """

    codec_id = "lowrank"

    def __init__(self, rank: int | None = None, *, energy=None, rd_slope=None, rows: int = 1):
        given = [v is not None for v in (rank, energy, rd_slope)]
        if sum(given) != 1:
            raise UsageError("lowrank: give exactly one of rank, energy and rd_slope")
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, (int, np.integer))
                                 or not 0 <= rank <= MAX_RANK):
            raise UsageError(f"lowrank: rank must be an integer in [0, {MAX_RANK}], found {rank!r}")
        if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)) or not 1 <= rows <= 31:
            raise UsageError(f"lowrank: rows must be an integer in [1, 31], found {rows!r}")
        if energy is not None:
            _rank_from_s(np.zeros(0), 0, 0, energy=energy)  # validates
        if rd_slope is not None:
            _rank_from_s(np.zeros(0), 0, 0, rd_slope=rd_slope)
        self.rank = None if rank is None else int(rank)
        self.energy = energy
        self.rd_slope = rd_slope
        self.rows = int(rows)
        self._fits = rank is None

    def get_config(self) -> dict:
        if self.rank is None:
            raise UsageError("lowrank: the rank is known once a tensor is encoded (or pass rank=)")
        return {"rank": self.rank, "rows": self.rows}

    @classmethod
    def from_config(cls, config: dict) -> "LowRank":
        cid = cls.codec_id
        cfg_only(config, cid, ("rank", "rows"))
        return cls(rank=cfg_int(config, "rank", cid, 0, MAX_RANK), rows=cfg_int(config, "rows", cid, 1, 31))

    def _state(self):
        if self._fits:
            return ("fit", self.energy, self.rd_slope, self.rows)
        return ("rank", self.rank, self.rows)

    def __eq__(self, other):
        return type(self) is type(other) and self._state() == other._state()

    def __hash__(self):
        return hash(self._state())

    def __repr__(self):
        if self._fits:
            what = f"energy={self.energy!r}" if self.energy is not None else f"rd_slope={self.rd_slope!r}"
            return f"LowRank({what}, rows={self.rows})"
        return f"LowRank(rank={self.rank}, rows={self.rows})"

    def resolve(self, spec: ArraySpec) -> ArraySpec:
        _check_float(spec.dtype, self.codec_id, UnsupportedError)
        m, n = _matrix_shape(tuple(spec.shape), self.rows)
        if self.rank is None:
            raise UsageError("lowrank: the rank is known once a tensor is encoded (or pass rank=)")
        if self.rank > min(m, n):
            raise CorruptError(f"codec 'lowrank': rank {self.rank} exceeds min({m}, {n}) for shape "
                               f"{list(spec.shape)} with rows={self.rows}")
        return ArraySpec(_work_name(spec.dtype), (self.rank * (m + n),))

    def encode(self, arr: np.ndarray, ctx: Context) -> np.ndarray:
        arr, name, x = _float_input(arr, self.codec_id, ctx)
        try:
            m, n = _matrix_shape(x.shape, self.rows, UsageError)
        except UsageError as e:
            raise ctx.error(UsageError, self.codec_id, str(e)) from None
        w = x.reshape(m, n)
        if w.size:
            u, s, vt = np.linalg.svd(w, full_matrices=False)
        else:
            u, s, vt = np.zeros((m, 0)), np.zeros(0), np.zeros((0, n))
        if self._fits:
            self.rank = _rank_from_s(s, m, n, self.energy, self.rd_slope)
        r = self.rank
        if r > min(m, n):
            raise ctx.error(UsageError, self.codec_id, f"rank {r} exceeds min({m}, {n}); use a rank <= {min(m, n)}")
        rs = np.sqrt(s[:r])
        a = u[:, :r] * rs[None, :]
        b = rs[:, None] * vt[:r]
        return np.concatenate([a.reshape(-1), b.reshape(-1)]).astype(_work_name(name))

    def decode(self, arr: np.ndarray, spec: ArraySpec, ctx: Context) -> np.ndarray:
        y = _check_input(arr, self.resolve(spec), ctx, self.codec_id)
        if y.size and not np.isfinite(y).all():
            i = int(np.flatnonzero(~np.isfinite(y))[0])
            raise ctx.error(CorruptError, self.codec_id, f"factor element {i} is {y[i]!r}, not finite")
        m, n = _matrix_shape(tuple(spec.shape), self.rows)
        r = self.rank
        a = y[: m * r].reshape(m, r)
        b = y[m * r:].reshape(r, n)
        with np.errstate(over="ignore", invalid="ignore"):
            w = a @ b if r else np.zeros((m, n))
        return _finish(w, spec, ctx, self.codec_id)
