"""Numba kernels of the ``planes`` codec and its canonical Huffman coder.

Only compiled kernels live here; :mod:`nncodec.codecs.huffman` and
:mod:`nncodec.codecs.planes` check every argument before calling one. The
kernels trust their arguments completely:

* segment and stream bounds are non-decreasing and inside the arrays;
* a decode input buffer holds at least 8 readable bytes after the end of its
  last stream (the decoder reads 8 bytes at a time, and never starts a read
  beyond the end of the stream it decodes);
* decode tables have ``1 << MAX_LEN`` entries and context maps 256 entries,
  with every table index in range.

The formats are specified in spec/codecs/planes.md and spec/codecs/huffman.md;
:mod:`nncodec.codecs._reference` holds plain-Python versions of every kernel.
"""

from __future__ import annotations

import numpy as np
from numba import njit

MAX_LEN = 12  #: longest code length; a decode table has 1 << MAX_LEN entries
_PEEK = np.uint64(64 - MAX_LEN)

NONE, ROTL1, ZIGZAG = 0, 1, 2  # bit transforms


# ----------------------------------------------------------------- byte planes


@njit(cache=True, nogil=True)
def split_planes(x, transform, out):
    """Transform the words ``x`` (unsigned, ``w`` bytes) and split them into byte planes.

    ``out`` has shape ``(w, n)``; row 0 is the most significant byte.
    """
    n = x.shape[0]
    w = out.shape[0]
    one = np.uint64(1)
    top = np.uint64(8 * w - 1)
    mask = np.uint64(0xFFFFFFFFFFFFFFFF) >> np.uint64(64 - 8 * w)
    m8 = np.uint64(255)
    if transform == ROTL1:
        for i in range(n):
            v = np.uint64(x[i])
            v = ((v << one) | (v >> top)) & mask
            for p in range(w):
                out[p, i] = np.uint8((v >> np.uint64(8 * (w - 1 - p))) & m8)
    elif transform == ZIGZAG:
        for i in range(n):
            v = np.uint64(x[i])
            v = ((v << one) ^ (np.uint64(0) - (v >> top))) & mask
            for p in range(w):
                out[p, i] = np.uint8((v >> np.uint64(8 * (w - 1 - p))) & m8)
    else:
        for i in range(n):
            v = np.uint64(x[i])
            for p in range(w):
                out[p, i] = np.uint8((v >> np.uint64(8 * (w - 1 - p))) & m8)


@njit(cache=True, nogil=True)
def merge_planes(planes, transform, out):
    """Invert :func:`split_planes`: join the byte planes and undo the transform into ``out``."""
    n = out.shape[0]
    w = planes.shape[0]
    one = np.uint64(1)
    top = np.uint64(8 * w - 1)
    mask = np.uint64(0xFFFFFFFFFFFFFFFF) >> np.uint64(64 - 8 * w)
    for i in range(n):
        v = np.uint64(0)
        for p in range(w):
            v = (v << np.uint64(8)) | np.uint64(planes[p, i])
        if transform == ROTL1:
            v = (v >> one) | ((v & one) << top)
        elif transform == ZIGZAG:
            v = (v >> one) ^ ((np.uint64(0) - (v & one)) & mask)
        out[i] = v


# ------------------------------------------------------------------ histograms


@njit(cache=True, nogil=True)
def histogram4(data, bounds):
    """Byte counts of the 4 segments ``data[bounds[k]:bounds[k+1]]``: shape (4, 256)."""
    h = np.zeros((4, 256), np.int64)
    m = bounds[1] - bounds[0]
    for k in range(1, 4):
        m = min(m, bounds[k + 1] - bounds[k])
    s0, s1, s2, s3 = bounds[0], bounds[1], bounds[2], bounds[3]
    for i in range(m):
        h[0, data[s0 + i]] += 1
        h[1, data[s1 + i]] += 1
        h[2, data[s2 + i]] += 1
        h[3, data[s3 + i]] += 1
    for k in range(4):
        for i in range(bounds[k] + m, bounds[k + 1]):
            h[k, data[i]] += 1
    return h


