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

from .cabac import level_bits


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


@njit(cache=True, nogil=True)
def viterbi(t, width, table, quant, gt, cost, lam, above, out):
    """Levels minimising sum((t - recon)**2) + lam * bits over the trellis.

    Candidates per element and state: the two points of the state's quantizer around
    ``|t|`` (signed like ``t``) and 0 when ``|t| <= 2``. The rate of a level is
    :func:`nncodec.kernels.cabac.level_bits` under ``cost`` with the previous two
    levels of the survivor path and the level one row above taken from ``above``.
    Ties go to the lower state, then the earlier candidate.
    """
    n = t.shape[0]
    ns = table.shape[0]
    inf = np.inf
    cst = np.full(ns, inf)
    cst[0] = 0.0
    p1 = np.zeros(ns, np.int64)
    p2 = np.zeros(ns, np.int64)
    ncst = np.empty(ns)
    np1 = np.zeros(ns, np.int64)
    np2 = np.zeros(ns, np.int64)
    bp = np.zeros((n, ns), np.int8)
    bl = np.zeros((n, ns), np.int32)
    cand = np.zeros(3, np.int64)
    for i in range(n):
        x = t[i]
        a = abs(x)
        neg = x < 0
        ab = np.int64(above[i - width]) if i >= width else 0
        for s2 in range(ns):
            ncst[s2] = inf
        for s in range(ns):
            base = cst[s]
            if base == inf:
                continue
            q = quant[s]
            lo, hi = _bracket(a, q)
            cand[0] = lo
            cand[1] = hi
            nc = 2
            if a <= 2.0 and lo != 0:
                cand[2] = 0
                nc = 3
            for ci in range(nc):
                c = cand[ci]
                d = a - _rmag(c, q)
                k = -c if neg else c
                j = base + d * d + lam * level_bits(k, s, q, p1[s], p2[s], ab, gt, cost)
                s2 = table[s, k & 1]
                if j < ncst[s2]:
                    ncst[s2] = j
                    bp[i, s2] = s
                    bl[i, s2] = k
                    np1[s2] = k
                    np2[s2] = p1[s]
        for s2 in range(ns):
            cst[s2] = ncst[s2]
            p1[s2] = np1[s2]
            p2[s2] = np2[s2]
    b = 0
    for s in range(1, ns):
        if cst[s] < cst[b]:
            b = s
    for i in range(n - 1, -1, -1):
        out[i] = bl[i, b]
        b = bp[i, b]


@njit(cache=True, nogil=True)
def path_cost(t, lv, width, table, quant, gt, cost, lam):
    """(sum of squared errors in step², bits) of the levels ``lv`` for ``t``, summed in order."""
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
        bits += level_bits(k, s, q, p1, p2, ab, gt, cost)
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
