"""Numba kernels of the ``ans`` and ``zerorun`` codecs (static interleaved rANS).

Only compiled kernels live here; :mod:`nncodec.entropy.rans` checks every
argument before calling one. What the kernels may assume, and what they still
check themselves:

* tables (``freq``, ``cum``, the decode ``table`` of ``1 << prec`` slots,
  ``symval``) have the sizes the wrapper built them with, and every symbol index
  in them is in range;
* ``[pos, end)`` ranges lie inside ``buf`` (the wrapper checked every declared
  length against the payload size);
* the decoders check the read position against the end of its stream before
  every read, so damaged streams return an error code instead of reading past
  the end. Every loop is bounded by the symbol count, so nothing can hang.

Error codes returned by the decoders are listed in :data:`ERRORS`; the formats
are specified in spec/codecs/ans.md and spec/codecs/zerorun.md, and
tests/reference/ans.py holds plain-Python versions of every kernel.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import configure

configure()  # the cache folder, before the first @njit below

RANS_L = 1 << 16  #: lower bound of a normalized rANS state; states live in [RANS_L, 2**32)

OK = 0
ERR_WORDS_SHORT = 1  # the word stream ends before the symbols do
ERR_ESC_SHORT = 2  # the escape stream ends inside a value
ERR_ESC_VARINT = 3  # an escape value is longer than 10 bytes, over 2**64 - 1 or not minimal
ERR_ESC_RANGE = 4  # an escaped value does not fit the dtype
ERR_FINAL_STATE = 5  # a final decoder state differs from the encoder's initial state
ERR_WORDS_LEFT = 6  # words are left over after the last symbol
ERR_ESC_LEFT = 7  # escape bytes are left over after the last symbol
ERR_BITS_SHORT = 8  # the table bit string ends inside a code
ERR_BITS_LONG = 9  # a table code has more than 40 leading zeros
ERR_BITS_PAD = 10  # the table bit string has nonzero padding or a spare byte
ERR_RUNS = 11  # zero runs add up to more elements than the tensor has

ERRORS = {
    ERR_WORDS_SHORT: ("word stream", "ends before the last symbol (truncated or damaged)"),
    ERR_ESC_SHORT: ("escape stream", "ends inside a value (truncated or damaged)"),
    ERR_ESC_VARINT: ("escape stream", "holds a value that is not a minimal LEB128 number below 2**64"),
    ERR_ESC_RANGE: ("escape stream", "holds a value outside the range of the dtype"),
    ERR_FINAL_STATE: ("rANS states", "do not return to the initial state 65536 (damaged data)"),
    ERR_WORDS_LEFT: ("word stream", "has words left over after the last symbol (damaged data)"),
    ERR_ESC_LEFT: ("escape stream", "has bytes left over after the last symbol (damaged data)"),
    ERR_BITS_SHORT: ("frequency table", "ends inside a code (truncated or damaged)"),
    ERR_BITS_LONG: ("frequency table", "holds a code with more than 40 leading zero bits"),
    ERR_BITS_PAD: ("frequency table", "has nonzero padding bits or a spare byte"),
    ERR_RUNS: ("zero runs", "add up to more elements than the tensor has"),
}


# ------------------------------------------------------------------- encoding


@njit(cache=True, nogil=True)
def to_z(a, signed, out):
    """z-values of the integers ``a`` into uint64 ``out``: zigzag if ``signed``, else the value."""
    if signed:
        for i in range(a.shape[0]):
            v = np.int64(a[i])
            out[i] = np.uint64((v << 1) ^ (v >> 63))
    else:
        for i in range(a.shape[0]):
            out[i] = np.uint64(a[i])


@njit(cache=True, nogil=True)
def histogram_capped(z, cap):
    """Counts of ``min(z, cap)`` for unsigned 64-bit ``z``: an array of ``cap + 1`` counts."""
    counts = np.zeros(cap + 1, np.int64)
    c = np.uint64(cap)
    for i in range(z.shape[0]):
        v = z[i]
        if v >= c:
            counts[cap] += 1
        else:
            counts[np.int64(v)] += 1
    return counts


@njit(cache=True, nogil=True)
def escape_bits(z, cap):
    """Per literal-alphabet size bound: total LEB128 bits of the values ``z >= cap``."""
    total = 0
    c = np.uint64(cap)
    seven = np.uint64(7)
    for i in range(z.shape[0]):
        v = z[i]
        if v >= c:
            nb = 1
            v >>= seven
            while v:
                nb += 1
                v >>= seven
            total += 8 * nb
    return total


@njit(cache=True, nogil=True)
def symbols_and_escapes(z, a, sym, esc_out):
    """Map ``z`` to symbols (``min(z, a)``) and write ``z - a`` of escaped values as LEB128.

    ``esc_out`` must hold 10 bytes per escaped value. Returns the escape bytes written.
    """
    ua = np.uint64(a)
    seven = np.uint64(7)
    m = np.uint64(0x7F)
    p = 0
    for i in range(z.shape[0]):
        v = z[i]
        if v >= ua:
            sym[i] = a
            v -= ua
            while v > m:
                esc_out[p] = np.uint8((v & m) | np.uint64(0x80))
                p += 1
                v >>= seven
            esc_out[p] = np.uint8(v)
            p += 1
        else:
            sym[i] = np.int32(v)
    return p


@njit(cache=True, nogil=True)
def rans_encode(sym, freq, cum, prec, nstates, words, states):
    """Encode symbols ``sym`` (last to first) with ``nstates`` interleaved rANS states.

    Symbol ``i`` uses state ``i % nstates``. ``words`` must hold ``len(sym)`` entries;
    the emitted 16-bit words end up in ``words[pos:]`` in decoder order, and ``pos`` is
    returned. The final states (the decoder's initial states) are written to ``states``.
    """
    n = sym.shape[0]
    st = np.full(nstates, RANS_L, np.int64)
    pos = words.shape[0]
    shift = 32 - prec
    j = (n - 1) % nstates if n > 0 else 0
    for i in range(n - 1, -1, -1):
        s = sym[i]
        f = np.int64(freq[s])
        x = st[j]
        if x >= (f << shift):
            pos -= 1
            words[pos] = np.uint16(x & 0xFFFF)
            x >>= 16
        x = ((x // f) << prec) + (x % f) + np.int64(cum[s])
        st[j] = x
        j -= 1
        if j < 0:
            j = nstates - 1
    for k in range(nstates):
        states[k] = np.uint32(st[k])
    return pos


@njit(cache=True, nogil=True)
def varints_encode(vals, out):
    """LEB128 of unsigned 64-bit ``vals`` into ``out`` (10 bytes each at most); bytes written."""
    seven = np.uint64(7)
    m = np.uint64(0x7F)
    p = 0
    for i in range(vals.shape[0]):
        v = np.uint64(vals[i])
        while v > m:
            out[p] = np.uint8((v & m) | np.uint64(0x80))
            p += 1
            v >>= seven
        out[p] = np.uint8(v)
        p += 1
    return p


# ------------------------------------------------------------------- decoding


@njit(cache=True, nogil=True)
def expgolomb_decode(buf, pos, end, k, out):
    """Read ``len(out)`` order-``k`` Exp-Golomb codes (MSB first) from ``buf[pos:end]``.

    The string must end inside its last byte with zero padding. Returns an error code.
    """
    bitpos = np.int64(pos) * 8
    bitend = np.int64(end) * 8
    for i in range(out.shape[0]):
        zeros = 0
        while True:
            if bitpos >= bitend:
                return ERR_BITS_SHORT
            b = (np.int64(buf[bitpos >> 3]) >> (7 - (bitpos & 7))) & 1
            bitpos += 1
            if b:
                break
            zeros += 1
            if zeros > 40:
                return ERR_BITS_LONG
        w = np.int64(1)
        for t in range(zeros + k):
            if bitpos >= bitend:
                return ERR_BITS_SHORT
            b = (np.int64(buf[bitpos >> 3]) >> (7 - (bitpos & 7))) & 1
            bitpos += 1
            w = (w << 1) | b
        out[i] = w - (np.int64(1) << k)
    if bitend - bitpos >= 8:
        return ERR_BITS_PAD
    while bitpos < bitend:
        if (np.int64(buf[bitpos >> 3]) >> (7 - (bitpos & 7))) & 1:
            return ERR_BITS_PAD
        bitpos += 1
    return OK


@njit(cache=True, nogil=True)
def _escape(buf, epos, eend, a, zoff, zmax, signed):
    """Read one escape value; return (error code, new epos, stored value bits as uint64)."""
    v = np.uint64(0)
    shift = np.uint64(0)
    start = epos
    m = np.uint64(0x7F)
    while True:
        if epos >= eend:
            return ERR_ESC_SHORT, epos, v
        b = np.uint64(buf[epos])
        epos += 1
        if shift == np.uint64(63) and b > np.uint64(1):
            return ERR_ESC_VARINT, epos, v
        v |= (b & m) << shift
        if b < np.uint64(0x80):
            if b == np.uint64(0) and epos - start > 1:
                return ERR_ESC_VARINT, epos, v
            break
        shift += np.uint64(7)
        if shift > np.uint64(63):
            return ERR_ESC_VARINT, epos, v
    # z = v + a + zoff must not exceed zmax (a + zoff <= zmax + 1 was checked by the wrapper)
    base = np.uint64(a) + np.uint64(zoff)
    if base > zmax or v > zmax - base:
        return ERR_ESC_RANGE, epos, v
    z = v + base
    if signed:
        z = (z >> np.uint64(1)) ^ (np.uint64(0) - (z & np.uint64(1)))
    return OK, epos, z


# Deliberately specialised decoder for 4 interleaved states (see _fast8 for 8).
@njit(cache=True, nogil=True)
def _fast4(buf, wpos, wend, epos, eend, st, prec, table, symval, esc, zoff, zmax, signed, out):
    """Rounds of 4 symbols with the states in registers (see :func:`rans_decode`)."""
    n = out.shape[0]
    mask = (np.int64(1) << prec) - 1
    x0 = st[0]
    x1 = st[1]
    x2 = st[2]
    x3 = st[3]
    i = 0
    while i + 4 <= n and wend - wpos >= 8:
        e0 = np.int64(table[x0 & mask])
        e1 = np.int64(table[x1 & mask])
        e2 = np.int64(table[x2 & mask])
        e3 = np.int64(table[x3 & mask])
        x0 = (((e0 >> 16) & 0xFFFF) + 1) * (x0 >> prec) + (e0 & 0xFFFF)
        x1 = (((e1 >> 16) & 0xFFFF) + 1) * (x1 >> prec) + (e1 & 0xFFFF)
        x2 = (((e2 >> 16) & 0xFFFF) + 1) * (x2 >> prec) + (e2 & 0xFFFF)
        x3 = (((e3 >> 16) & 0xFFFF) + 1) * (x3 >> prec) + (e3 & 0xFFFF)
        s0 = e0 >> 32
        s1 = e1 >> 32
        s2 = e2 >> 32
        s3 = e3 >> 32
        if s0 == esc or s1 == esc or s2 == esc or s3 == esc:
            for j in range(4):
                s = (s0, s1, s2, s3)[j]
                if s == esc:
                    err, epos, z = _escape(buf, epos, eend, esc, zoff, zmax, signed)
                    if err != OK:
                        return err, i, wpos, epos
                    out[i + j] = z
                else:
                    out[i + j] = symval[s]
        else:
            out[i] = symval[s0]
            out[i + 1] = symval[s1]
            out[i + 2] = symval[s2]
            out[i + 3] = symval[s3]
        c = np.int64(x0 < RANS_L)
        x0 = (x0 << (c << 4)) | ((np.int64(buf[wpos]) | (np.int64(buf[wpos + 1]) << 8)) & -c)
        wpos += c << 1
        c = np.int64(x1 < RANS_L)
        x1 = (x1 << (c << 4)) | ((np.int64(buf[wpos]) | (np.int64(buf[wpos + 1]) << 8)) & -c)
        wpos += c << 1
        c = np.int64(x2 < RANS_L)
        x2 = (x2 << (c << 4)) | ((np.int64(buf[wpos]) | (np.int64(buf[wpos + 1]) << 8)) & -c)
        wpos += c << 1
        c = np.int64(x3 < RANS_L)
        x3 = (x3 << (c << 4)) | ((np.int64(buf[wpos]) | (np.int64(buf[wpos + 1]) << 8)) & -c)
        wpos += c << 1
        i += 4
    st[0] = x0
    st[1] = x1
    st[2] = x2
    st[3] = x3
    return OK, i, wpos, epos


# Deliberate unrolled copy of _fast4 for 8 states: the state loop unrolled by hand keeps the
# states in registers (Numba does not unroll it); the two must stay in step (tests compare both).
@njit(cache=True, nogil=True)
def _fast8(buf, wpos, wend, epos, eend, st, prec, table, symval, esc, zoff, zmax, signed, out):
    """Rounds of 8 symbols with the states in registers (see :func:`rans_decode`)."""
    n = out.shape[0]
    mask = (np.int64(1) << prec) - 1
    x0 = st[0]
    x1 = st[1]
    x2 = st[2]
    x3 = st[3]
    x4 = st[4]
    x5 = st[5]
    x6 = st[6]
    x7 = st[7]
    i = 0
    while i + 8 <= n and wend - wpos >= 16:
        e0 = np.int64(table[x0 & mask])
        e1 = np.int64(table[x1 & mask])
        e2 = np.int64(table[x2 & mask])
        e3 = np.int64(table[x3 & mask])
        e4 = np.int64(table[x4 & mask])
        e5 = np.int64(table[x5 & mask])
        e6 = np.int64(table[x6 & mask])
        e7 = np.int64(table[x7 & mask])
        x0 = (((e0 >> 16) & 0xFFFF) + 1) * (x0 >> prec) + (e0 & 0xFFFF)
        x1 = (((e1 >> 16) & 0xFFFF) + 1) * (x1 >> prec) + (e1 & 0xFFFF)
        x2 = (((e2 >> 16) & 0xFFFF) + 1) * (x2 >> prec) + (e2 & 0xFFFF)
        x3 = (((e3 >> 16) & 0xFFFF) + 1) * (x3 >> prec) + (e3 & 0xFFFF)
        x4 = (((e4 >> 16) & 0xFFFF) + 1) * (x4 >> prec) + (e4 & 0xFFFF)
        x5 = (((e5 >> 16) & 0xFFFF) + 1) * (x5 >> prec) + (e5 & 0xFFFF)
        x6 = (((e6 >> 16) & 0xFFFF) + 1) * (x6 >> prec) + (e6 & 0xFFFF)
        x7 = (((e7 >> 16) & 0xFFFF) + 1) * (x7 >> prec) + (e7 & 0xFFFF)
        s0 = e0 >> 32
        s1 = e1 >> 32
        s2 = e2 >> 32
        s3 = e3 >> 32
        s4 = e4 >> 32
        s5 = e5 >> 32
        s6 = e6 >> 32
        s7 = e7 >> 32
        if s0 == esc or s1 == esc or s2 == esc or s3 == esc or s4 == esc or s5 == esc or s6 == esc or s7 == esc:
            for j in range(8):
                s = (s0, s1, s2, s3, s4, s5, s6, s7)[j]
                if s == esc:
                    err, epos, z = _escape(buf, epos, eend, esc, zoff, zmax, signed)
                    if err != OK:
                        return err, i, wpos, epos
                    out[i + j] = z
                else:
                    out[i + j] = symval[s]
        else:
            out[i] = symval[s0]
            out[i + 1] = symval[s1]
            out[i + 2] = symval[s2]
            out[i + 3] = symval[s3]
            out[i + 4] = symval[s4]
            out[i + 5] = symval[s5]
            out[i + 6] = symval[s6]
            out[i + 7] = symval[s7]
        c = np.int64(x0 < RANS_L)
        x0 = (x0 << (c << 4)) | ((np.int64(buf[wpos]) | (np.int64(buf[wpos + 1]) << 8)) & -c)
        wpos += c << 1
        c = np.int64(x1 < RANS_L)
        x1 = (x1 << (c << 4)) | ((np.int64(buf[wpos]) | (np.int64(buf[wpos + 1]) << 8)) & -c)
        wpos += c << 1
        c = np.int64(x2 < RANS_L)
        x2 = (x2 << (c << 4)) | ((np.int64(buf[wpos]) | (np.int64(buf[wpos + 1]) << 8)) & -c)
        wpos += c << 1
        c = np.int64(x3 < RANS_L)
        x3 = (x3 << (c << 4)) | ((np.int64(buf[wpos]) | (np.int64(buf[wpos + 1]) << 8)) & -c)
        wpos += c << 1
        c = np.int64(x4 < RANS_L)
        x4 = (x4 << (c << 4)) | ((np.int64(buf[wpos]) | (np.int64(buf[wpos + 1]) << 8)) & -c)
        wpos += c << 1
        c = np.int64(x5 < RANS_L)
        x5 = (x5 << (c << 4)) | ((np.int64(buf[wpos]) | (np.int64(buf[wpos + 1]) << 8)) & -c)
        wpos += c << 1
        c = np.int64(x6 < RANS_L)
        x6 = (x6 << (c << 4)) | ((np.int64(buf[wpos]) | (np.int64(buf[wpos + 1]) << 8)) & -c)
        wpos += c << 1
        c = np.int64(x7 < RANS_L)
        x7 = (x7 << (c << 4)) | ((np.int64(buf[wpos]) | (np.int64(buf[wpos + 1]) << 8)) & -c)
        wpos += c << 1
        i += 8
    st[0] = x0
    st[1] = x1
    st[2] = x2
    st[3] = x3
    st[4] = x4
    st[5] = x5
    st[6] = x6
    st[7] = x7
    return OK, i, wpos, epos


@njit(cache=True, nogil=True)
def rans_decode(buf, wpos, wend, epos, eend, states0, prec, table, symval, esc, zoff, zmax, signed, out):
    """Decode ``len(out)`` symbols; see spec/codecs/ans.md section "Decoding".

    ``buf[wpos:wend]`` is the word stream (an even number of bytes), ``buf[epos:eend]``
    the escape stream, ``states0`` the initial states (each in [2**16, 2**32)),
    ``table`` the ``1 << prec`` slot entries ``symbol << 32 | (freq - 1) << 16 | slot - cum``,
    ``symval`` the output value of each symbol (that of the escape symbol ``esc`` unused).
    Returns an error code.
    """
    n = out.shape[0]
    nst = states0.shape[0]
    mask = (np.int64(1) << prec) - 1
    st = np.empty(nst, np.int64)
    for k in range(nst):
        st[k] = np.int64(states0[k])
    i = 0
    # fast part: whole rounds of nst symbols while the stream holds nst more words,
    # so the renormalisation reads need no check and can be branch-free
    if nst == 4:
        err, i, wpos, epos = _fast4(buf, wpos, wend, epos, eend, st, prec, table, symval, esc, zoff, zmax, signed, out)
        if err != OK:
            return err
    elif nst == 8:
        err, i, wpos, epos = _fast8(buf, wpos, wend, epos, eend, st, prec, table, symval, esc, zoff, zmax, signed, out)
        if err != OK:
            return err
    while i + nst <= n and wend - wpos >= 2 * nst:
        for j in range(nst):
            x = st[j]
            e = np.int64(table[x & mask])
            s = e >> 32
            x = (((e >> 16) & 0xFFFF) + 1) * (x >> prec) + (e & 0xFFFF)
            if s == esc:
                err, epos, z = _escape(buf, epos, eend, esc, zoff, zmax, signed)
                if err != OK:
                    return err
                out[i + j] = z
            else:
                out[i + j] = symval[s]
            c = np.int64(x < RANS_L)
            w = np.int64(buf[wpos]) | (np.int64(buf[wpos + 1]) << 8)
            x = (x << (c << 4)) | (w & -c)
            wpos += c << 1
            st[j] = x
        i += nst
    # checked part: the rest, one symbol at a time
    j = 0
    while i < n:
        x = st[j]
        e = np.int64(table[x & mask])
        s = e >> 32
        x = (((e >> 16) & 0xFFFF) + 1) * (x >> prec) + (e & 0xFFFF)
        if s == esc:
            err, epos, z = _escape(buf, epos, eend, esc, zoff, zmax, signed)
            if err != OK:
                return err
            out[i] = z
        else:
            out[i] = symval[s]
        if x < RANS_L:
            if wpos + 2 > wend:
                return ERR_WORDS_SHORT
            x = (x << 16) | np.int64(buf[wpos]) | (np.int64(buf[wpos + 1]) << 8)
            wpos += 2
        st[j] = x
        i += 1
        j += 1
        if j == nst:
            j = 0
    for k in range(nst):
        if st[k] != RANS_L:
            return ERR_FINAL_STATE
    if wpos != wend:
        return ERR_WORDS_LEFT
    if epos != eend:
        return ERR_ESC_LEFT
    return OK


@njit(cache=True, nogil=True)
def zerorun_scatter(runs, values, out):
    """Place ``values[j]`` after ``runs[j]`` zeros (``out`` starts all zero). Returns an error code."""
    n = out.shape[0]
    pos = np.int64(0)
    for j in range(runs.shape[0]):
        r = np.int64(runs[j])
        if r > n - pos - 1:
            return ERR_RUNS
        pos += r
        out[pos] = values[j]
        pos += 1
    return OK