@njit(cache=True, nogil=True)
def context_histogram4(data, ctx, bounds):
    """Counts per segment, context byte and symbol: shape (4, 256, 256), index [k, ctx, sym]."""
    h = np.zeros((4, 256, 256), np.int64)
    for k in range(4):
        for i in range(bounds[k], bounds[k + 1]):
            h[k, ctx[i], data[i]] += 1
    return h


# ---------------------------------------------------------------- code lengths


@njit(cache=True, nogil=True)
def package_merge(counts, max_len):
    """Optimal code lengths of at most ``max_len`` bits for ``counts`` (int64[256]).

    Symbols of count 0 get length 0. One used symbol gets length 1. Ties are broken
    by symbol value and leaves go before packages of equal weight, so the result is
    deterministic (spec/codecs/huffman.md, "Encoder").
    """
    lens = np.zeros(256, np.uint8)
    nsym = 0
    for s in range(256):
        if counts[s] > 0:
            nsym += 1
    if nsym == 0:
        return lens
    syms = np.empty(nsym, np.int64)
    j = 0
    for s in range(256):
        if counts[s] > 0:
            syms[j] = s
            j += 1
    if nsym == 1:
        lens[syms[0]] = 1
        return lens
    order = np.argsort(counts[syms], kind="mergesort")  # stable: ties by symbol
    leaf_w = np.empty(nsym, np.int64)
    leaf_s = np.empty(nsym, np.int64)
    for i in range(nsym):
        leaf_w[i] = counts[syms[order[i]]]
        leaf_s[i] = syms[order[i]]
    cap = 2 * nsym
    item = np.full((max_len, cap), -1, np.int64)  # leaf symbol, or -1 for a package
    weight = np.zeros((max_len, cap), np.int64)
    size = np.zeros(max_len, np.int64)
    for i in range(nsym):
        item[0, i] = leaf_s[i]
        weight[0, i] = leaf_w[i]
    size[0] = nsym
    for d in range(1, max_len):
        npk = size[d - 1] // 2
        a = 0  # next leaf
        b = 0  # next package
        k = 0
        while a < nsym or b < npk:
            if b >= npk:
                take_leaf = True
            elif a >= nsym:
                take_leaf = False
            else:
                take_leaf = leaf_w[a] <= weight[d - 1, 2 * b] + weight[d - 1, 2 * b + 1]
            if take_leaf:
                item[d, k] = leaf_s[a]
                weight[d, k] = leaf_w[a]
                a += 1
            else:
                item[d, k] = -1
                weight[d, k] = weight[d - 1, 2 * b] + weight[d - 1, 2 * b + 1]
                b += 1
            k += 1
        size[d] = k
    m = 2 * nsym - 2
    for d in range(max_len - 1, -1, -1):
        pk = 0
        for i in range(m):
            s = item[d, i]
            if s >= 0:
                lens[s] += 1
            else:
                pk += 1
        m = 2 * pk
    return lens


# --------------------------------------------------------------------- encoding


@njit(inline="always")
def _put(out, acc, nb, pos, code, ln):
    # MSB-first bit writer: ``acc`` holds ``nb`` < 32 pending bits in its low end.
    acc = (acc << ln) | code
    nb += ln
    if nb >= np.uint64(32):
        nb -= np.uint64(32)
        v = acc >> nb
        out[pos] = np.uint8((v >> np.uint64(24)) & np.uint64(255))
        out[pos + 1] = np.uint8((v >> np.uint64(16)) & np.uint64(255))
        out[pos + 2] = np.uint8((v >> np.uint64(8)) & np.uint64(255))
        out[pos + 3] = np.uint8(v & np.uint64(255))
        pos += 4
    return acc, nb, pos


@njit(inline="always")
def _flush(out, acc, nb, pos):
    while nb >= np.uint64(8):
        nb -= np.uint64(8)
        out[pos] = np.uint8((acc >> nb) & np.uint64(255))
        pos += 1
    if nb > np.uint64(0):
        out[pos] = np.uint8((acc << (np.uint64(8) - nb)) & np.uint64(255))
        pos += 1
    return pos


