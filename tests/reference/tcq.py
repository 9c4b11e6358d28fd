"""Plain-Python reference of the ``tcq`` kernels (spec/codecs/tcq.md), for tests.

Slow, written from the specification; it must give exactly the levels and
reconstructions of :mod:`nncodec.kernels.tcq`.
"""

from __future__ import annotations

import math

import numpy as np

from . import cabac as cref


def rmag(c, q):
    return 2 * c - q if c > 0 else 0


def bracket(a, q):
    if q == 0:
        lo = math.floor(a / 2.0)
    elif a < 1.0:
        lo = 0
    else:
        lo = math.floor((a + 1.0) / 2.0)
    return lo, lo + 1


def greedy(t, states):
    table, quant = cref.TABLES[states]
    s = 0
    out = []
    for x in (float(v) for v in t):
        a = abs(x)
        q = quant[s]
        lo, hi = bracket(a, q)
        c = lo if a - rmag(lo, q) <= rmag(hi, q) - a else hi
        k = -c if x < 0 else c
        out.append(k)
        s = table[s][k & 1]
    return np.array(out, np.int32)


def viterbi(t, width, states, gt, cost, lam, above):
    table, quant = cref.TABLES[states]
    ns = len(table)
    inf = math.inf
    cst = [0.0] + [inf] * (ns - 1)
    p1 = [0] * ns
    p2 = [0] * ns
    back = []
    for i, x in enumerate(float(v) for v in t):
        a = abs(x)
        ab = int(above[i - width]) if i >= width else 0
        ncst = [inf] * ns
        n1 = [0] * ns
        n2 = [0] * ns
        bp = [0] * ns
        bl = [0] * ns
        for s in range(ns):
            if cst[s] == inf:
                continue
            q = quant[s]
            lo, hi = bracket(a, q)
            cands = [lo, hi] + ([0] if a <= 2.0 and lo != 0 else [])
            for c in cands:
                d = a - rmag(c, q)
                k = -c if x < 0 else c
                j = cst[s] + d * d + lam * cref.level_bits(k, s, q, p1[s], p2[s], ab, gt, cost)
                s2 = table[s][k & 1]
                if j < ncst[s2]:
                    ncst[s2], bp[s2], bl[s2], n1[s2], n2[s2] = j, s, k, k, p1[s]
        cst, p1, p2 = ncst, n1, n2
        back.append((bp, bl))
    b = min(range(ns), key=lambda s: (cst[s], s))
    out = [0] * len(back)
    for i in range(len(back) - 1, -1, -1):
        bp, bl = back[i]
        out[i] = bl[b]
        b = bp[b]
    return np.array(out, np.int32)


def path_cost(t, levels, width, states, gt, cost):
    """(squared error in step², bits) of the levels, summed in element order."""
    table, quant = cref.TABLES[states]
    s = p1 = p2 = 0
    dist = bits = 0.0
    lv = [int(v) for v in levels]
    for i, k in enumerate(lv):
        q = quant[s]
        r = rmag(abs(k), q)
        d = float(t[i]) - (-r if k < 0 else r)
        ab = lv[i - width] if i >= width else 0
        dist += d * d
        bits += cref.level_bits(k, s, q, p1, p2, ab, gt, cost)
        s = table[s][k & 1]
        p2, p1 = p1, k
    return dist, bits


def dequantize(levels, states, step):
    """Reconstructions in binary64: fl((2k - sgn(k) q) * step)."""
    table, quant = cref.TABLES[states]
    s = 0
    out = []
    for k in (int(v) for v in levels):
        q = quant[s]
        r = 2 * k - q if k > 0 else 2 * k + q if k < 0 else 0
        out.append(float(r) * step)
        s = table[s][k & 1]
    return np.array(out, np.float64)


def encode(x, step, states, lam, shape, gt=16):
    """The levels the ``tcq`` encoder writes (the procedure of spec/codecs/tcq.md §Encoding)."""
    from nncodec.entropy.contexts import cost_from_counts, row_width

    t = np.asarray(x, np.float64).reshape(-1) / step
    width = row_width(shape)
    g = greedy(t, states)
    if t.size == 0:
        return g
    counts, _ = cref.count_bins(g, shape, states, gt)
    cost = cost_from_counts(counts)
    prev = viterbi(t, width, states, gt, cost, lam, g)
    dv, bv = path_cost(t, prev, width, states, gt, cost)
    dg, bg = path_cost(t, g, width, states, gt, cost)
    return prev if dv + lam * bv <= dg + lam * bg else g
