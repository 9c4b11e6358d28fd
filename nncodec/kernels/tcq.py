"""Numba kernels of the ``tcq`` codec: trellis-coded (dependent) quantization.

The format is specified in spec/codecs/tcq.md; tests/reference/tcq.py
holds plain-Python versions that produce identical output. The wrapper in
:mod:`nncodec.codecs.tcq` checks the inputs (finite values, levels that fit int32)
before a kernel runs.

Units: ``t`` is the weight divided by the step (binary64), distortion is measured in
step² and the rate in bits, so ``lam`` is in step² per bit.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import configure

configure()  # the cache folder, before the first @njit below

from .cabac import _eg_bits, _gt_base, _sig_ctx, _sign_ctx, level_bits


@njit(cache=True, nogil=True, inline="always")
def _rmag(c, q):
    """Reconstruction magnitude (in steps) of level magnitude ``c`` in quantizer ``q``."""
    return 2 * c - q if c > 0 else 0


@njit(cache=True, nogil=True, inline="always")
def _bracket(a, q):
    """Level magnitudes of the two reconstruction points of quantizer ``q`` around ``a >= 0``."""
    if q == 0:
        lo = np.int64(np.floor(a / 2.0))
    elif a < 1.0:
        lo = np.int64(0)
    else:
        lo = np.int64(np.floor((a + 1.0) / 2.0))
    return lo, lo + 1


@njit(cache=True, nogil=True)
def scale(flat, step, out):
    """``out[i] = float64(flat[i]) / step``; returns ``(first non-finite input or -1, first index of
    the largest |out[i]|)`` (-1 when empty). Stops at the first non-finite input."""
    big = -1.0
    at = -1
    for i in range(flat.shape[0]):
        x = np.float64(flat[i])
        if not np.isfinite(x):
            return i, at
        v = x / step
        out[i] = v
        if abs(v) > big:
            big = abs(v)
            at = i
    return -1, at


@njit(cache=True, nogil=True)
def greedy(t, table, quant, out):
    """Plain rounding through the trellis: the nearest point of each state's quantizer."""
    s = 0
    for i in range(t.shape[0]):
        x = t[i]
        a = abs(x)
        q = quant[s]
        lo, hi = _bracket(a, q)
        dlo = a - _rmag(lo, q)
        dhi = _rmag(hi, q) - a
        c = lo if dlo <= dhi else hi
        k = -c if x < 0 else c
        out[i] = k
        s = table[s, k & 1]


#: contexts of the level-cost table per state: 5 classes of the previous level (0, +1, -1, >= +2,
#: <= -2) times 7 of the neighbourhood sum min(|p1| + |p2| + |above|, 6), which together fix every
#: context :func:`level_bits` reads
_P1_CLASSES = 5
_M_CLASSES = 7


@njit(cache=True, nogil=True, inline="always")
def _p1_class(p1):
    if p1 == 0:
        return 0
    if p1 > 0:
        return 1 if p1 == 1 else 3
    return 2 if p1 == -1 else 4


@njit(cache=True, nogil=True)
def level_table(ns, quant, gt, cost):
    """``(tab, hi)``: the bits of every level magnitude up to ``gt`` in every context, so that a
    trellis step costs a few loads instead of up to ``gt`` additions.

    ``tab[x, neg, c]`` is :func:`level_bits` of level ``-c if neg else c`` (``c <= gt``) in the
    context ``x = (s * 5 + p1 class) * 7 + min(|p1| + |p2| + |above|, 6)``; ``hi[x, neg]`` is the
    partial sum :func:`level_bits` has reached before the Exp-Golomb part of a level above ``gt``
    (:func:`_eg_bits` finishes it in the same order, so both give the same binary64 results).
    """
    nx = ns * _P1_CLASSES * _M_CLASSES
    tab = np.empty((nx, 2, gt + 1))
    hi = np.empty((nx, 2))
    for s in range(ns):
        q = quant[s]
        for pc in range(_P1_CLASSES):
            p1 = (0, 1, -1, 2, -2)[pc]
            for mm in range(_M_CLASSES):
                p2 = max(mm - abs(p1), 0)
                x = (s * _P1_CLASSES + pc) * _M_CLASSES + mm
                for neg in range(2):
                    for c in range(gt + 1):
                        tab[x, neg, c] = level_bits(-c if neg else c, s, q, p1, p2, 0, gt, cost)
                    bits = cost[_sig_ctx(s, p1, p2, 0), 1]
                    bits += cost[_sign_ctx(p1), neg]
                    g = _gt_base(q, p1, p2, 0, gt)
                    for j in range(1, gt + 1):
                        bits += cost[g + j - 1, 1]
                    hi[x, neg] = bits
    return tab, hi


@njit(cache=True, nogil=True, inline="always")
def _ctx(s, p1, p2, ab):
    return (s * _P1_CLASSES + _p1_class(p1)) * _M_CLASSES + min(abs(p1) + abs(p2) + abs(ab), _M_CLASSES - 1)


@njit(cache=True, nogil=True, inline="always")
def _cand(a, q, ci):
    """Candidate ``ci`` (0: lower point, 1: upper point, 2: zero) of quantizer ``q`` around ``a``."""
    lo, hi = _bracket(a, q)
    if ci == 0:
        return lo
    if ci == 1:
        return hi
    return np.int64(0)