@njit(cache=True, nogil=True)
def encode4(data, bounds, codes, lens, out, obounds):
    """Encode segment k of ``data`` into ``out[obounds[k]:obounds[k+1]]`` (k = 0..3).

    ``codes`` and ``lens`` are uint64[256]. Returns the 4 end positions written
    (equal to ``obounds[1:]`` when the sizes were computed right).
    """
    z = np.uint64(0)
    a0, a1, a2, a3 = z, z, z, z
    n0, n1, n2, n3 = z, z, z, z
    p0, p1, p2, p3 = obounds[0], obounds[1], obounds[2], obounds[3]
    s0, s1, s2, s3 = bounds[0], bounds[1], bounds[2], bounds[3]
    m = min(bounds[1] - s0, bounds[2] - s1, bounds[3] - s2, bounds[4] - s3)
    for i in range(m):
        c = data[s0 + i]
        a0, n0, p0 = _put(out, a0, n0, p0, codes[c], lens[c])
        c = data[s1 + i]
        a1, n1, p1 = _put(out, a1, n1, p1, codes[c], lens[c])
        c = data[s2 + i]
        a2, n2, p2 = _put(out, a2, n2, p2, codes[c], lens[c])
        c = data[s3 + i]
        a3, n3, p3 = _put(out, a3, n3, p3, codes[c], lens[c])
    for i in range(s0 + m, bounds[1]):
        a0, n0, p0 = _put(out, a0, n0, p0, codes[data[i]], lens[data[i]])
    for i in range(s1 + m, bounds[2]):
        a1, n1, p1 = _put(out, a1, n1, p1, codes[data[i]], lens[data[i]])
    for i in range(s2 + m, bounds[3]):
        a2, n2, p2 = _put(out, a2, n2, p2, codes[data[i]], lens[data[i]])
    for i in range(s3 + m, bounds[4]):
        a3, n3, p3 = _put(out, a3, n3, p3, codes[data[i]], lens[data[i]])
    ends = np.empty(4, np.int64)
    ends[0] = _flush(out, a0, n0, p0)
    ends[1] = _flush(out, a1, n1, p1)
    ends[2] = _flush(out, a2, n2, p2)
    ends[3] = _flush(out, a3, n3, p3)
    return ends


@njit(cache=True, nogil=True)
def encode4_context(data, ctx, cmap, bounds, codes, lens, out, obounds):
    """Like :func:`encode4` with table ``cmap[ctx[i]]`` for symbol i (codes, lens: (T, 256))."""
    z = np.uint64(0)
    a0, a1, a2, a3 = z, z, z, z
    n0, n1, n2, n3 = z, z, z, z
    p0, p1, p2, p3 = obounds[0], obounds[1], obounds[2], obounds[3]
    s0, s1, s2, s3 = bounds[0], bounds[1], bounds[2], bounds[3]
    m = min(bounds[1] - s0, bounds[2] - s1, bounds[3] - s2, bounds[4] - s3)
    for i in range(m):
        c = data[s0 + i]
        t = cmap[ctx[s0 + i]]
        a0, n0, p0 = _put(out, a0, n0, p0, codes[t, c], lens[t, c])
        c = data[s1 + i]
        t = cmap[ctx[s1 + i]]
        a1, n1, p1 = _put(out, a1, n1, p1, codes[t, c], lens[t, c])
        c = data[s2 + i]
        t = cmap[ctx[s2 + i]]
        a2, n2, p2 = _put(out, a2, n2, p2, codes[t, c], lens[t, c])
        c = data[s3 + i]
        t = cmap[ctx[s3 + i]]
        a3, n3, p3 = _put(out, a3, n3, p3, codes[t, c], lens[t, c])
    for i in range(s0 + m, bounds[1]):
        t = cmap[ctx[i]]
        a0, n0, p0 = _put(out, a0, n0, p0, codes[t, data[i]], lens[t, data[i]])
    for i in range(s1 + m, bounds[2]):
        t = cmap[ctx[i]]
        a1, n1, p1 = _put(out, a1, n1, p1, codes[t, data[i]], lens[t, data[i]])
    for i in range(s2 + m, bounds[3]):
        t = cmap[ctx[i]]
        a2, n2, p2 = _put(out, a2, n2, p2, codes[t, data[i]], lens[t, data[i]])
    for i in range(s3 + m, bounds[4]):
        t = cmap[ctx[i]]
        a3, n3, p3 = _put(out, a3, n3, p3, codes[t, data[i]], lens[t, data[i]])
    ends = np.empty(4, np.int64)
    ends[0] = _flush(out, a0, n0, p0)
    ends[1] = _flush(out, a1, n1, p1)
    ends[2] = _flush(out, a2, n2, p2)
    ends[3] = _flush(out, a3, n3, p3)
    return ends


