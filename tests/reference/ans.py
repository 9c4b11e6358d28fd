"""Plain-Python reference of the ``ans`` and ``zerorun`` formats, for tests.

Everything here follows spec/codecs/ans.md and spec/codecs/zerorun.md literally,
one element at a time with Python integers, and shares no coding code with
:mod:`nncodec.entropy.rans` or its kernels: the frequency normalisation, the
table bit string, the rANS encoder and decoder, LEB128 and zigzag are written
out again. Only the encoder's choice of the alphabet size (a floating-point
estimate, not part of the format) is taken from the codec module, so that both
encoders produce the same bytes. It is slow; use it on small arrays.
"""

from __future__ import annotations

import numpy as np

from nncodec.entropy.rans import choose_alphabet

RANS_L = 1 << 16


class RefError(ValueError):
    """A payload the reference decoder rejects."""


# ---------------------------------------------------------------- small parts


def zigzag(v: int) -> int:
    return 2 * v if v >= 0 else -2 * v - 1


def unzigzag(z: int) -> int:
    return z >> 1 if z % 2 == 0 else -((z + 1) >> 1)


def leb128(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def read_leb128(data: bytes, pos: int, end: int) -> tuple[int, int]:
    v, shift, start = 0, 0, pos
    while True:
        if pos >= end:
            raise RefError("LEB128 runs past its end")
        b = data[pos]
        pos += 1
        v |= (b & 0x7F) << shift
        if b < 0x80:
            if b == 0 and pos - start > 1:
                raise RefError("LEB128 not minimal")
            if v >= 1 << 64:
                raise RefError("LEB128 value 2**64 or more")
            return v, pos
        shift += 7
        if pos - start >= 10:
            raise RefError("LEB128 longer than 10 bytes")


def normalize(counts: list, precision: int) -> list:
    """spec/codecs/ans.md §3, step by step."""
    m = 1 << precision
    n = sum(counts)
    f = [c * m // n for c in counts]
    raised = [c > 0 and q == 0 for c, q in zip(counts, f)]
    f = [1 if r else q for q, r in zip(f, raised)]
    d = m - sum(f)
    if d > 0:
        cand = [s for s, c in enumerate(counts) if c > 0 and not raised[s]]
        cand.sort(key=lambda s: (-(counts[s] * m % n), s))
        for s in cand[:d]:
            f[s] += 1
    while d < 0:
        best = max(range(len(f)), key=lambda s: (f[s], -s))
        f[best] -= 1
        d += 1
    return f


def table_bits(freqs: list) -> tuple[int, bytes]:
    """spec/codecs/ans.md §4: smallest order k, then the MSB-first bit string."""
    prev, vals = 0, []
    for f in freqs:
        vals.append(zigzag(f - prev))
        prev = f

    def size(k):
        return sum(2 * (v + (1 << k)).bit_length() - 1 - k for v in vals)

    k = min(range(21), key=lambda k: (size(k), k))
    bits = []
    for v in vals:
        w = v + (1 << k)
        width = 2 * w.bit_length() - 1 - k
        bits.extend((w >> (width - 1 - i)) & 1 for i in range(width))
    bits.extend([0] * (-len(bits) % 8))
    out = bytes(int("".join(map(str, bits[i:i + 8])), 2) for i in range(0, len(bits), 8))
    return k, out


def read_table(data: bytes, pos: int, end: int, k: int, count: int) -> list:
    bitpos, bitend = 8 * pos, 8 * end

    def bit():
        nonlocal bitpos
        if bitpos >= bitend:
            raise RefError("table bit string too short")
        b = (data[bitpos >> 3] >> (7 - (bitpos & 7))) & 1
        bitpos += 1
        return b

    vals = []
    for _ in range(count):
        zeros = 0
        while not bit():
            zeros += 1
            if zeros > 40:
                raise RefError("table code too long")
        w = 1
        for _ in range(zeros + k):
            w = 2 * w + bit()
        vals.append(w - (1 << k))
    if bitend - bitpos >= 8 or any(bit() for _ in range(bitend - bitpos)):
        raise RefError("table padding")
    freqs, prev = [], 0
    for v in vals:
        prev += unzigzag(v)
        freqs.append(prev)
    return freqs


# ---------------------------------------------------------------- streams


def encode_stream(z: list, precision: int, nstates: int) -> bytes:
    n = len(z)
    if n == 0:
        return b""
    if min(z) == max(z):
        return b"\x00" + leb128(z[0])
    a, counts = choose_alphabet(np.array(z, np.uint64), precision)
    counts = [int(c) for c in counts]
    freqs = normalize(counts, precision)
    cum = [sum(freqs[:s]) for s in range(len(freqs))]
    syms = [min(v, a) for v in z]
    esc = b"".join(leb128(v - a) for v in z if v >= a)
    x = [RANS_L] * nstates
    emitted = []  # in encoder order
    for i in range(n - 1, -1, -1):
        s, j = syms[i], i % nstates
        f = freqs[s]
        if x[j] >= f << (32 - precision):
            emitted.append(x[j] & 0xFFFF)
            x[j] >>= 16
        x[j] = ((x[j] // f) << precision) + x[j] % f + cum[s]
    words = emitted[::-1]
    k, table = table_bits(freqs)
    return (b"\x01" + leb128(a) + bytes([k]) + leb128(len(table)) + table + leb128(len(words))
            + leb128(len(esc)) + b"".join(v.to_bytes(4, "little") for v in x)
            + b"".join(w.to_bytes(2, "little") for w in words) + esc)


def decode_stream(data: bytes, pos: int, end: int, count: int, precision: int, nstates: int,
                  zoff: int, zmax: int) -> list:
    """The values ``z + zoff`` of a stream, each checked against ``zmax``."""
    if count == 0:
        if pos != end:
            raise RefError("bytes in an empty stream")
        return []
    if pos >= end:
        raise RefError("no mode byte")
    mode, pos = data[pos], pos + 1
    if mode == 0:
        z, pos = read_leb128(data, pos, end)
        if pos != end or z + zoff > zmax:
            raise RefError("bad constant stream")
        return [z + zoff] * count
    if mode != 1:
        raise RefError("bad mode")
    m = 1 << precision
    a, pos = read_leb128(data, pos, end)
    if a > m - 1 or (a >= 1 and a - 1 + zoff > zmax):
        raise RefError("bad alphabet size")
    if pos >= end:
        raise RefError("no table order")
    k, pos = data[pos], pos + 1
    if k > 20:
        raise RefError("bad table order")
    tlen, pos = read_leb128(data, pos, end)
    if tlen > end - pos:
        raise RefError("table past end")
    freqs = read_table(data, pos, pos + tlen, k, a + 1)
    pos += tlen
    if min(freqs) < 0 or max(freqs) > m or sum(freqs) != m:
        raise RefError("bad frequencies")
    nwords, pos = read_leb128(data, pos, end)
    nesc, pos = read_leb128(data, pos, end)
    if 4 * nstates + 2 * nwords + nesc != end - pos or nwords > count:
        raise RefError("bad lengths")
    x = [int.from_bytes(data[pos + 4 * j:pos + 4 * j + 4], "little") for j in range(nstates)]
    if min(x) < RANS_L:
        raise RefError("bad initial state")
    wpos = pos + 4 * nstates
    wend = epos = wpos + 2 * nwords
    cum = [sum(freqs[:s]) for s in range(a + 1)]
    slot_sym = [s for s in range(a + 1) for _ in range(freqs[s])]
    out = []
    for i in range(count):
        j = i % nstates
        slot = x[j] & (m - 1)
        s = slot_sym[slot]
        x[j] = freqs[s] * (x[j] >> precision) + slot - cum[s]
        if s == a:
            v, epos = read_leb128(data, epos, end)
            z = a + v
        else:
            z = s
        if z + zoff > zmax:
            raise RefError("escape out of range")
        out.append(z + zoff)
        if x[j] < RANS_L:
            if wpos + 2 > wend:
                raise RefError("words exhausted")
            x[j] = (x[j] << 16) | data[wpos] | (data[wpos + 1] << 8)
            wpos += 2
    if any(v != RANS_L for v in x) or wpos != wend or epos != end:
        raise RefError("bad final state or leftover data")
    return out


# ---------------------------------------------------------------- codecs


def _z_of(arr: np.ndarray) -> list:
    signed = arr.dtype.kind == "i"
    return [zigzag(int(v)) if signed else int(v) for v in arr.reshape(-1)]


def _values(zs: list, dtype: np.dtype) -> np.ndarray:
    signed = dtype.kind == "i"
    return np.array([unzigzag(z) if signed else z for z in zs], dtype=object).astype(dtype)


def encode_ans(arr: np.ndarray, precision: int, nstates: int) -> bytes:
    return encode_stream(_z_of(np.asarray(arr)), precision, nstates)


def decode_ans(data: bytes, dtype, shape, precision: int, nstates: int) -> np.ndarray:
    dtype = np.dtype(dtype)
    n = int(np.prod(shape))
    zs = decode_stream(bytes(data), 0, len(data), n, precision, nstates, 0, (1 << 8 * dtype.itemsize) - 1)
    return _values(zs, dtype).reshape(shape)


def encode_zerorun(arr: np.ndarray, precision: int, nstates: int) -> bytes:
    flat = [int(v) for v in np.asarray(arr).reshape(-1)]
    if not flat:
        return b""
    signed = np.asarray(arr).dtype.kind == "i"
    runs, vals, run = [], [], 0
    for v in flat:
        if v == 0:
            run += 1
        else:
            runs.append(run)
            vals.append((zigzag(v) if signed else v) - 1)
            run = 0
    if not vals:
        return leb128(0)
    rs = encode_stream(runs, precision, nstates)
    return leb128(len(vals)) + leb128(len(rs)) + rs + encode_stream(vals, precision, nstates)


def decode_zerorun(data: bytes, dtype, shape, precision: int, nstates: int) -> np.ndarray:
    data = bytes(data)
    dtype = np.dtype(dtype)
    n = int(np.prod(shape))
    if n == 0:
        if data:
            raise RefError("bytes for an empty tensor")
        return np.zeros(shape, dtype)
    m, pos = read_leb128(data, 0, len(data))
    if m > n:
        raise RefError("too many nonzeros")
    if m == 0:
        if pos != len(data):
            raise RefError("trailing bytes")
        return np.zeros(shape, dtype)
    rlen, pos = read_leb128(data, pos, len(data))
    if rlen > len(data) - pos:
        raise RefError("run stream past end")
    runs = decode_stream(data, pos, pos + rlen, m, precision, nstates, 0, n - m)
    zs = decode_stream(data, pos + rlen, len(data), m, precision, nstates, 1, (1 << 8 * dtype.itemsize) - 1)
    out = [0] * n
    p = 0
    for r, z in zip(runs, zs):
        p += r
        if p >= n:
            raise RefError("runs past the end")
        out[p] = z
        p += 1
    return _values(out, dtype).reshape(shape)
