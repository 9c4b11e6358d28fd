"""Numba kernels of the ``planes`` codec and its canonical Huffman coder.

Callers reach these through :mod:`nncodec.kernels.huffman`, which runs small
calls in NumPy and imports (and so compiles) this module only for work that
pays for it. Compiled kernels, and the Python functions in front of those that
allocate outputs (a kernel allocates nothing); :mod:`nncodec.entropy.blockhuffman`
and :mod:`nncodec.codecs.planes` check every argument before calling one. The
kernels trust their arguments completely:

* segment and stream bounds are non-decreasing and inside the arrays;
* a decode input buffer holds at least 8 readable bytes after the end of its
  last stream (the decoder reads 8 bytes at a time, and never starts a read
  beyond the end of the stream it decodes);
* decode tables have ``1 << MAX_LEN`` entries per table, context maps 256
  entries, every map entry names an existing table, and encode tables give
  every symbol that occurs a code.

The formats are specified in spec/codecs/planes.md and spec/codecs/planes-huffman.md;
tests/reference/blockhuffman.py holds plain-Python versions of every kernel.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import configure

configure()  # the cache folder, before the first @njit below

MAX_LEN = 12  #: longest code length; a decode table has 1 << MAX_LEN entries
_PEEK = np.uint64(64 - MAX_LEN)

NONE, ROTL1, ZIGZAG = 0, 1, 2  # bit transforms


# Helpers are plain jitted functions, not ``inline="always"``: LLVM inlines them
# all the same (decode and encode speeds measured equal), while Numba's own
# inlining re-typed every call site and doubled compilation (the decoders took
# 1.5-3.8 s each to compile, about half that now).

# ----------------------------------------------------------------- byte planes
#
# One kernel per word width so that every shift is a constant and the loops
# vectorize. ``x`` is the array of words (uint8/16/32/64), ``out``/``planes`` the
# (w, n) byte planes, row 0 the most significant byte of the transformed word.


@njit(cache=True, nogil=True)
def split1(x, transform, out):
    n = x.shape[0]
    one, top = np.uint8(1), np.uint8(7)
    if transform == ROTL1:
        for i in range(n):
            v = x[i]
            out[0, i] = (v << one) | (v >> top)
    elif transform == ZIGZAG:
        for i in range(n):
            v = x[i]
            out[0, i] = (v << one) ^ (np.uint8(0) - (v >> top))
    else:
        for i in range(n):
            out[0, i] = x[i]


@njit(cache=True, nogil=True)
def split2(x, transform, out):
    n = x.shape[0]
    one, top, eight = np.uint16(1), np.uint16(15), np.uint16(8)
    if transform == ROTL1:
        for i in range(n):
            v = x[i]
            v = (v << one) | (v >> top)
            out[0, i] = np.uint8(v >> eight)
            out[1, i] = np.uint8(v & np.uint16(255))
    elif transform == ZIGZAG:
        for i in range(n):
            v = x[i]
            v = (v << one) ^ (np.uint16(0) - (v >> top))
            out[0, i] = np.uint8(v >> eight)
            out[1, i] = np.uint8(v & np.uint16(255))
    else:
        for i in range(n):
            v = x[i]
            out[0, i] = np.uint8(v >> eight)
            out[1, i] = np.uint8(v & np.uint16(255))


@njit(cache=True, nogil=True)  # a helper: LLVM inlines it into its callers
def _put4(out, i, v):
    m = np.uint32(255)
    out[0, i] = np.uint8(v >> np.uint32(24))
    out[1, i] = np.uint8((v >> np.uint32(16)) & m)
    out[2, i] = np.uint8((v >> np.uint32(8)) & m)
    out[3, i] = np.uint8(v & m)


@njit(cache=True, nogil=True)
def split4(x, transform, out):
    n = x.shape[0]
    one, top = np.uint32(1), np.uint32(31)
    if transform == ROTL1:
        for i in range(n):
            v = x[i]
            _put4(out, i, (v << one) | (v >> top))
    elif transform == ZIGZAG:
        for i in range(n):
            v = x[i]
            _put4(out, i, (v << one) ^ (np.uint32(0) - (v >> top)))
    else:
        for i in range(n):
            _put4(out, i, x[i])


# Deliberate unrolled variant of _put4 for 8 output bytes: one branch-free store per byte.
@njit(cache=True, nogil=True)  # a helper: LLVM inlines it into its callers
def _put8(out, i, v):
    m = np.uint64(255)
    out[0, i] = np.uint8(v >> np.uint64(56))
    out[1, i] = np.uint8((v >> np.uint64(48)) & m)
    out[2, i] = np.uint8((v >> np.uint64(40)) & m)
    out[3, i] = np.uint8((v >> np.uint64(32)) & m)
    out[4, i] = np.uint8((v >> np.uint64(24)) & m)
    out[5, i] = np.uint8((v >> np.uint64(16)) & m)
    out[6, i] = np.uint8((v >> np.uint64(8)) & m)
    out[7, i] = np.uint8(v & m)


@njit(cache=True, nogil=True)
def split8(x, transform, out):
    n = x.shape[0]
    one, top = np.uint64(1), np.uint64(63)
    if transform == ROTL1:
        for i in range(n):
            v = x[i]
            _put8(out, i, (v << one) | (v >> top))
    elif transform == ZIGZAG:
        for i in range(n):
            v = x[i]
            _put8(out, i, (v << one) ^ (np.uint64(0) - (v >> top)))
    else:
        for i in range(n):
            _put8(out, i, x[i])


# The merge kernels take one 1-D uint8 array per plane (most significant first):
# a plane can then be a view of the payload, with no copy.


@njit(cache=True, nogil=True)
def merge1(p0, transform, out):
    n = out.shape[0]
    one, top = np.uint8(1), np.uint8(7)
    if transform == ROTL1:
        for i in range(n):
            v = p0[i]
            out[i] = (v >> one) | (v << top)
    elif transform == ZIGZAG:
        for i in range(n):
            v = p0[i]
            out[i] = (v >> one) ^ (np.uint8(0) - (v & one))
    else:
        for i in range(n):
            out[i] = p0[i]


@njit(cache=True, nogil=True)
def merge2(p0, p1, transform, out):
    n = out.shape[0]
    one, top, eight = np.uint16(1), np.uint16(15), np.uint16(8)
    if transform == ROTL1:
        for i in range(n):
            v = (np.uint16(p0[i]) << eight) | np.uint16(p1[i])
            out[i] = (v >> one) | (v << top)
    elif transform == ZIGZAG:
        for i in range(n):
            v = (np.uint16(p0[i]) << eight) | np.uint16(p1[i])
            out[i] = (v >> one) ^ (np.uint16(0) - (v & one))
    else:
        for i in range(n):
            out[i] = (np.uint16(p0[i]) << eight) | np.uint16(p1[i])


@njit(cache=True, nogil=True)  # a helper: LLVM inlines it into its callers
def _get4(p0, p1, p2, p3, i):
    return (
        (np.uint32(p0[i]) << np.uint32(24))
        | (np.uint32(p1[i]) << np.uint32(16))
        | (np.uint32(p2[i]) << np.uint32(8))
        | np.uint32(p3[i])
    )


@njit(cache=True, nogil=True)
def merge4(p0, p1, p2, p3, transform, out):
    n = out.shape[0]
    one, top = np.uint32(1), np.uint32(31)
    if transform == ROTL1:
        for i in range(n):
            v = _get4(p0, p1, p2, p3, i)
            out[i] = (v >> one) | (v << top)
    elif transform == ZIGZAG:
        for i in range(n):
            v = _get4(p0, p1, p2, p3, i)
            out[i] = (v >> one) ^ (np.uint32(0) - (v & one))
    else:
        for i in range(n):
            out[i] = _get4(p0, p1, p2, p3, i)


@njit(cache=True, nogil=True)  # a helper: LLVM inlines it into its callers
def _get8(p0, p1, p2, p3, p4, p5, p6, p7, i):
    return (
        (np.uint64(p0[i]) << np.uint64(56))
        | (np.uint64(p1[i]) << np.uint64(48))
        | (np.uint64(p2[i]) << np.uint64(40))
        | (np.uint64(p3[i]) << np.uint64(32))
        | (np.uint64(p4[i]) << np.uint64(24))
        | (np.uint64(p5[i]) << np.uint64(16))
        | (np.uint64(p6[i]) << np.uint64(8))
        | np.uint64(p7[i])
    )


@njit(cache=True, nogil=True)
def merge8(p0, p1, p2, p3, p4, p5, p6, p7, transform, out):
    n = out.shape[0]
    one, top = np.uint64(1), np.uint64(63)
    if transform == ROTL1:
        for i in range(n):
            v = _get8(p0, p1, p2, p3, p4, p5, p6, p7, i)
            out[i] = (v >> one) | (v << top)
    elif transform == ZIGZAG:
        for i in range(n):
            v = _get8(p0, p1, p2, p3, p4, p5, p6, p7, i)
            out[i] = (v >> one) ^ (np.uint64(0) - (v & one))
    else:
        for i in range(n):
            out[i] = _get8(p0, p1, p2, p3, p4, p5, p6, p7, i)


# ------------------------------------------------------------------ histograms


# Kernels allocate nothing: the Python function in front of a kernel allocates
# its outputs and scratch, so a process that only decodes or only codes small
# files never compiles Numba's allocator (about 0.4 s on first use).


def histogram4(data, bounds):
    """Byte counts of the 4 segments ``data[bounds[k]:bounds[k+1]]``: shape (4, 256)."""
    h = np.zeros((4, 256), np.int64)
    _histogram4(data, bounds, h)
    return h


@njit(cache=True, nogil=True)
def _histogram4(data, bounds, h):
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


def context_histogram4(data, ctx, bounds):
    """Counts per segment, context byte and symbol: shape (4, 256, 256), index [k, ctx, sym]."""
    h = np.zeros((4, 256, 256), np.int64)
    _context_histogram4(data, ctx, bounds, h)
    return h


@njit(cache=True, nogil=True)
def _context_histogram4(data, ctx, bounds, h):
    for k in range(4):
        for i in range(bounds[k], bounds[k + 1]):
            h[k, ctx[i], data[i]] += 1


# ---------------------------------------------------------------- code lengths


def package_merge(counts, max_len):
    """Optimal code lengths of at most ``max_len`` bits for ``counts`` (int64[256]).

    Symbols of count 0 get length 0. One used symbol gets length 1. Ties are broken
    by symbol value and leaves go before packages of equal weight, so the result is
    deterministic (spec/codecs/planes-huffman.md, "Encoder").
    """
    lens = np.zeros(256, np.uint8)
    max_len = int(max_len)
    if max_len < 1:
        raise ValueError(f"max_len {max_len} must be at least 1")
    scratch = np.empty(3 * 256, np.int64)
    item = np.full((max_len, 512), -1, np.int64)  # leaf symbol, or -1 for a package
    weight = np.zeros((max_len, 512), np.int64)
    size = np.zeros(max_len, np.int64)
    _package_merge(counts, max_len, lens, scratch, item, weight, size)
    return lens


@njit(cache=True, nogil=True)
def _package_merge(counts, max_len, lens, scratch, item, weight, size):
    nsym = 0
    for s in range(256):
        if counts[s] > 0:
            nsym += 1
    if nsym == 0:
        return
    syms = scratch[:nsym]
    j = 0
    for s in range(256):
        if counts[s] > 0:
            syms[j] = s
            j += 1
    if nsym == 1:
        lens[syms[0]] = 1
        return
    # leaves by count, ties by symbol: an insertion sort of at most 256 items, stable
    # because it moves an item only past strictly larger counts (np.argsort would
    # cost seconds of compilation for nothing)
    leaf_w = scratch[256:256 + nsym]
    leaf_s = scratch[512:512 + nsym]
    for i in range(nsym):
        w = counts[syms[i]]
        j = i
        while j > 0 and leaf_w[j - 1] > w:
            leaf_w[j] = leaf_w[j - 1]
            leaf_s[j] = leaf_s[j - 1]
            j -= 1
        leaf_w[j] = w
        leaf_s[j] = syms[i]
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


# --------------------------------------------------------------------- encoding
#
# Codes are written MSB-first. ``acc`` holds ``nb`` pending bits in its low end;
# after every group of up to 4 codes (at most 48 bits) the whole bytes are
# stored with one big-endian 8-byte write, so ``out`` needs 8 bytes of slack
# after the last stream. Streams are written in order, so the slack bytes a
# stream writes past its end are overwritten by the next stream.

_U0 = np.uint64(0)
_U1 = np.uint64(1)
_U3 = np.uint64(3)
_U7 = np.uint64(7)
_U8 = np.uint64(8)
_UFF = np.uint64(255)


@njit(cache=True, nogil=True)  # a helper: LLVM inlines it into its callers
def _store_be64(out, pos, v):
    out[pos] = np.uint8(v >> np.uint64(56))
    out[pos + _U1] = np.uint8((v >> np.uint64(48)) & _UFF)
    out[pos + np.uint64(2)] = np.uint8((v >> np.uint64(40)) & _UFF)
    out[pos + _U3] = np.uint8((v >> np.uint64(32)) & _UFF)
    out[pos + np.uint64(4)] = np.uint8((v >> np.uint64(24)) & _UFF)
    out[pos + np.uint64(5)] = np.uint8((v >> np.uint64(16)) & _UFF)
    out[pos + np.uint64(6)] = np.uint8((v >> _U8) & _UFF)
    out[pos + _U7] = np.uint8(v & _UFF)


@njit(cache=True, nogil=True)  # a helper: LLVM inlines it into its callers
def _flush_bytes(out, acc, nb, pos):
    # store the whole bytes of the nb (<= 63) pending bits; keep nb & 7
    _store_be64(out, pos, (acc << (np.uint64(63) - nb)) << _U1)
    return pos + (nb >> _U3), nb & _U7


@njit(cache=True, nogil=True)  # a helper: LLVM inlines it into its callers
def _finish(out, acc, nb, pos):
    if nb > _U0:
        out[pos] = np.uint8((acc << (_U8 - nb)) & _UFF)
        pos += _U1
    return pos


def encode4(data, bounds, table, out, obounds):
    """Encode segment k of ``data`` as stream k at ``out[obounds[k]:obounds[k+1]]``.

    ``table[s] = code << 8 | length`` (uint64[256], lengths >= 1). ``out`` has at
    least 8 bytes after ``obounds[4]``. Returns the 4 end positions written.
    """
    ends = np.empty(4, np.int64)
    _encode4(data, bounds, table, out, obounds, ends)
    return ends


@njit(cache=True, nogil=True)
def _encode4(data, bounds, table, out, obounds, ends):
    for k in range(4):
        acc = _U0
        nb = _U0
        pos = np.uint64(obounds[k])
        i = np.uint64(bounds[k])
        end = np.uint64(bounds[k + 1])
        while i + np.uint64(4) <= end:
            t = table[data[i]]
            acc = (acc << (t & _UFF)) | (t >> _U8)
            nb += t & _UFF
            t = table[data[i + _U1]]
            acc = (acc << (t & _UFF)) | (t >> _U8)
            nb += t & _UFF
            t = table[data[i + np.uint64(2)]]
            acc = (acc << (t & _UFF)) | (t >> _U8)
            nb += t & _UFF
            t = table[data[i + _U3]]
            acc = (acc << (t & _UFF)) | (t >> _U8)
            nb += t & _UFF
            pos, nb = _flush_bytes(out, acc, nb, pos)
            i += np.uint64(4)
        while i < end:
            t = table[data[i]]
            acc = (acc << (t & _UFF)) | (t >> _U8)
            nb += t & _UFF
            pos, nb = _flush_bytes(out, acc, nb, pos)
            i += _U1
        ends[k] = np.int64(_finish(out, acc, nb, pos))


def encode4_context(data, ctx, cmap, bounds, table, out, obounds):
    """Like :func:`encode4`; symbol i uses ``table[cmap[ctx[i]] << 8 | data[i]]``.

    ``table`` is uint64[T * 256] with entries ``code << 8 | length``; a length of
    0 (a one-symbol table) writes nothing.
    """
    ends = np.empty(4, np.int64)
    _encode4_context(data, ctx, cmap, bounds, table, out, obounds, ends)
    return ends


@njit(cache=True, nogil=True)
def _encode4_context(data, ctx, cmap, bounds, table, out, obounds, ends):
    for k in range(4):
        acc = _U0
        nb = _U0
        pos = np.uint64(obounds[k])
        i = np.uint64(bounds[k])
        end = np.uint64(bounds[k + 1])
        while i + np.uint64(4) <= end:
            t = table[(np.uint64(cmap[ctx[i]]) << _U8) | np.uint64(data[i])]
            acc = (acc << (t & _UFF)) | (t >> _U8)
            nb += t & _UFF
            j = i + _U1
            t = table[(np.uint64(cmap[ctx[j]]) << _U8) | np.uint64(data[j])]
            acc = (acc << (t & _UFF)) | (t >> _U8)
            nb += t & _UFF
            j = i + np.uint64(2)
            t = table[(np.uint64(cmap[ctx[j]]) << _U8) | np.uint64(data[j])]
            acc = (acc << (t & _UFF)) | (t >> _U8)
            nb += t & _UFF
            j = i + _U3
            t = table[(np.uint64(cmap[ctx[j]]) << _U8) | np.uint64(data[j])]
            acc = (acc << (t & _UFF)) | (t >> _U8)
            nb += t & _UFF
            pos, nb = _flush_bytes(out, acc, nb, pos)
            i += np.uint64(4)
        while i < end:
            t = table[(np.uint64(cmap[ctx[i]]) << _U8) | np.uint64(data[i])]
            acc = (acc << (t & _UFF)) | (t >> _U8)
            nb += t & _UFF
            pos, nb = _flush_bytes(out, acc, nb, pos)
            i += _U1
        ends[k] = np.int64(_finish(out, acc, nb, pos))


# --------------------------------------------------------------------- decoding
#
# Bit position b (int64, absolute in ``buf``) of each stream; a load reads the 8
# bytes at b >> 3 and keeps at least 57 valid bits, enough for 4 codes. Before a
# load the kernel checks b <= the stream's end (in bits): a load then never
# reaches past the PAD bytes after the last stream, whatever the data.


@njit(cache=True, nogil=True)  # a helper: LLVM inlines it into its callers
def _load(buf, b):
    # 64 bits starting at bit ``b`` (MSB-first), of which at least 57 are valid.
    p = np.uint64(b >> 3)
    v = (
        (np.uint64(buf[p]) << np.uint64(56))
        | (np.uint64(buf[p + _U1]) << np.uint64(48))
        | (np.uint64(buf[p + np.uint64(2)]) << np.uint64(40))
        | (np.uint64(buf[p + _U3]) << np.uint64(32))
        | (np.uint64(buf[p + np.uint64(4)]) << np.uint64(24))
        | (np.uint64(buf[p + np.uint64(5)]) << np.uint64(16))
        | (np.uint64(buf[p + np.uint64(6)]) << _U8)
        | np.uint64(buf[p + _U7])
    )
    return v << np.uint64(b & 7)


@njit(cache=True, nogil=True)  # a helper: LLVM inlines it into its callers
def _s4(buf, b, table, out, o):
    # 4 symbols from one load with the single-symbol table (entries symbol << 4 | length)
    x = _load(buf, b)
    e = table[x >> _PEEK]
    out[o] = np.uint8(e >> np.uint16(4))
    n1 = np.uint64(e & np.uint16(15))
    x <<= n1
    e = table[x >> _PEEK]
    out[o + _U1] = np.uint8(e >> np.uint16(4))
    n2 = np.uint64(e & np.uint16(15))
    x <<= n2
    e = table[x >> _PEEK]
    out[o + np.uint64(2)] = np.uint8(e >> np.uint16(4))
    n3 = np.uint64(e & np.uint16(15))
    x <<= n3
    e = table[x >> _PEEK]
    out[o + _U3] = np.uint8(e >> np.uint16(4))
    n4 = np.uint64(e & np.uint16(15))
    return b + np.int64(n1 + n2 + n3 + n4)


@njit(cache=True, nogil=True)  # a helper: LLVM inlines it into its callers
def _s1(buf, b, table, out, o):
    e = table[_load(buf, b) >> _PEEK]
    out[o] = np.uint8(e >> np.uint16(4))
    return b + np.int64(e & np.uint16(15))


@njit(cache=True, nogil=True)  # a helper: LLVM inlines it into its callers
def _st4(out, o, e):
    out[o] = np.uint8(e & _UFF)
    out[o + _U1] = np.uint8((e >> _U8) & _UFF)
    out[o + np.uint64(2)] = np.uint8((e >> np.uint64(16)) & _UFF)
    out[o + _U3] = np.uint8((e >> np.uint64(24)) & _UFF)


@njit(cache=True, nogil=True)  # a helper: LLVM inlines it into its callers
def _m4(buf, b, table, out, o):
    # 4 lookups in the multi-symbol table (entries: 4 symbol bytes, bits << 32,
    # count << 40), each writing 4 bytes and keeping ``count`` of them.
    x = _load(buf, b)
    e = table[x >> _PEEK]
    _st4(out, o, e)
    n = (e >> np.uint64(32)) & _UFF
    o += e >> np.uint64(40)
    x <<= n
    t = n
    e = table[x >> _PEEK]
    _st4(out, o, e)
    n = (e >> np.uint64(32)) & _UFF
    o += e >> np.uint64(40)
    x <<= n
    t += n
    e = table[x >> _PEEK]
    _st4(out, o, e)
    n = (e >> np.uint64(32)) & _UFF
    o += e >> np.uint64(40)
    x <<= n
    t += n
    e = table[x >> _PEEK]
    _st4(out, o, e)
    o += e >> np.uint64(40)
    t += (e >> np.uint64(32)) & _UFF
    return b + np.int64(t), o


@njit(cache=True, nogil=True)
def decode4(buf, sb, table, out, bounds, bitpos):
    """Decode 4 streams into the 4 segments of ``out`` with a single-symbol table.

    Stream k is ``buf[sb[k]:sb[k+1]]``; segment k is ``out[bounds[k]:bounds[k+1]]``;
    ``table`` is uint16[1 << MAX_LEN] with entries ``symbol << 4 | length``.
    ``buf`` has at least 8 bytes after ``sb[4]``. Returns -1 and the final bit
    positions in ``bitpos``, or the index of a stream that ran past its end.
    """
    b0, b1, b2, b3 = sb[0] * 8, sb[1] * 8, sb[2] * 8, sb[3] * 8
    e0, e1, e2, e3 = sb[1] * 8, sb[2] * 8, sb[3] * 8, sb[4] * 8
    o0, o1, o2, o3 = np.uint64(bounds[0]), np.uint64(bounds[1]), np.uint64(bounds[2]), np.uint64(bounds[3])
    m = min(bounds[1] - bounds[0], bounds[2] - bounds[1], bounds[3] - bounds[2], bounds[4] - bounds[3])
    g = np.uint64(m >> 2)
    i = _U0
    while i < g:
        if b0 > e0 or b1 > e1 or b2 > e2 or b3 > e3:
            break
        j = i << np.uint64(2)
        b0 = _s4(buf, b0, table, out, o0 + j)
        b1 = _s4(buf, b1, table, out, o1 + j)
        b2 = _s4(buf, b2, table, out, o2 + j)
        b3 = _s4(buf, b3, table, out, o3 + j)
        i += _U1
    j = i << np.uint64(2)
    bs = (b0, b1, b2, b3)
    es = (e0, e1, e2, e3)
    for k in range(4):
        b = bs[k]
        e = es[k]
        for o in range(np.uint64(bounds[k]) + j, np.uint64(bounds[k + 1])):
            if b > e:
                return k
            b = _s1(buf, b, table, out, o)
        bitpos[k] = b
    return -1


@njit(cache=True, nogil=True)
def decode4_multi(buf, sb, table, mtable, out, bounds, bitpos):
    """Like :func:`decode4`, decoding up to 4 symbols per lookup in ``mtable``.

    ``mtable`` (uint64[1 << MAX_LEN]) holds, for each 12-bit window, the symbols
    whose codes fit in it (bytes 0..3), their total length (bits 32..39) and
    their count (bits 40..47, at least 1). ``table`` finishes each segment.
    """
    b0, b1, b2, b3 = sb[0] * 8, sb[1] * 8, sb[2] * 8, sb[3] * 8
    e0, e1, e2, e3 = sb[1] * 8, sb[2] * 8, sb[3] * 8, sb[4] * 8
    o0, o1, o2, o3 = np.uint64(bounds[0]), np.uint64(bounds[1]), np.uint64(bounds[2]), np.uint64(bounds[3])
    l0, l1, l2, l3 = np.uint64(bounds[1]), np.uint64(bounds[2]), np.uint64(bounds[3]), np.uint64(bounds[4])
    s = np.uint64(16)  # a group writes at most 16 symbols
    while (b0 <= e0 and b1 <= e1 and b2 <= e2 and b3 <= e3
           and o0 + s <= l0 and o1 + s <= l1 and o2 + s <= l2 and o3 + s <= l3):
        b0, o0 = _m4(buf, b0, mtable, out, o0)
        b1, o1 = _m4(buf, b1, mtable, out, o1)
        b2, o2 = _m4(buf, b2, mtable, out, o2)
        b3, o3 = _m4(buf, b3, mtable, out, o3)
    bs = (b0, b1, b2, b3)
    os = (o0, o1, o2, o3)
    es = (e0, e1, e2, e3)
    for k in range(4):
        b = bs[k]
        o = os[k]
        e = es[k]
        lim = np.uint64(bounds[k + 1])
        while b <= e and o + s <= lim:
            b, o = _m4(buf, b, mtable, out, o)
        while o < lim:
            if b > e:
                return k
            b = _s1(buf, b, table, out, o)
            o += _U1
        bitpos[k] = b
    return -1


@njit(cache=True, nogil=True)  # a helper: LLVM inlines it into its callers
def _c1(buf, b, tables, cmap, ctx, out, o):
    e = tables[(np.uint64(cmap[ctx[o]]) << np.uint64(MAX_LEN)) | (_load(buf, b) >> _PEEK)]
    out[o] = np.uint8(e >> np.uint16(4))
    return b + np.int64(e & np.uint16(15))


@njit(cache=True, nogil=True)  # a helper: LLVM inlines it into its callers
def _c4(buf, b, tables, cmap, ctx, out, o):
    x = _load(buf, b)
    sh = np.uint64(MAX_LEN)
    e = tables[(np.uint64(cmap[ctx[o]]) << sh) | (x >> _PEEK)]
    out[o] = np.uint8(e >> np.uint16(4))
    n1 = np.uint64(e & np.uint16(15))
    x <<= n1
    o1 = o + _U1
    e = tables[(np.uint64(cmap[ctx[o1]]) << sh) | (x >> _PEEK)]
    out[o1] = np.uint8(e >> np.uint16(4))
    n2 = np.uint64(e & np.uint16(15))
    x <<= n2
    o2 = o + np.uint64(2)
    e = tables[(np.uint64(cmap[ctx[o2]]) << sh) | (x >> _PEEK)]
    out[o2] = np.uint8(e >> np.uint16(4))
    n3 = np.uint64(e & np.uint16(15))
    x <<= n3
    o3 = o + _U3
    e = tables[(np.uint64(cmap[ctx[o3]]) << sh) | (x >> _PEEK)]
    out[o3] = np.uint8(e >> np.uint16(4))
    n4 = np.uint64(e & np.uint16(15))
    return b + np.int64(n1 + n2 + n3 + n4)


@njit(cache=True, nogil=True)
def decode4_context(buf, sb, tables, cmap, ctx, out, bounds, bitpos):
    """Like :func:`decode4`; symbol i uses table ``cmap[ctx[i]]``.

    ``tables`` is uint16[T << MAX_LEN] (T single-symbol tables one after another),
    ``cmap`` uint8[256] with every entry < T.
    """
    b0, b1, b2, b3 = sb[0] * 8, sb[1] * 8, sb[2] * 8, sb[3] * 8
    e0, e1, e2, e3 = sb[1] * 8, sb[2] * 8, sb[3] * 8, sb[4] * 8
    o0, o1, o2, o3 = np.uint64(bounds[0]), np.uint64(bounds[1]), np.uint64(bounds[2]), np.uint64(bounds[3])
    m = min(bounds[1] - bounds[0], bounds[2] - bounds[1], bounds[3] - bounds[2], bounds[4] - bounds[3])
    g = np.uint64(m >> 2)
    i = _U0
    while i < g:
        if b0 > e0 or b1 > e1 or b2 > e2 or b3 > e3:
            break
        j = i << np.uint64(2)
        b0 = _c4(buf, b0, tables, cmap, ctx, out, o0 + j)
        b1 = _c4(buf, b1, tables, cmap, ctx, out, o1 + j)
        b2 = _c4(buf, b2, tables, cmap, ctx, out, o2 + j)
        b3 = _c4(buf, b3, tables, cmap, ctx, out, o3 + j)
        i += _U1
    j = i << np.uint64(2)
    bs = (b0, b1, b2, b3)
    es = (e0, e1, e2, e3)
    for k in range(4):
        b = bs[k]
        e = es[k]
        for o in range(np.uint64(bounds[k]) + j, np.uint64(bounds[k + 1])):
            if b > e:
                return k
            b = _c1(buf, b, tables, cmap, ctx, out, o)
        bitpos[k] = b
    return -1


def multi_table(single):
    """The multi-symbol table of :func:`decode4_multi` from a single-symbol table.

    Entry ``j``: the symbols (up to 4) whose codes lie wholly in the 12-bit window
    ``j``, one byte each from bit 0, their total length << 32 and their count << 40.
    Returns the table and the mean count over all windows.
    """
    out = np.empty(single.shape[0], np.uint64)
    total = _multi_table(single, out)
    return out, total / single.shape[0]


@njit(cache=True, nogil=True)
def _multi_table(single, out):
    size = single.shape[0]
    mask = size - 1
    total = 0
    for j in range(size):
        used = 0
        ent = np.uint64(0)
        cnt = 0
        while cnt < 4:
            e = single[(j << used) & mask]
            ln = int(e & np.uint16(15))
            if used + ln > MAX_LEN:
                break
            ent |= np.uint64(e >> np.uint16(4)) << np.uint64(8 * cnt)
            used += ln
            cnt += 1
        out[j] = ent | (np.uint64(used) << np.uint64(32)) | (np.uint64(cnt) << np.uint64(40))
        total += cnt
    return total
