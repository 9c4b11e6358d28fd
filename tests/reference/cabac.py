"""Plain-Python reference of the ``cabac`` kernels (spec/codecs/cabac.md), for tests.

Written straight from the specification with Python integers; slow, but it must
produce exactly the bytes, levels, counts and costs of :mod:`nncodec.kernels.cabac`.
"""

from __future__ import annotations

import numpy as np

TABLES = {
    1: ([[0, 0]], [0]),
    4: ([[0, 2], [2, 0], [1, 3], [3, 1]], [0, 0, 1, 1]),
    8: ([[0, 2], [7, 5], [1, 3], [6, 4], [2, 0], [5, 7], [3, 1], [4, 6]], [0, 1, 0, 1, 0, 1, 0, 1]),
}
SIGN_BASE = 120
GT_BASE = 123
EG_CTX = 16


def n_contexts(gt):
    return GT_BASE + 14 * gt + EG_CTX


def sig_ctx(s, p1, p2, ab):
    m = abs(p1) + abs(p2) + abs(ab)
    return (s * 3 + min(abs(p1), 2)) * 5 + min(m, 4)


def sign_ctx(p1):
    return SIGN_BASE + (0 if p1 == 0 else 1 if p1 > 0 else 2)


def gt_base(q, p1, p2, ab, gt):
    m = abs(p1) + abs(p2) + abs(ab)
    return GT_BASE + (q * 7 + min(m, 6)) * gt


def eg_base(gt):
    return GT_BASE + 14 * gt


def binarize(k, s, q, p1, p2, ab, gt):
    """The bins of level ``k``: a list of (context or None for bypass, bin)."""
    a = abs(k)
    bins = [(sig_ctx(s, p1, p2, ab), 1 if a else 0)]
    if not a:
        return bins
    bins.append((sign_ctx(p1), 1 if k < 0 else 0))
    g = gt_base(q, p1, p2, ab, gt)
    for j in range(1, gt + 1):
        b = 1 if a > j else 0
        bins.append((g + j - 1, b))
        if not b:
            break
    if a > gt:
        v = a - gt
        u = v.bit_length() - 1
        e = eg_base(gt)
        bins += [(e + min(j, EG_CTX - 1), 1) for j in range(u)]
        bins.append((e + min(u, EG_CTX - 1), 0))
        bins += [(None, (v >> j) & 1) for j in range(u - 1, -1, -1)]
    return bins


def contexts_of(levels, width, states, gt):
    """Yield (k, s, q, p1, p2, above) along the levels."""
    table, quant = TABLES[states]
    s = p1 = p2 = 0
    for i, k in enumerate(int(v) for v in levels):
        ab = int(levels[i - width]) if i >= width else 0
        yield k, s, quant[s], p1, p2, ab
        s = table[s][k & 1]
        p2, p1 = p1, k


class Model:
    def __init__(self, n, ra, rb):
        self.a = [16384] * n
        self.b = [16384] * n
        self.n = [0] * n
        self.ra, self.rb = ra, rb

    def p1(self, c):
        return (self.a[c] + self.b[c]) >> 1

    def update(self, c, bit):
        sh = max(1, (self.n[c] + 2).bit_length() - 1)
        sa, sb = min(sh, self.ra), min(sh, self.rb)
        a, b = self.a[c], self.b[c]
        if bit:
            a += (32768 - a) >> sa
            b += (32768 - b) >> sb
        else:
            a -= a >> sa
            b -= b >> sb
        self.a[c] = min(max(a, 32), 32736)
        self.b[c] = min(max(b, 32), 32736)
        self.n[c] = min(self.n[c] + 1, 1023)


class Encoder:
    def __init__(self):
        self.low, self.range, self.cache, self.pending = 0, 0xFFFFFFFF, 0, 1
        self.out = bytearray()

    def shift_low(self):
        if self.low < 0xFF000000 or self.low >= 1 << 32:
            carry = self.low >> 32
            temp = self.cache
            while self.pending:
                self.out.append((temp + carry) & 0xFF)
                temp = 0xFF
                self.pending -= 1
            self.cache = (self.low >> 24) & 0xFF
        self.pending += 1
        self.low = (self.low & 0x00FFFFFF) << 8

    def normalize(self):
        while self.range < 1 << 24:
            self.range <<= 8
            self.shift_low()

    def bin(self, bit, p1):
        bound = (self.range >> 15) * (32768 - p1)
        if bit:
            self.low += bound
            self.range -= bound
        else:
            self.range = bound
        self.normalize()

    def bypass(self, bit):
        self.range >>= 1
        if bit:
            self.low += self.range
        self.normalize()

    def finish(self):
        for _ in range(5):
            self.shift_low()
        return bytes(self.out)