@njit(cache=True, nogil=True)
def viterbi(t, width, table, quant, gt, cost, lam, above, out):
    """Levels minimising sum((t - recon)**2) + lam * bits over the trellis.

    Candidates per element and state: the two points of the state's quantizer around
    ``|t|`` (signed like ``t``) and 0 when ``|t| <= 2``. The rate of a level is
    :func:`nncodec.kernels.cabac.level_bits` under ``cost`` with the previous two
    levels of the survivor path and the level one row above taken from ``above``
    (looked up in :func:`level_table`, which gives the same values).
    Ties go to the lower state, then the earlier candidate.

    ``table`` must send the two parities of every state to two different states and give
    every state two predecessors (the 4- and 8-state machines do); then each state keeps the
    better candidate of each parity, and each next state picks the better of its two
    predecessors, which is the order above. Each step keeps one byte per state (the previous
    state and the candidate taken); the traceback recomputes the level from ``t``.
    """
    n = t.shape[0]
    ns = table.shape[0]
    tab, hi = level_table(ns, quant, gt, cost)
    pred = np.zeros((ns, 2), np.int64)  # (state * 2 + parity) of each state's predecessors, ascending
    npred = np.zeros(ns, np.int64)
    for s in range(ns):
        if table[s, 0] == table[s, 1]:
            raise ValueError("viterbi: a state's two parities must lead to different states")
        for p in range(2):
            s2 = table[s, p]
            if npred[s2] == 2:
                raise ValueError("viterbi: every state needs exactly two predecessors")
            pred[s2, npred[s2]] = s * 2 + p
            npred[s2] += 1
    inf = np.inf
    cst = np.full(ns, inf)
    cst[0] = 0.0
    p1 = np.zeros(ns, np.int64)
    p2 = np.zeros(ns, np.int64)
    jb = np.empty(2 * ns)  # per (state, parity): cost, signed level, traceback byte
    kb = np.zeros(2 * ns, np.int64)
    cb = np.zeros(2 * ns, np.int64)
    np1 = np.zeros(ns, np.int64)
    np2 = np.zeros(ns, np.int64)
    ncst = np.empty(ns)
    bp = np.zeros((n, ns), np.int8)
    for i in range(n):
        x = t[i]
        a = abs(x)
        neg = 1 if x < 0 else 0
        ab = np.int64(above[i - width]) if i >= width else 0
        small = a <= 2.0
        for s in range(ns):
            base = cst[s]
            q = quant[s]
            lo, hh = _bracket(a, q)
            e = a - _rmag(lo, q)
            jl = base + e * e
            e = a - _rmag(hh, q)
            jh = base + e * e
            xs = _ctx(s, p1[s], p2[s], ab)
            if hh <= gt:  # the level costs, inline (lo < hh)
                jl += lam * tab[xs, neg, lo]
                jh += lam * tab[xs, neg, hh]
            else:
                jl += lam * (tab[xs, neg, lo] if lo <= gt else _eg_bits(hi[xs, neg], lo, gt, cost))
                jh += lam * _eg_bits(hi[xs, neg], hh, gt, cost)
            if lo & 1:
                jo, ko, co, je, ke, ce = jl, lo, 0, jh, hh, 1
            else:
                je, ke, ce, jo, ko, co = jl, lo, 0, jh, hh, 1
            if small and lo != 0:
                jz = base + a * a + lam * tab[xs, neg, 0]
                if jz < je:
                    je = jz
                    ke = 0
                    ce = 2
            jb[2 * s] = je
            kb[2 * s] = -ke if neg else ke
            cb[2 * s] = s * 3 + ce
            jb[2 * s + 1] = jo
            kb[2 * s + 1] = -ko if neg else ko
            cb[2 * s + 1] = s * 3 + co
        for s2 in range(ns):
            u = pred[s2, 0]
            w = pred[s2, 1]
            v = w if jb[w] < jb[u] else u
            ncst[s2] = jb[v]
            bp[i, s2] = cb[v]
            np1[s2] = kb[v]
            np2[s2] = p1[v >> 1]
        for s2 in range(ns):
            cst[s2] = ncst[s2]
            p1[s2] = np1[s2]
            p2[s2] = np2[s2]
    b = 0
    for s in range(1, ns):
        if cst[s] < cst[b]:
            b = s
    for i in range(n - 1, -1, -1):
        code = np.int64(bp[i, b])
        s = code // 3
        x = t[i]
        c = _cand(abs(x), quant[s], code - 3 * s)
        out[i] = -c if x < 0 else c
        b = s


@njit(cache=True, nogil=True)
def path_cost(t, lv, width, table, quant, gt, cost, lam):
    """(sum of squared errors in step², bits) of the levels ``lv`` for ``t``, summed in order."""
    tab, hi = level_table(table.shape[0], quant, gt, cost)
    s = 0
    p1 = 0
    p2 = 0
    dist = 0.0
    bits = 0.0
    for i in range(t.shape[0]):
        k = np.int64(lv[i])
        q = quant[s]
        r = _rmag(abs(k), q)
        d = t[i] - (-r if k < 0 else r)
        ab = np.int64(lv[i - width]) if i >= width else 0
        dist += d * d
        c = abs(k)
        x = _ctx(s, p1, p2, ab)
        neg = 1 if k < 0 else 0
        bits += tab[x, neg, c] if c <= gt else _eg_bits(hi[x, neg], c, gt, cost)
        s = table[s, k & 1]
        p2 = p1
        p1 = k
    return dist, bits


@njit(cache=True, nogil=True)
def dequantize(lv, table, quant, step, out):
    """out[i] = (2k - sgn(k) * q) * step in binary64, q the quantizer of the state at i."""
    s = 0
    for i in range(lv.shape[0]):
        k = np.int64(lv[i])
        q = quant[s]
        if k > 0:
            r = 2 * k - q
        elif k < 0:
            r = 2 * k + q
        else:
            r = np.int64(0)
        out[i] = np.float64(r) * step
        s = table[s, k & 1]
