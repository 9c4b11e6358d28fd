"""Plain Python/NumPy reference implementations of the ``planes`` and Huffman kernels.

Slow and simple, written from spec/codecs/planes.md and spec/codecs/planes-huffman.md
rather than from the kernels, so tests can check that the kernels produce the
same bytes. Nothing here is used when encoding or decoding.
"""

from __future__ import annotations

import numpy as np

MAX_LEN = 12
NSTREAMS = 4
TRANSFORMS = {"none": 0, "rotl1": 1, "zigzag": 2}


class RefError(Exception):
    """The reference decoder found data the spec says a decoder MUST reject."""


# ----------------------------------------------------------------- byte planes


def transform(words, w: int, name: str) -> list[int]:
    bits = 8 * w
    mask = (1 << bits) - 1
    out = []
    for v in (int(x) for x in words):
        if name == "rotl1":
            v = ((v << 1) | (v >> (bits - 1))) & mask
        elif name == "zigzag":
            v = ((v << 1) ^ (mask if v >> (bits - 1) else 0)) & mask
        out.append(v)
    return out


def untransform(values, w: int, name: str) -> list[int]:
    bits = 8 * w
    mask = (1 << bits) - 1
    out = []
    for v in values:
        if name == "rotl1":
            v = (v >> 1) | ((v & 1) << (bits - 1))
        elif name == "zigzag":
            v = (v >> 1) ^ (mask if v & 1 else 0)
        out.append(v)
    return out


def split_planes(words: np.ndarray, name: str) -> np.ndarray:
    """(w, n) byte planes of the transformed words, most significant first."""
    w = words.dtype.itemsize
    vals = transform(words, w, name)
    planes = np.zeros((w, len(vals)), np.uint8)
    for i, v in enumerate(vals):
        for p in range(w):
            planes[p, i] = (v >> (8 * (w - 1 - p))) & 255
    return planes


def merge_planes(planes: np.ndarray, name: str) -> np.ndarray:
    w, n = planes.shape
    vals = []
    for i in range(n):
        v = 0
        for p in range(w):
            v = (v << 8) | int(planes[p, i])
        vals.append(v)
    return np.array(untransform(vals, w, name), dtype=f"<u{w}")


# ------------------------------------------------------------------ histograms


def segment_bounds(n: int) -> list[int]:
    q, r = divmod(n, NSTREAMS)
    b = [0]
    for k in range(NSTREAMS):
        b.append(b[-1] + q + (1 if k < r else 0))
    return b


def histogram4(data, bounds) -> np.ndarray:
    h = np.zeros((4, 256), np.int64)
    for k in range(4):
        for x in data[bounds[k]:bounds[k + 1]]:
            h[k, int(x)] += 1
    return h


def context_histogram4(data, ctx, bounds) -> np.ndarray:
    h = np.zeros((4, 256, 256), np.int64)
    for k in range(4):
        for i in range(bounds[k], bounds[k + 1]):
            h[k, int(ctx[i]), int(data[i])] += 1
    return h


# ---------------------------------------------------------------- code lengths


