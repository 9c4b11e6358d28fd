"""What a fast (table-lookup) code keeps of the exponent / top-mantissa dependence of float weights.

Usage: python tools/joint_huffman_study.py CHECKPOINT [CHECKPOINT ...] [--bf16] [--min N]

Every floating tensor of at least ``--min`` elements (default 4096) is viewed as
``planes`` views it (``rotl1`` words: plane 0 the exponent byte ``e``, plane 1 the next
byte ``m``). Sizes in bytes, summed over the tensors:

  planes     what nncodec's ``planes`` codec writes today (the whole tensor; the float32
             planes 2 and 3 are counted as planes codes them in every row below)
  ctx        planes with plane 1 forced to its context block (a Huffman table per
             exponent value, 12-bit codes; candidate "per-exponent table"), no penalty
  j{k}/L{l}  one canonical Huffman code over the joint symbol ``(e, top k bits of m)``
             with codes of at most ``l`` bits (a one-lookup decode table of 2**l
             entries), the low 8-k bits of m raw; code lengths
             by package-merge, table counted at 5 bits per symbol of the used range
  ideal      the empirical entropy of (e, m) (what a static
             arithmetic coder of both bytes approaches, tables not counted)

"keeps" is (planes - candidate) / (planes - ideal): the part of the ideal gain a
candidate realizes.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def limited_lengths(counts: np.ndarray, max_len: int) -> np.ndarray:
    """Optimal code lengths of at most max_len bits (package-merge) for any alphabet size."""
    counts = np.asarray(counts, np.int64)
    lens = np.zeros(len(counts), np.int64)
    used = np.nonzero(counts)[0]
    if len(used) == 0:
        return lens
    if len(used) == 1:
        lens[used] = 1
        return lens
    if len(used) > (1 << max_len):
        raise ValueError("alphabet too large for the length limit")
    order = used[np.lexsort((used, counts[used]))]
    leafw = counts[order]
    nleaf = len(order)
    # lists from the deepest level up: (weights, is-leaf)
    lists = []
    w, leaf = leafw.copy(), np.ones(nleaf, bool)
    lists.append((w, leaf))
    for _ in range(max_len - 1):
        pw = w[0:len(w) - 1:2] + w[1:len(w):2]
        allw = np.concatenate((leafw, pw))
        isleaf = np.concatenate((np.ones(nleaf, bool), np.zeros(len(pw), bool)))
        o = np.argsort(allw, kind="stable")  # leaves first on ties (they come first)
        w, leaf = allw[o], isleaf[o]
        lists.append((w, leaf))
    take = 2 * nleaf - 2
    depth = np.zeros(nleaf, np.int64)
    for w, leaf in reversed(lists):  # the last list built is the top level
        pref = leaf[:take]
        q = int(pref.sum())
        depth[:q] += 1
        take = 2 * (take - q)
        if take == 0:
            break
    lens[order] = depth
    return lens


def planes_view(a: np.ndarray, bf16: bool):
    if bf16:
        u = np.ascontiguousarray(a, dtype="<f4").view("<u4")
        x = ((u + (np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1)))) >> 16).astype(np.uint32)
        y = ((x << 1) | (x >> 15)) & 0xFFFF
        return (y >> 8).astype(np.int64), (y & 255).astype(np.int64), 0, x.astype("<u2")
    x = np.ascontiguousarray(a, dtype="<f4").view("<u4")
    y = (x << np.uint32(1)) | (x >> np.uint32(31))
    return (y >> 24).astype(np.int64), ((y >> 16) & 255).astype(np.int64), 2, x


def study_tensor(a: np.ndarray, bf16: bool, ks, ls) -> dict:
    from nncodec.codecs.base import Context
    from nncodec.codecs.planes import Planes
    from nncodec.entropy import blockhuffman as hf

    e, m, rest, words = planes_view(a, bf16)
    n = e.size
    r = {}
    if bf16:
        import ml_dtypes
        arr = words.view(ml_dtypes.bfloat16)
    else:
        arr = words.view("<f4")
    r["planes"] = len(Planes().encode(arr, Context()))
    e8, m8 = e.astype(np.uint8), m.astype(np.uint8)
    p0 = hf.plan_block(e8).size + 2
    if rest:  # the lower planes as planes codes them
        y = (words.astype(np.uint64) << 1 | words.astype(np.uint64) >> 31) & 0xFFFFFFFF
        pl = np.stack([(y >> s) & 255 for s in (24, 16, 8, 0)]).astype(np.uint8)
        buf = np.empty(8 * n + 256, np.uint8)
        ratios, pos, sizes = [], 0, []
        for p in range(4):
            q = Planes()._encode_plane(pl, p, buf, pos, len(buf), ratios)
            sizes.append(q - pos)
            pos = q
        rest = sum(sizes[2:])
    else:
        rest = 0
    r["ctx"] = 1 + p0 + hf.plan_context(m8, e8).size + 2 + rest
    for k in ks:
        sym = (e << k) | (m >> (8 - k))
        cnt = np.bincount(sym, minlength=256 << k)
        usedr = np.nonzero(cnt)[0]
        tab = (5 * (usedr[-1] - usedr[0] + 1) + 7) // 8 + 4
        for lmax in ls:
            if np.count_nonzero(cnt) > (1 << lmax):
                continue
            ln = limited_lengths(cnt, lmax)
            bits = int((cnt * ln).sum()) + (8 - k) * n
            r[f"j{k}/L{lmax}"] = 1 + tab + (bits + 7) // 8 + 16 + rest
    c = np.bincount(e * 256 + m).astype(np.float64)
    c = c[c > 0]
    r["ideal"] = 1 + int(-(c * np.log2(c / n)).sum() / 8) + rest
    return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--bf16", action="store_true", help="round float32 tensors to bfloat16 first")
    ap.add_argument("--min", type=int, default=4096)
    ap.add_argument("--k", default="1,2,3,4")
    ap.add_argument("--L", default="12,14,16,20")
    args = ap.parse_args(argv)
    from nncodec.io.registry import read_checkpoint

    ks = [int(v) for v in args.k.split(",")]
    ls = [int(v) for v in args.L.split(",")]
    for path in args.paths:
        ck = read_checkpoint(path)
        tot: dict = {}
        nel = 0
        for name, t in ck.tensors.items():
            t = np.asarray(t)
            if t.dtype != np.float32 or t.size < args.min:
                continue
            r = study_tensor(t.reshape(-1), args.bf16, ks, ls)
            nel += t.size
            for key, v in r.items():
                tot[key] = tot.get(key, 0) + v
        base, ideal = tot["planes"], tot["ideal"]
        print(f"{path} {'bf16' if args.bf16 else 'fp32'}: {nel} elements")
        for key, v in tot.items():
            keep = (base - v) / (base - ideal) if base != ideal else 0.0
            print(f"  {key:10s} {v:12,d}  {100 * (base - v) / base:+6.3f}%  keeps {100 * keep:6.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