# --------------------------------------------------------------------- decoding


@njit(inline="always")
def _load(buf, b):
    # 64 bits starting at bit ``b`` (MSB-first), of which at least 57 are valid.
    p = np.uint64(b >> 3)
    v = (
        (np.uint64(buf[p]) << np.uint64(56))
        | (np.uint64(buf[p + np.uint64(1)]) << np.uint64(48))
        | (np.uint64(buf[p + np.uint64(2)]) << np.uint64(40))
        | (np.uint64(buf[p + np.uint64(3)]) << np.uint64(32))
        | (np.uint64(buf[p + np.uint64(4)]) << np.uint64(24))
        | (np.uint64(buf[p + np.uint64(5)]) << np.uint64(16))
        | (np.uint64(buf[p + np.uint64(6)]) << np.uint64(8))
        | np.uint64(buf[p + np.uint64(7)])
    )
    return v << np.uint64(b & 7)


@njit(inline="always")
def _dec4(buf, b, table, out, o):
    # Decode 4 symbols (at most 4 * MAX_LEN = 48 <= 57 bits) from one load.
    x = _load(buf, b)
    e = table[x >> _PEEK]
    out[o] = np.uint8(e >> 4)
    n = e & 15
    x <<= np.uint64(n)
    e = table[x >> _PEEK]
    out[o + 1] = np.uint8(e >> 4)
    n2 = e & 15
    x <<= np.uint64(n2)
    e = table[x >> _PEEK]
    out[o + 2] = np.uint8(e >> 4)
    n3 = e & 15
    x <<= np.uint64(n3)
    e = table[x >> _PEEK]
    out[o + 3] = np.uint8(e >> 4)
    n4 = e & 15
    return b + np.int64(n) + np.int64(n2) + np.int64(n3) + np.int64(n4)


@njit(inline="always")
def _dec1(buf, b, table, out, o):
    e = table[_load(buf, b) >> _PEEK]
    out[o] = np.uint8(e >> 4)
    return b + np.int64(e & 15)


@njit(cache=True, nogil=True)
def decode4(buf, sb, table, out, bounds, bitpos):
    """Decode 4 streams into the 4 segments of ``out``.

    Stream k is ``buf[sb[k]:sb[k+1]]``; segment k is ``out[bounds[k]:bounds[k+1]]``;
    ``table`` is uint16[1 << MAX_LEN] with entries ``symbol << 4 | length``.
    ``buf`` must have at least 8 bytes after ``sb[4]``. A read never starts past the
    end of its stream. Returns -1 and the final bit positions in ``bitpos``, or the
    index of a stream that ran past its end.
    """
    b0, b1, b2, b3 = sb[0] * 8, sb[1] * 8, sb[2] * 8, sb[3] * 8
    e0, e1, e2, e3 = sb[1] * 8, sb[2] * 8, sb[3] * 8, sb[4] * 8
    o0, o1, o2, o3 = bounds[0], bounds[1], bounds[2], bounds[3]
    m = min(bounds[1] - o0, bounds[2] - o1, bounds[3] - o2, bounds[4] - o3)
    for _ in range(m >> 2):
        if b0 > e0:
            return 0
        if b1 > e1:
            return 1
        if b2 > e2:
            return 2
        if b3 > e3:
            return 3
        b0 = _dec4(buf, b0, table, out, o0)
        b1 = _dec4(buf, b1, table, out, o1)
        b2 = _dec4(buf, b2, table, out, o2)
        b3 = _dec4(buf, b3, table, out, o3)
        o0 += 4
        o1 += 4
        o2 += 4
        o3 += 4
    for o in range(o0, bounds[1]):
        if b0 > e0:
            return 0
        b0 = _dec1(buf, b0, table, out, o)
    for o in range(o1, bounds[2]):
        if b1 > e1:
            return 1
        b1 = _dec1(buf, b1, table, out, o)
    for o in range(o2, bounds[3]):
        if b2 > e2:
            return 2
        b2 = _dec1(buf, b2, table, out, o)
    for o in range(o3, bounds[4]):
        if b3 > e3:
            return 3
        b3 = _dec1(buf, b3, table, out, o)
    bitpos[0] = b0
    bitpos[1] = b1
    bitpos[2] = b2
    bitpos[3] = b3
    return -1


