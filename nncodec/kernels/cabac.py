"""Numba kernels of the ``cabac`` codec: context modelling and a binary range coder.

The format is specified in spec/codecs/cabac.md; tests/reference/cabac.py
holds a plain-Python version of every kernel that produces identical output.

What the kernels may assume (the wrapper in :mod:`nncodec.codecs.cabac` checks it):
``table`` is one of the state tables of :data:`STATE_TABLES` with its quantizer map,
``gt`` is in 1..32, the rates are in 1..10, ``[pos, end)`` lies inside ``buf``.
The decoder checks the read position before every byte it reads and every loop is
bounded by the element count (and by 32 bins per unary part), so damaged payloads
return an error code (:data:`ERRORS`) and never read out of bounds or hang.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import configure

configure()  # the cache folder, before the first @njit below

#: trellis state tables: next state = table[state][level & 1]; quantizer of a state = quant[state]
STATE_TABLES = {
    1: (np.array([[0, 0]], np.int64), np.array([0], np.int64)),
    4: (np.array([[0, 2], [2, 0], [1, 3], [3, 1]], np.int64), np.array([0, 0, 1, 1], np.int64)),
    8: (np.array([[0, 2], [7, 5], [1, 3], [6, 4], [2, 0], [5, 7], [3, 1], [4, 6]], np.int64),
        np.array([0, 1, 0, 1, 0, 1, 0, 1], np.int64)),
}

PROB_BITS = 15
PROB_ONE = 1 << PROB_BITS  # 32768
PROB_MIN = 32
PROB_MAX = PROB_ONE - 32
COUNT_MAX = 1023
TOP = 1 << 24
MASK32 = 0xFFFFFFFF
LEVEL_MAX = 2**31 - 1
EG_CTX = 16  #: contexts of the Exp-Golomb prefix
EG_MAX_PREFIX = 30  #: the longest Exp-Golomb prefix a level below 2**31 can need

# context bases (spec/codecs/cabac.md section 5)
SIG_BASE = 0
SIGN_BASE = 120
GT_BASE = 123


def n_contexts(gt: int) -> int:
    return GT_BASE + 14 * gt + EG_CTX


OK = 0
ERR_SHORT = 1  # the coder needs a byte past the end of the payload
ERR_LEVEL = 2  # a level's Exp-Golomb prefix is too long or the level exceeds 2**31 - 1
ERR_TRAILING = 3  # bytes are left over after the last element
ERR_FINAL = 4  # the coder's final code value is not 0
ERR_FIRST = 5  # the first byte of the coded stream is not 0

ERRORS = {
    ERR_SHORT: "the arithmetic-coded stream ends before the last element (truncated or damaged)",
    ERR_LEVEL: "a level is larger than 2**31 - 1 (damaged data)",
    ERR_TRAILING: "bytes are left over after the last element (damaged data)",
    ERR_FINAL: "the arithmetic decoder does not end on the encoder's final value (damaged data)",
    ERR_FIRST: "the arithmetic-coded stream does not start with a zero byte (damaged data)",
}


# ------------------------------------------------------------------ contexts


@njit(cache=True, nogil=True, inline="always")
def _sig_ctx(s, p1, p2, ab):
    a1 = abs(p1)
    m = a1 + abs(p2) + abs(ab)
    return SIG_BASE + (s * 3 + min(a1, 2)) * 5 + min(m, 4)


@njit(cache=True, nogil=True, inline="always")
def _sign_ctx(p1):
    if p1 == 0:
        return SIGN_BASE
    return SIGN_BASE + (1 if p1 > 0 else 2)


@njit(cache=True, nogil=True, inline="always")
def _gt_base(q, p1, p2, ab, gt):
    m = abs(p1) + abs(p2) + abs(ab)
    return GT_BASE + (q * 7 + min(m, 6)) * gt


@njit(cache=True, nogil=True, inline="always")
def _eg_base(gt):
    return GT_BASE + 14 * gt


@njit(cache=True, nogil=True)
def init_models(nctx):
    """Per context: fast estimate, slow estimate (probability of a 1 bin, 15 bits), count."""
    m = np.empty((nctx, 3), np.int64)
    m[:, 0] = PROB_ONE >> 1
    m[:, 1] = PROB_ONE >> 1
    m[:, 2] = 0
    return m


@njit(cache=True, nogil=True, inline="always")
def _prob(m, c):
    return (m[c, 0] + m[c, 1]) >> 1


@njit(cache=True, nogil=True, inline="always")
def _update(m, c, b, ra, rb):
    n = m[c, 2]
    sh = 1
    while (2 << sh) <= n + 2:  # sh = floor(log2(n + 2))
        sh += 1
    sa = min(sh, ra)
    sb = min(sh, rb)
    pa = m[c, 0]
    pb = m[c, 1]
    if b:
        pa += (PROB_ONE - pa) >> sa
        pb += (PROB_ONE - pb) >> sb
    else:
        pa -= pa >> sa
        pb -= pb >> sb
    m[c, 0] = min(max(pa, PROB_MIN), PROB_MAX)
    m[c, 1] = min(max(pb, PROB_MIN), PROB_MAX)
    if n < COUNT_MAX:
        m[c, 2] = n + 1


# ------------------------------------------------------------------ encoder


@njit(cache=True, nogil=True)
def shift_table():
    """``floor(log2(n + 2))`` (at least 1) for every count ``n`` up to :data:`COUNT_MAX` (:func:`_update`'s shift)."""
    t = np.empty(COUNT_MAX + 1, np.int64)
    for n in range(COUNT_MAX + 1):
        sh = 1
        while (2 << sh) <= n + 2:
            sh += 1
        t[n] = sh
    return t


@njit(cache=True, nogil=True)
def encode(lv, width, table, quant, gt, ra, rb, out):
    """Code the int32 levels ``lv`` (flat, C order) into ``out``.

    Returns the number of bytes written, or -1 when ``out`` was too small. Each element's bins
    (context, or -1 for a bypass bin, and value) are listed first and then coded in one loop
    that holds the coder's state (low, range, cache, cache size, write position) in locals
    and moves low out once per renormalisation step (an LZMA-style carry-propagating
    range encoder, the mirror of :func:`_dec_bin` and :func:`_dec_bypass`).
    """
    n = lv.shape[0]
    nout = out.shape[0]
    m = init_models(GT_BASE + 14 * gt + EG_CTX)
    sht = shift_table()
    cb = np.empty(2 + gt + 2 * EG_MAX_PREFIX + 4, np.int64)  # one element's bins: context (-1: bypass)
    bb = np.empty(2 + gt + 2 * EG_MAX_PREFIX + 4, np.int64)  # and value
    low = np.int64(0)
    rng = np.int64(MASK32)
    cache = np.int64(0)
    csize = np.int64(1)
    pos = np.int64(0)
    egb = _eg_base(gt)
    s = 0
    p1 = 0
    p2 = 0
    for i in range(n + 1):
        nb = 0
        if i < n:
            k = np.int64(lv[i])
            ab = np.int64(lv[i - width]) if i >= width else 0
            a = abs(k)
            cb[0] = _sig_ctx(s, p1, p2, ab)
            bb[0] = 1 if a else 0
            nb = 1
            if a:
                cb[1] = _sign_ctx(p1)
                bb[1] = 1 if k < 0 else 0
                nb = 2
                g = _gt_base(quant[s], p1, p2, ab, gt)
                j = 1
                while j <= gt:
                    b = 1 if a > j else 0
                    cb[nb] = g + j - 1
                    bb[nb] = b
                    nb += 1
                    if not b:
                        break
                    j += 1
                if a > gt:
                    v = a - gt
                    u = 0
                    while (v >> (u + 1)) > 0:
                        u += 1
                    for j in range(u):
                        cb[nb] = egb + min(j, EG_CTX - 1)
                        bb[nb] = 1
                        nb += 1
                    cb[nb] = egb + min(u, EG_CTX - 1)
                    bb[nb] = 0
                    nb += 1
                    for j in range(u - 1, -1, -1):
                        cb[nb] = -1
                        bb[nb] = (v >> j) & 1
                        nb += 1
            s = table[s, k & 1]
            p2 = p1
            p1 = k
        else:  # the final flush: five shifts of low
            for j in range(5):
                cb[j] = -2
            nb = 5
        for j in range(nb):
            c = cb[j]
            b = bb[j]
            shifts = 0
            if c >= 0:
                pa = m[c, 0]
                pb = m[c, 1]
                bound = (rng >> PROB_BITS) * (PROB_ONE - ((pa + pb) >> 1))
                if b:
                    low += bound
                    rng -= bound
                else:
                    rng = bound
                cn = m[c, 2]
                sh = sht[cn]
                sa = min(sh, ra)
                sbb = min(sh, rb)
                if b:
                    pa += (PROB_ONE - pa) >> sa
                    pb += (PROB_ONE - pb) >> sbb
                else:
                    pa -= pa >> sa
                    pb -= pb >> sbb
                m[c, 0] = min(max(pa, PROB_MIN), PROB_MAX)
                m[c, 1] = min(max(pb, PROB_MIN), PROB_MAX)
                if cn < COUNT_MAX:
                    m[c, 2] = cn + 1
                while rng < TOP:
                    rng <<= 8
                    shifts += 1
            elif c == -1:
                rng >>= 1
                if b:
                    low += rng
                while rng < TOP:
                    rng <<= 8
                    shifts += 1
            else:
                shifts = 1
            for _ in range(shifts):
                if low < 0xFF000000 or low > MASK32:
                    carry = low >> 32
                    temp = cache
                    while True:
                        if pos < nout:
                            out[pos] = np.uint8((temp + carry) & 0xFF)
                        pos += 1
                        temp = 0xFF
                        csize -= 1
                        if csize == 0:
                            break
                    cache = (low >> 24) & 0xFF
                csize += 1
                low = (low & 0x00FFFFFF) << 8
    if pos > nout:
        return -1
    return pos


# ------------------------------------------------------------------ decoder


@njit(cache=True, nogil=True, inline="always")
def _dec_bin(d, buf, m, c, ra, rb):
    # d: [code, range, pos, end, err]
    p1 = _prob(m, c)
    rng = d[1]
    code = d[0]
    bound = (rng >> PROB_BITS) * (PROB_ONE - p1)
    if code < bound:
        rng = bound
        b = 0
    else:
        code -= bound
        rng -= bound
        b = 1
    while rng < TOP:
        rng <<= 8
        p = d[2]
        if p >= d[3]:
            d[4] = ERR_SHORT
            return 0
        code = ((code << 8) | np.int64(buf[p])) & MASK32
        d[2] = p + 1
    d[0] = code
    d[1] = rng
    _update(m, c, b, ra, rb)
    return b


# Deliberately specialised copy of _dec_bin's renormalisation for equiprobable (bypass) bins:
# no probability update, so the hot Exp-Golomb suffix loop stays short.
@njit(cache=True, nogil=True, inline="always")
def _dec_bypass(d, buf):
    rng = d[1] >> 1
    code = d[0]
    b = 0
    if code >= rng:
        code -= rng
        b = 1
    while rng < TOP:
        rng <<= 8
        p = d[2]
        if p >= d[3]:
            d[4] = ERR_SHORT
            return 0
        code = ((code << 8) | np.int64(buf[p])) & MASK32
        d[2] = p + 1
    d[0] = code
    d[1] = rng
    return b


@njit(cache=True, nogil=True)
def decode(buf, pos, end, width, table, quant, gt, ra, rb, out):
    """Decode ``out.shape[0]`` levels from ``buf[pos:end]`` into int32 ``out``; return an error code."""
    n = out.shape[0]
    if end - pos < 5:
        return ERR_SHORT
    if buf[pos] != 0:
        return ERR_FIRST
    d = np.zeros(5, np.int64)
    d[0] = (np.int64(buf[pos + 1]) << 24) | (np.int64(buf[pos + 2]) << 16) | \
        (np.int64(buf[pos + 3]) << 8) | np.int64(buf[pos + 4])
    d[1] = MASK32
    d[2] = pos + 5
    d[3] = end
    m = init_models(GT_BASE + 14 * gt + EG_CTX)
    egb = _eg_base(gt)
    s = 0
    p1 = 0
    p2 = 0
    for i in range(n):
        ab = np.int64(out[i - width]) if i >= width else 0
        a = _dec_bin(d, buf, m, _sig_ctx(s, p1, p2, ab), ra, rb)
        neg = 0
        if a:
            neg = _dec_bin(d, buf, m, _sign_ctx(p1), ra, rb)
            g = _gt_base(quant[s], p1, p2, ab, gt)
            j = 1
            while j <= gt:
                if not _dec_bin(d, buf, m, g + j - 1, ra, rb):
                    break
                j += 1
            a = j
            if j > gt:
                u = 0
                while _dec_bin(d, buf, m, egb + min(u, EG_CTX - 1), ra, rb):
                    u += 1
                    if u > EG_MAX_PREFIX or d[4]:
                        return d[4] if d[4] else ERR_LEVEL
                v = np.int64(1)
                for _ in range(u):
                    v = (v << 1) | _dec_bypass(d, buf)
                a = gt + v
                if a > LEVEL_MAX:
                    return ERR_LEVEL
        if d[4]:
            return d[4]
        k = -a if neg else a
        out[i] = k
        s = table[s, k & 1]
        p2 = p1
        p1 = k
    if d[2] != end:
        return ERR_TRAILING
    if d[0] != 0:
        return ERR_FINAL
    return OK


# ------------------------------------------------------------------ rate model


@njit(cache=True, nogil=True)
def count_bins(lv, width, table, quant, gt, counts):
    """Add each context's bin counts (``counts[c, b]``) of coding ``lv``; return the bypass bins."""
    n = lv.shape[0]
    egb = _eg_base(gt)
    s = 0
    p1 = 0
    p2 = 0
    byp = 0
    for i in range(n):
        k = np.int64(lv[i])
        ab = np.int64(lv[i - width]) if i >= width else 0
        a = abs(k)
        counts[_sig_ctx(s, p1, p2, ab), 1 if a else 0] += 1
        if a:
            counts[_sign_ctx(p1), 1 if k < 0 else 0] += 1
            g = _gt_base(quant[s], p1, p2, ab, gt)
            j = 1
            while j <= gt:
                b = 1 if a > j else 0
                counts[g + j - 1, b] += 1
                if not b:
                    break
                j += 1
            if a > gt:
                v = a - gt
                u = 0
                while (v >> (u + 1)) > 0:
                    u += 1
                for j in range(u):
                    counts[egb + min(j, EG_CTX - 1), 1] += 1
                counts[egb + min(u, EG_CTX - 1), 0] += 1
                byp += u
        s = table[s, k & 1]
        p2 = p1
        p1 = k
    return byp


@njit(cache=True, nogil=True)
def level_bits(k, s, q, p1, p2, ab, gt, cost):
    """Bits of level ``k`` in state ``s`` (quantizer ``q``) after ``p1``, ``p2`` with ``ab`` above.

    ``cost[c, b]`` is the cost in bits of bin ``b`` in context ``c``; the evaluation order
    (sig, sign, greater-than flags, prefix, then the bypass bits as one sum) is fixed so that
    the reference gives the same binary64 result.
    """
    a = abs(k)
    c = _sig_ctx(s, p1, p2, ab)
    if a == 0:
        return cost[c, 0]
    bits = cost[c, 1]
    bits += cost[_sign_ctx(p1), 1 if k < 0 else 0]
    g = _gt_base(q, p1, p2, ab, gt)
    j = 1
    while j <= gt:
        b = 1 if a > j else 0
        bits += cost[g + j - 1, b]
        if not b:
            break
        j += 1
    if a > gt:
        bits = _eg_bits(bits, a, gt, cost)
    return bits


@njit(cache=True, nogil=True)
def _eg_bits(bits, a, gt, cost):
    """``bits`` plus the Exp-Golomb part of magnitude ``a > gt``: prefix bins, then the
    bypass bits as one sum (:func:`level_bits`' order; the trellis finishes its partial sums
    with it too, so both give the same binary64 results)."""
    egb = _eg_base(gt)
    v = a - gt
    u = 0
    while (v >> (u + 1)) > 0:
        u += 1
    for j in range(u):
        bits += cost[egb + min(j, EG_CTX - 1), 1]
    bits += cost[egb + min(u, EG_CTX - 1), 0]
    bits += u
    return bits


@njit(cache=True, nogil=True)
def path_bits(lv, width, table, quant, gt, cost):
    """Sum of :func:`level_bits` along the levels ``lv`` (the static rate model of a tensor)."""
    n = lv.shape[0]
    s = 0
    p1 = 0
    p2 = 0
    total = 0.0
    for i in range(n):
        k = np.int64(lv[i])
        ab = np.int64(lv[i - width]) if i >= width else 0
        total += level_bits(k, s, quant[s], p1, p2, ab, gt, cost)
        s = table[s, k & 1]
        p2 = p1
        p1 = k
    return total