def package_merge(counts, max_len: int = MAX_LEN) -> np.ndarray:
    """Length-limited optimal code lengths (the package-merge algorithm, textbook form).

    Leaves are sorted by (count, symbol); in each merge a leaf goes before a
    package of equal weight; the first 2n-2 items of the last list are taken.
    """
    leaves = sorted((int(c), s) for s, c in enumerate(counts) if c > 0)
    lens = np.zeros(256, np.uint8)
    if not leaves:
        return lens
    if len(leaves) == 1:
        lens[leaves[0][1]] = 1
        return lens
    items = [(c, [s]) for c, s in leaves]
    cur = list(items)
    for _ in range(max_len - 1):
        packages = [(cur[2 * i][0] + cur[2 * i + 1][0], cur[2 * i][1] + cur[2 * i + 1][1])
                    for i in range(len(cur) // 2)]
        merged = []
        a = b = 0
        while a < len(items) or b < len(packages):
            if b >= len(packages) or (a < len(items) and items[a][0] <= packages[b][0]):
                merged.append(items[a])
                a += 1
            else:
                merged.append(packages[b])
                b += 1
        cur = merged
    for _, syms in cur[:2 * len(leaves) - 2]:
        for s in syms:
            lens[s] += 1
    return lens


def canonical_codes(lens) -> dict:
    """symbol -> (code, length), assigned in order of (length, symbol), counting up."""
    order = sorted((int(ln), s) for s, ln in enumerate(lens) if ln)
    if len(order) == 1:
        return {order[0][1]: (0, 0)}
    codes = {}
    code = 0
    prev = order[0][0]
    for ln, s in order:
        code <<= ln - prev
        codes[s] = (code, ln)
        code += 1
        prev = ln
    return codes


def table_bytes(lens) -> bytes:
    used = [s for s in range(256) if lens[s]]
    first, last = used[0], used[-1]
    nib = [int(lens[s]) for s in range(first, last + 1)]
    if len(nib) % 2:
        nib.append(0)
    return bytes((first, last)) + bytes(nib[i] | (nib[i + 1] << 4) for i in range(0, len(nib), 2))


def varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


# --------------------------------------------------------------------- streams


def write_stream(symbols, code_of) -> bytes:
    """Concatenate codes MSB-first into bytes; pad the last byte with zero bits."""
    bits = []
    for s in symbols:
        code, ln = code_of(s)
        bits.extend((code >> (ln - 1 - j)) & 1 for j in range(ln))
    bits.extend([0] * (-len(bits) % 8))
    return bytes(int("".join(map(str, bits[i:i + 8])), 2) for i in range(0, len(bits), 8))


def encode_streams(data, lens) -> list[bytes]:
    codes = canonical_codes(lens)
    b = segment_bounds(len(data))
    return [write_stream((int(x) for x in data[b[k]:b[k + 1]]), codes.__getitem__) for k in range(4)]


def encode_context_streams(data, ctx, cmap, tables) -> list[bytes]:
    codes = [canonical_codes(t) for t in tables]
    b = segment_bounds(len(data))
    out = []
    for k in range(4):
        idx = range(b[k], b[k + 1])
        out.append(write_stream(idx, lambda i: codes[cmap[int(ctx[i])]][int(data[i])]))
    return out


def encode_block(data, lens=None) -> bytes:
    """A complete Huffman block (spec/codecs/planes-huffman.md section 3)."""
    if lens is None:
        lens = package_merge(np.bincount(np.asarray(data, np.uint8), minlength=256))
    streams = encode_streams(data, lens)
    return table_bytes(lens) + b"".join(varint(len(s)) for s in streams[:3]) + b"".join(streams)


def encode_context_block(data, ctx, first, last, cmap, tables) -> bytes:
    streams = encode_context_streams(data, ctx, cmap, tables)
    head = bytes((first, last, len(tables) - 1)) + bytes(cmap[c] for c in range(first, last + 1))
    head += b"".join(table_bytes(t) for t in tables)
    return head + b"".join(varint(len(s)) for s in streams[:3]) + b"".join(streams)


# --------------------------------------------------------------------- decoding


class Reader:
    def __init__(self, data: bytes, pos: int = 0, end: int | None = None):
        self.data = bytes(data)
        self.pos = pos
        self.end = len(self.data) if end is None else end

    def byte(self) -> int:
        if self.pos >= self.end:
            raise RefError("data ends early")
        self.pos += 1
        return self.data[self.pos - 1]

    def take(self, n: int) -> bytes:
        if n > self.end - self.pos:
            raise RefError("data ends early")
        self.pos += n
        return self.data[self.pos - n:self.pos]

    def varint(self) -> int:
        v = shift = 0
        for i in range(9):
            b = self.byte()
            v |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                if b == 0 and i > 0:
                    raise RefError("varint not minimal")
                return v
        raise RefError("varint longer than 9 bytes")


def read_table(r: Reader) -> list[int]:
    first, last = r.byte(), r.byte()
    if first > last:
        raise RefError("first > last")
    count = last - first + 1
    raw = r.take((count + 1) // 2)
    nib = []
    for b in raw:
        nib += [b & 15, b >> 4]
    if count % 2 and nib[-1]:
        raise RefError("padding nibble")
    nib = nib[:count]
    if max(nib) > MAX_LEN or nib[0] == 0 or nib[-1] == 0:
        raise RefError("bad length")
    lens = [0] * 256
    lens[first:last + 1] = nib
    used = [x for x in nib if x]
    if len(used) == 1:
        if used[0] != 1:
            raise RefError("lone symbol length")
    elif sum(2 ** (MAX_LEN - x) for x in used) != 2 ** MAX_LEN:
        raise RefError("Kraft")
    return lens


def read_streams(r: Reader) -> list[bytes]:
    sizes = [r.varint() for _ in range(3)]
    if sum(sizes) > r.end - r.pos:
        raise RefError("stream sizes")
    sizes.append(r.end - r.pos - sum(sizes))
    return [r.take(s) for s in sizes]


class BitReader:
    def __init__(self, data: bytes):
        self.data = data
        self.bit = 0

    def read(self) -> int:
        if self.bit >= 8 * len(self.data):
            raise RefError("bitstream ends early")
        b = (self.data[self.bit >> 3] >> (7 - (self.bit & 7))) & 1
        self.bit += 1
        return b

    def finish(self) -> None:
        if (self.bit + 7) // 8 != len(self.data):
            raise RefError("bitstream has unused bytes")
        while self.bit % 8:
            if self.read():
                raise RefError("padding bit set")


def read_symbol(br: BitReader, decode: dict, lone) -> int:
    if lone is not None:
        return lone
    code = ln = 0
    while True:
        code = (code << 1) | br.read()
        ln += 1
        s = decode.get((ln, code))
        if s is not None:
            return s


def _decoder(lens):
    codes = canonical_codes(lens)
    if len(codes) == 1:
        return {}, next(iter(codes))
    return {(ln, c): s for s, (c, ln) in codes.items()}, None


def multi_table(single) -> tuple[np.ndarray, float]:
    """Multi-symbol lookup table (see the kernel of the same name) from a single-symbol one."""
    out = np.zeros(len(single), np.uint64)
    counts = []
    for j in range(len(single)):
        used = ent = cnt = 0
        while cnt < 4:
            e = int(single[(j << used) & (len(single) - 1)])
            if used + (e & 15) > MAX_LEN:
                break
            ent |= (e >> 4) << (8 * cnt)
            used += e & 15
            cnt += 1
        out[j] = ent | (used << 32) | (cnt << 40)
        counts.append(cnt)
    return out, sum(counts) / len(counts)


def decode_block(block: bytes, n: int) -> bytes:
    r = Reader(block)
    if n == 0:
        raise RefError("n = 0")
    lens = read_table(r)
    streams = read_streams(r)
    dec, lone = _decoder(lens)
    out = bytearray()
    b = segment_bounds(n)
    for k in range(4):
        br = BitReader(streams[k])
        for _ in range(b[k], b[k + 1]):
            out.append(read_symbol(br, dec, lone))
        br.finish()
    return bytes(out)


def decode_context_block(block: bytes, ctx) -> bytes:
    r = Reader(block)
    n = len(ctx)
    if n == 0:
        raise RefError("n = 0")
    first, last, ntab = r.byte(), r.byte(), r.byte() + 1
    if first > last:
        raise RefError("context range")
    cm = list(r.take(last - first + 1))
    if max(cm) >= ntab or len(set(cm)) != ntab:
        raise RefError("context map")
    tables = [read_table(r) for _ in range(ntab)]
    streams = read_streams(r)
    decs = [_decoder(t) for t in tables]
    out = bytearray()
    b = segment_bounds(n)
    for k in range(4):
        br = BitReader(streams[k])
        for i in range(b[k], b[k + 1]):
            c = int(ctx[i])
            if not first <= c <= last:
                raise RefError("context value outside range")
            dec, lone = decs[cm[c - first]]
            out.append(read_symbol(br, dec, lone))
        br.finish()
    return bytes(out)


def decode_planes(payload: bytes, itemsize: int, n: int, transform_name: str) -> bytes:
    """Decode a ``planes`` payload to the tensor's little-endian bytes (spec/codecs/planes.md)."""
    import zstandard

    payload = bytes(payload)
    w = itemsize
    if n == 0:
        if payload:
            raise RefError("empty tensor, non-empty payload")
        return b""
    r = Reader(payload)
    layout = r.byte()
    if layout == 0:
        out = r.take(n * w)
    elif layout == 1:
        planes = []
        for p in range(w):
            mode = r.byte()
            if mode == 0:
                planes.append(r.take(n))
            elif mode == 1:
                planes.append(bytes([r.byte()]) * n)
            elif mode in (2, 3, 4):
                body = r.take(r.varint())
                if mode == 2:
                    planes.append(decode_block(body, n))
                elif mode == 3:
                    if p == 0:
                        raise RefError("context on plane 0")
                    planes.append(decode_context_block(body, planes[p - 1]))
                else:
                    if zstandard.get_frame_parameters(body).content_size != n:
                        raise RefError("zstd content size")
                    try:
                        planes.append(zstandard.ZstdDecompressor().decompress(body, allow_extra_data=False))
                    except zstandard.ZstdError as e:
                        raise RefError(str(e)) from None
            else:
                raise RefError("unknown mode")
        arr = np.frombuffer(b"".join(planes), np.uint8).reshape(w, n)
        out = merge_planes(arr, transform_name).tobytes()
    else:
        raise RefError("unknown layout")
    if r.pos != len(payload):
        raise RefError("trailing bytes")
    return out
