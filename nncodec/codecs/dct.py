"""``dct``: an orthonormal 2-D DCT-II over tiles of the last two axes (spec/codecs/dct.md).

An array->array stage over float tensors of rank 2 or more, meant to sit in
front of a quantizer and an entropy coder. A quantization error of size e in
the coefficients is an error of the same size e in the weights (Parseval);
the transform is lossless up to floating-point rounding. Encoded arrays are in
the working dtype (float64 for float64 tensors, float32 otherwise); decoders
compute in float64 and round by the stages' rule (:mod:`nncodec.codecs.floatcodec`).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ..errors import CorruptError, UsageError
from .base import ArraySpec, ArrayToArrayCodec, Context, cfg_choice, cfg_int, cfg_only
from .floatcodec import check_float_spec, check_input, finish, float_input, work_name

__all__ = ["DCT", "dct_matrix", "scan_order", "block_frequencies", "forward", "inverse", "MAX_BLOCK", "SCANS"]

#: largest side of a DCT block
MAX_BLOCK = 1024
SCANS = ("natural", "zigzag")



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
        check_float_spec(spec, self.codec_id, "transforms")
        lead, _, _, bh, bw, tr, tc = self._geometry(tuple(spec.shape))
        return ArraySpec(work_name(spec.dtype), (lead * tr * tc, bh * bw))

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
        arr, name, x = float_input(arr, self.codec_id, ctx)
        try:
            lead, r, c, bh, bw, tr, tc = self._geometry(x.shape, UsageError)
        except UsageError as e:
            raise ctx.error(UsageError, self.codec_id, str(e)) from None
        return forward(x.reshape(lead, r, c), bh, bw, self.scan).astype(work_name(name))

    def decode(self, arr: np.ndarray, spec: ArraySpec, ctx: Context) -> np.ndarray:
        y = check_input(arr, self.resolve(spec), ctx, self.codec_id)
        if y.size and not np.isfinite(y).all():
            i = int(np.flatnonzero(~np.isfinite(y.reshape(-1)))[0])
            raise ctx.error(CorruptError, self.codec_id, f"coefficient {i} is {y.reshape(-1)[i]!r}, not finite")
        lead, r, c, bh, bw, tr, tc = self._geometry(tuple(spec.shape))
        x = inverse(y, lead, r, c, bh, bw, self.scan)
        return finish(x, spec, ctx, self.codec_id)


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