def encode(levels, shape, states, gt, ra, rb) -> bytes:
    """The coded stream (without the element count) of int levels in C order."""
    from nncodec.entropy.contexts import row_width

    lv = [int(v) for v in np.asarray(levels).reshape(-1)]
    width = row_width(shape)
    m = Model(n_contexts(gt), ra, rb)
    enc = Encoder()
    for k, s, q, p1, p2, ab in contexts_of(lv, width, states, gt):
        for c, bit in binarize(k, s, q, p1, p2, ab, gt):
            if c is None:
                enc.bypass(bit)
            else:
                enc.bin(bit, m.p1(c))
                m.update(c, bit)
    return enc.finish()


class Corrupt(Exception):
    pass


class Decoder:
    def __init__(self, data: bytes):
        if len(data) < 5:
            raise Corrupt("short")
        if data[0] != 0:
            raise Corrupt("first")
        self.data = data
        self.code = int.from_bytes(data[1:5], "big")
        self.range = 0xFFFFFFFF
        self.pos = 5

    def normalize(self):
        while self.range < 1 << 24:
            self.range <<= 8
            if self.pos >= len(self.data):
                raise Corrupt("short")
            self.code = ((self.code << 8) | self.data[self.pos]) & 0xFFFFFFFF
            self.pos += 1

    def bin(self, p1):
        bound = (self.range >> 15) * (32768 - p1)
        if self.code < bound:
            self.range = bound
            bit = 0
        else:
            self.code -= bound
            self.range -= bound
            bit = 1
        self.normalize()
        return bit

    def bypass(self):
        self.range >>= 1
        bit = 0
        if self.code >= self.range:
            self.code -= self.range
            bit = 1
        self.normalize()
        return bit


def decode(data: bytes, shape, states, gt, ra, rb) -> np.ndarray:
    """Levels (int32, ``shape``) from a coded stream; raises :class:`Corrupt` on damage."""
    from nncodec.entropy.contexts import row_width

    n = int(np.prod(shape, dtype=np.int64))
    width = row_width(shape)
    table, quant = TABLES[states]
    m = Model(n_contexts(gt), ra, rb)
    dec = Decoder(bytes(data))
    out = []
    s = p1 = p2 = 0

    def dbin(c):
        bit = dec.bin(m.p1(c))
        m.update(c, bit)
        return bit

    for i in range(n):
        ab = out[i - width] if i >= width else 0
        a = dbin(sig_ctx(s, p1, p2, ab))
        neg = 0
        if a:
            neg = dbin(sign_ctx(p1))
            g = gt_base(quant[s], p1, p2, ab, gt)
            j = 1
            while j <= gt and dbin(g + j - 1):
                j += 1
            a = j
            if j > gt:
                e = eg_base(gt)
                u = 0
                while dbin(e + min(u, EG_CTX - 1)):
                    u += 1
                    if u > 30:
                        raise Corrupt("level")
                v = 1
                for _ in range(u):
                    v = (v << 1) | dec.bypass()
                a = gt + v
                if a > 2**31 - 1:
                    raise Corrupt("level")
        k = -a if neg else a
        out.append(k)
        s = table[s][k & 1]
        p2, p1 = p1, k
    if dec.pos != len(dec.data):
        raise Corrupt("trailing")
    if dec.code != 0:
        raise Corrupt("final")
    return np.array(out, np.int32).reshape(shape)


def count_bins(levels, shape, states, gt):
    """(counts[c, b], bypass bins) of coding the levels."""
    from nncodec.entropy.contexts import row_width

    lv = [int(v) for v in np.asarray(levels).reshape(-1)]
    counts = np.zeros((n_contexts(gt), 2), np.int64)
    byp = 0
    for k, s, q, p1, p2, ab in contexts_of(lv, row_width(shape), states, gt):
        for c, bit in binarize(k, s, q, p1, p2, ab, gt):
            if c is None:
                byp += 1
            else:
                counts[c, bit] += 1
    return counts, byp


def level_bits(k, s, q, p1, p2, ab, gt, cost):
    """Same float operations in the same order as the kernel."""
    bins = binarize(k, s, q, p1, p2, ab, gt)
    bits = float(cost[bins[0][0], bins[0][1]])
    nbyp = 0
    for c, b in bins[1:]:
        if c is None:
            nbyp += 1
        else:
            bits += float(cost[c, b])
    if nbyp or abs(k) > gt:
        bits += nbyp
    return bits