@njit(inline="always")
def _dec4c(buf, b, tables, cmap, ctx, out, o):
    x = _load(buf, b)
    e = tables[cmap[ctx[o]], x >> _PEEK]
    out[o] = np.uint8(e >> 4)
    n = e & 15
    x <<= np.uint64(n)
    e = tables[cmap[ctx[o + 1]], x >> _PEEK]
    out[o + 1] = np.uint8(e >> 4)
    n2 = e & 15
    x <<= np.uint64(n2)
    e = tables[cmap[ctx[o + 2]], x >> _PEEK]
    out[o + 2] = np.uint8(e >> 4)
    n3 = e & 15
    x <<= np.uint64(n3)
    e = tables[cmap[ctx[o + 3]], x >> _PEEK]
    out[o + 3] = np.uint8(e >> 4)
    n4 = e & 15
    return b + np.int64(n) + np.int64(n2) + np.int64(n3) + np.int64(n4)


@njit(inline="always")
def _dec1c(buf, b, tables, cmap, ctx, out, o):
    e = tables[cmap[ctx[o]], _load(buf, b) >> _PEEK]
    out[o] = np.uint8(e >> 4)
    return b + np.int64(e & 15)


@njit(cache=True, nogil=True)
def decode4_context(buf, sb, tables, cmap, ctx, out, bounds, bitpos):
    """Like :func:`decode4`; symbol i uses table ``tables[cmap[ctx[i]]]`` (tables: (T, 1 << MAX_LEN))."""
    b0, b1, b2, b3 = sb[0] * 8, sb[1] * 8, sb[2] * 8, sb[3] * 8
    e0, e1, e2, e3 = sb[1] * 8, sb[2] * 8, sb[3] * 8, sb[4] * 8
    o0, o1, o2, o3 = bounds[0], bounds[1], bounds[2], bounds[3]
    m = min(bounds[1] - o0, bounds[2] - o1, bounds[3] - o2, bounds[4] - o3)
    for _ in range(m >> 2):
        if b0 > e0:
            return 0
        if b1 > e1:
            return 1
        if b2 > e2:
            return 2
        if b3 > e3:
            return 3
        b0 = _dec4c(buf, b0, tables, cmap, ctx, out, o0)
        b1 = _dec4c(buf, b1, tables, cmap, ctx, out, o1)
        b2 = _dec4c(buf, b2, tables, cmap, ctx, out, o2)
        b3 = _dec4c(buf, b3, tables, cmap, ctx, out, o3)
        o0 += 4
        o1 += 4
        o2 += 4
        o3 += 4
    for o in range(o0, bounds[1]):
        if b0 > e0:
            return 0
        b0 = _dec1c(buf, b0, tables, cmap, ctx, out, o)
    for o in range(o1, bounds[2]):
        if b1 > e1:
            return 1
        b1 = _dec1c(buf, b1, tables, cmap, ctx, out, o)
    for o in range(o2, bounds[3]):
        if b2 > e2:
            return 2
        b2 = _dec1c(buf, b2, tables, cmap, ctx, out, o)
    for o in range(o3, bounds[4]):
        if b3 > e3:
            return 3
        b3 = _dec1c(buf, b3, tables, cmap, ctx, out, o)
    bitpos[0] = b0
    bitpos[1] = b1
    bitpos[2] = b2
    bitpos[3] = b3
    return -1
