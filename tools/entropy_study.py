"""Empirical cost of the exponent byte and the top mantissa byte of float weights under
candidate contexts, to decide which context model a lossless coder should use.

Usage: python tools/entropy_study.py CHECKPOINT [CHECKPOINT ...] [--bf16] [--min N]

Every floating tensor is viewed the way ``planes`` views it (``rotl1`` words; plane 0 is
the exponent byte, plane 1 the next byte: the top 8 mantissa bits of a float32, the 7
mantissa bits and the sign of a bfloat16) and cut into the row pieces a chunked record
codes independently (:func:`nncodec.chunks.rows_per_chunk`). Each piece is a matrix of
``rows x cols`` (``cols`` = the product of the trailing dimensions). For each context the
cost of a piece is the code length of an adaptive Krichevsky-Trofimov coder (Dirichlet
1/2 over the piece's used symbols) per context value: it depends only on the counts and
includes what learning each context's distribution costs, so contexts with many values
pay for their parameters. ``H0`` is the plain empirical entropy (a lower bound for a
static order-0 code, table not counted). Stored side information (a class byte per
column or per row) is added at 8 bits per entry.

Contexts (all causal within a row, so a piece decodes on its own):
  o0        no context
  prev      the exponent of the previous element in the row (row start: its own value)
  prev2     the two previous exponents
  rs4/rs16  the rounded mean of the up to 4 / 16 previous exponents in the row
  col       the column index (one distribution per column)
  cclass    a stored class per column: the column's rounded mean exponent
  rclass    a stored class per row: the row's rounded mean exponent
  prev+cc   prev and cclass;  prev+rs8  prev and rs8;  rc+cc  rclass and cclass
  up        the exponent of the element above (same column, previous row)
  prev+up   both neighbours
Mantissa byte contexts: e (its own exponent, what planes' context mode uses), e+prev,
e+cc, e+up; m4:e codes only the byte's top nibble given the exponent and counts the low
nibble at 4 bits (fewer parameters per context).

The totals are printed in bytes per model and dtype, with the best context per tensor
("oracle": choosing per piece among o0, prev, prev+up, rs, cclass) as what a coder that
tries a few models and keeps the smallest could reach.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from scipy.special import gammaln

LN2 = np.log(2.0)


def kt_bits(ctx: np.ndarray, sym: np.ndarray) -> float:
    """Adaptive KT code length in bits of ``sym`` coded with one model per ``ctx`` value."""
    ctx = ctx.astype(np.int64)
    used, s = np.unique(sym, return_inverse=True)
    k = len(used)
    if k <= 1:
        return 0.0
    cu, c = np.unique(ctx, return_inverse=True)
    counts = np.bincount(c * k + s, minlength=len(cu) * k).reshape(len(cu), k).astype(np.float64)
    a = 0.5
    tot = counts.sum(axis=1)
    nats = (gammaln(tot + k * a) - gammaln(k * a)).sum() - (gammaln(counts + a) - gammaln(a)).sum()
    return float(nats / LN2)


def h0_bits(sym: np.ndarray) -> float:
    c = np.bincount(sym.reshape(-1).astype(np.int64)).astype(np.float64)
    c = c[c > 0]
    n = c.sum()
    return float(-(c * np.log2(c / n)).sum())


def running_mean(e: np.ndarray, k: int) -> np.ndarray:
    """Rounded mean of the up to k previous values in each row; 255 at the row start."""
    rows, cols = e.shape
    cs = np.zeros((rows, cols + 1), np.int64)
    np.cumsum(e, axis=1, out=cs[:, 1:])
    j = np.arange(cols)
    lo = np.maximum(j - k, 0)
    cnt = j - lo
    s = cs[:, j] - cs[:, lo]
    out = np.full((rows, cols), 255, np.int64)
    m = cnt > 0
    out[:, m] = (2 * s[:, m] + cnt[m]) // (2 * cnt[m])
    return out


def shifted(e: np.ndarray, k: int) -> np.ndarray:
    """Value k places to the left in the row; at the first k places, 256 (own context)."""
    out = np.full(e.shape, 256, np.int64)
    out[:, k:] = e[:, :-k]
    return out


def study_piece(e: np.ndarray, m: np.ndarray) -> dict:
    rows, cols = e.shape
    e64 = e.astype(np.int64)
    n = e.size
    r = {"n": n, "H0": h0_bits(e)}
    r["o0"] = kt_bits(np.zeros(n, np.int64), e.ravel())
    prev = shifted(e64, 1)
    r["prev"] = kt_bits(prev.ravel(), e.ravel())
    r["prev2"] = kt_bits((prev * 257 + shifted(e64, 2)).ravel(), e.ravel())
    for k in (4, 16):
        r[f"rs{k}"] = kt_bits(running_mean(e64, k).ravel(), e.ravel())
    rs8 = running_mean(e64, 8)
    colidx = np.broadcast_to(np.arange(cols), e.shape)
    r["col"] = kt_bits(colidx.ravel(), e.ravel()) + 0.0
    cclass = np.rint(e64.mean(axis=0)).astype(np.int64)
    rclass = np.rint(e64.mean(axis=1)).astype(np.int64)
    cc = np.broadcast_to(cclass[None, :], e.shape)
    rc = np.broadcast_to(rclass[:, None], e.shape)
    r["cclass"] = kt_bits(cc.ravel(), e.ravel()) + 8 * cols
    r["rclass"] = kt_bits(rc.ravel(), e.ravel()) + 8 * rows
    r["prev+cc"] = kt_bits((prev * 256 + cc).ravel(), e.ravel()) + 8 * cols
    r["prev+rs8"] = kt_bits((prev * 256 + rs8).ravel(), e.ravel())
    r["rc+cc"] = kt_bits((rc * 256 + cc).ravel(), e.ravel()) + 8 * (rows + cols)
    up = np.full(e.shape, 256, np.int64)
    up[1:] = e64[:-1]
    r["up"] = kt_bits(up.ravel(), e.ravel())
    r["prev+up"] = kt_bits((prev * 257 + up).ravel(), e.ravel())
    r["oracle"] = min(r[k] for k in ("o0", "prev", "prev+up", "rs4", "rs16", "cclass", "prev+cc", "prev+rs8"))
    # mantissa byte
    m64 = m.astype(np.int64)
    r["m:o0"] = kt_bits(np.zeros(n, np.int64), m.ravel())
    r["m:e"] = kt_bits(e64.ravel(), m.ravel())
    r["m:e+prev"] = kt_bits((e64 * 257 + prev).ravel(), m.ravel())
    r["m:e+cc"] = kt_bits((e64 * 256 + cc).ravel(), m.ravel()) + 8 * cols
    r["m:e+up"] = kt_bits((e64 * 257 + up).ravel(), m.ravel())
    r["m4:e"] = kt_bits(e64.ravel(), (m >> 4).ravel()) + 4 * n
    return r


def to_bf16_bits(a: np.ndarray) -> np.ndarray:
    u = np.ascontiguousarray(a, dtype="<f4").view("<u4")
    return ((u + (np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1)))) >> 16).astype("<u2")


def planes01(a: np.ndarray, bf16: bool):
    if bf16:
        x = to_bf16_bits(a).astype(np.uint32)
        y = ((x << 1) | (x >> 15)) & 0xFFFF
        return (y >> 8).astype(np.uint8), (y & 255).astype(np.uint8), x.astype(np.uint16)
    x = np.ascontiguousarray(a, "<f4").view("<u4")
    y = (x << np.uint32(1)) | (x >> np.uint32(31))
    return (y >> np.uint32(24)).astype(np.uint8), ((y >> np.uint32(16)) & np.uint32(255)).astype(np.uint8), None


def study(path: str, bf16: bool, min_n: int) -> dict:
    from nncodec.chunks import piece_bounds, rows_per_chunk
    from nncodec.io.registry import read_checkpoint

    ck = read_checkpoint(path)
    tot: dict = {}
    words_h0 = 0.0
    for name, a in ck.tensors.items():
        a = np.asarray(a)
        if a.dtype != np.float32 or a.size < min_n:
            continue
        shape = a.shape if a.ndim >= 2 else (1, a.size)
        a2 = a.reshape(shape[0], -1)
        e, m, words = planes01(a2, bf16)
        if words is not None:
            words_h0 += h0_bits(words)
        rows = rows_per_chunk(shape) or shape[0]
        for r0, r1 in piece_bounds(shape[0], rows):
            res = study_piece(e[r0:r1], m[r0:r1])
            for k, v in res.items():
                tot[k] = tot.get(k, 0.0) + v
    tot["words_H0"] = words_h0
    return tot


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--bf16", action="store_true", help="round every float32 tensor to bfloat16 first")
    ap.add_argument("--min", type=int, default=4096, help="skip tensors with fewer elements")
    args = ap.parse_args(argv)
    for path in args.paths:
        t = study(path, args.bf16, args.min)
        n = t.pop("n")
        print(f"{path} ({'bf16' if args.bf16 else 'fp32'}): {n} elements in tensors >= {args.min}")
        base = t["o0"]
        for k, v in t.items():
            print(f"  {k:10s} {v / 8:14,.0f} B  {v / n:6.3f} bit/elt  {100 * (v - base) / base:+7.2f}% vs o0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
