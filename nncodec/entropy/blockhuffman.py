"""Block Huffman: canonical Huffman coding of byte sequences (spec/codecs/planes-huffman.md).

Two block formats, both used by the ``planes`` codec:

* a **Huffman block** codes ``n`` bytes with one code: a code-length table,
  then 4 interleaved bitstreams over 4 segments of the input;
* a **context block** codes ``n`` bytes given ``n`` context bytes: each context
  value selects one of up to 256 code tables.

Code lengths are at most :data:`MAX_LEN` = 12 bits, so decoding takes at most
one lookup in a 4096-entry table per symbol (one lookup yields up to 4 symbols
when codes are short). The compiled kernels live in
:mod:`nncodec.kernels.huffman` and are imported on first use; every function
here checks its input completely before a kernel runs, so damaged or hostile
data raises :class:`~nncodec.errors.CorruptError` and never reaches a kernel
with out-of-range offsets.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import CorruptError
from .stats import entropy_bits
from .varint import read_varint, write_varint

MAX_LEN = 12  #: longest code length in bits
TABLE_SIZE = 1 << MAX_LEN
NSTREAMS = 4  #: bitstreams (and input segments) per block
PAD = 8  #: readable bytes a decode buffer needs after its last stream
VARINT_MAX_LEN = 9  #: longest stream-size varint (values below 2**63)


def kernels():
    """The compiled kernels module (imported, and so compiled, on first use)."""
    from ..kernels import huffman

    return huffman


# ------------------------------------------------------------------ small parts


def segment_bounds(n: int) -> np.ndarray:
    """Bounds of the 4 segments of ``n`` symbols: segment k has ``n//4 + (k < n%4)`` symbols."""
    q, r = divmod(n, NSTREAMS)
    b = [0]
    for k in range(NSTREAMS):
        b.append(b[k] + q + (1 if k < r else 0))
    return np.array(b, np.int64)



def as_u8(buf) -> np.ndarray:
    """A read-only uint8 view of bytes, bytearray, memoryview or an array."""
    if isinstance(buf, np.ndarray):
        return buf.reshape(-1).view(np.uint8)
    return np.frombuffer(buf, np.uint8)


# ----------------------------------------------------------------- code lengths


def code_lengths(counts) -> np.ndarray:
    """Optimal code lengths (uint8[256], at most MAX_LEN) for 256 symbol counts.

    Unused symbols get 0; a single used symbol gets 1.
    """
    counts = np.ascontiguousarray(counts, dtype=np.int64)
    if counts.shape != (256,) or (counts < 0).any():
        raise ValueError("counts must be 256 non-negative integers")
    return kernels().package_merge(counts, MAX_LEN)


def canonical_codes(lens: np.ndarray) -> np.ndarray:
    """Canonical codes (uint64[256]) for code lengths: by (length, symbol), counting up."""
    lens = np.asarray(lens, dtype=np.int64)
    codes = np.zeros(256, np.uint64)
    used = np.nonzero(lens)[0]
    if len(used) <= 1:
        return codes  # one symbol: zero bits
    order = used[np.lexsort((used, lens[used]))]
    span = np.left_shift(1, MAX_LEN - lens[order])
    start = np.concatenate(([0], np.cumsum(span)[:-1]))
    codes[order] = (start >> (MAX_LEN - lens[order])).astype(np.uint64)
    return codes


def coding_lengths(lens: np.ndarray) -> np.ndarray:
    """Bits each symbol costs in the bitstream: the code length, or 0 for a lone symbol."""
    lens = np.asarray(lens, dtype=np.int64)
    if np.count_nonzero(lens) == 1:
        return np.zeros(256, np.int64)
    return lens


def table_bytes(lens: np.ndarray) -> bytes:
    """The stored code-length table: first symbol, last symbol, 4-bit lengths (low nibble first)."""
    used = np.nonzero(lens)[0]
    first, last = int(used[0]), int(used[-1])
    ls = np.asarray(lens[first:last + 1], dtype=np.uint8)
    if len(ls) % 2:
        ls = np.append(ls, np.uint8(0))
    packed = ls[0::2] | (ls[1::2] << 4)
    return bytes((first, last)) + packed.tobytes()


def table_size(lens: np.ndarray) -> int:
    used = np.nonzero(lens)[0]
    return 2 + (int(used[-1]) - int(used[0]) + 2) // 2


#: blocks of fewer symbols decode one symbol per lookup (no multi-symbol table to build)
MULTI_MIN_N = 1 << 14


def parse_table(buf: np.ndarray, pos: int, end: int, what: str) -> tuple[np.ndarray, int]:
    """Read and check one code-length table from ``buf[pos:end]``; return (lens, new pos).

    Plain Python on at most 130 bytes: cheaper than NumPy calls for a table this small.
    """
    if end - pos < 2:
        raise CorruptError(f"{what}: data ends inside a code-length table at byte {pos}")
    first, last = int(buf[pos]), int(buf[pos + 1])
    if first > last:
        raise CorruptError(f"{what}: code-length table at byte {pos} has first symbol {first} > last symbol {last}")
    count = last - first + 1
    nbytes = (count + 1) // 2
    if end - pos - 2 < nbytes:
        raise CorruptError(f"{what}: data ends inside the code-length table at byte {pos}")
    packed = bytes(buf[pos + 2:pos + 2 + nbytes])
    nib = []
    for b in packed:
        nib.append(b & 15)
        nib.append(b >> 4)
    if count % 2 and nib[-1]:
        raise CorruptError(f"{what}: code-length table at byte {pos} has a nonzero padding nibble")
    del nib[count:]
    top = max(nib)
    if top > MAX_LEN:
        raise CorruptError(f"{what}: code-length table at byte {pos} has a length {top} > {MAX_LEN}")
    if nib[0] == 0 or nib[-1] == 0:
        raise CorruptError(f"{what}: code-length table at byte {pos} has an unused first or last symbol")
    used = [v for v in nib if v]
    if len(used) == 1:
        if used[0] != 1:
            raise CorruptError(
                f"{what}: code-length table at byte {pos}: a lone symbol must have length 1, found {used[0]}"
            )
    else:
        kraft = sum(1 << (MAX_LEN - v) for v in used)
        if kraft != TABLE_SIZE:
            raise CorruptError(
                f"{what}: code-length table at byte {pos} is not a complete prefix code "
                f"(Kraft sum {kraft}/{TABLE_SIZE})"
            )
    lens = np.zeros(256, np.uint8)
    lens[first:last + 1] = nib
    return lens, pos + 2 + nbytes


def decode_table(lens: np.ndarray) -> np.ndarray:
    """The lookup table (uint16[4096], ``symbol << 4 | bits``) of checked code lengths."""
    lens = np.asarray(lens, dtype=np.int64)
    used = np.nonzero(lens)[0]
    if len(used) == 1:
        return np.full(TABLE_SIZE, used[0] << 4, np.uint16)
    order = used[np.lexsort((used, lens[used]))]
    span = np.left_shift(1, MAX_LEN - lens[order])
    return np.repeat(((order << 4) | lens[order]).astype(np.uint16), span)


# ---------------------------------------------------------------- huffman block


@dataclasses.dataclass
class BlockPlan:
    """What the encoder knows before writing a Huffman block: lengths and exact sizes."""

    lens: np.ndarray  # uint8[256]
    stream_sizes: np.ndarray  # int64[4]
    size: int  # bytes of the whole block


def _stream_sizes(bits: np.ndarray) -> np.ndarray:
    return (np.asarray(bits, dtype=np.int64) + 7) // 8


def _sizes_header(sizes) -> bytes:
    return b"".join(write_varint(int(s)) for s in sizes[:NSTREAMS - 1])


def plan_block(data: np.ndarray, hist4: np.ndarray | None = None) -> BlockPlan:
    """Code lengths and the exact size of the Huffman block for ``data`` (1 or more bytes)."""
    data = as_u8(data)
    if hist4 is None:
        hist4 = kernels().histogram4(np.ascontiguousarray(data), segment_bounds(len(data)))
    lens = code_lengths(hist4.sum(axis=0))
    bits = hist4 @ coding_lengths(lens)
    sizes = _stream_sizes(bits)
    size = table_size(lens) + len(_sizes_header(sizes)) + int(sizes.sum())
    return BlockPlan(lens, sizes, size)


def encode_block(data, plan: BlockPlan | None = None) -> bytes:
    """A Huffman block coding ``data`` (at least 1 byte)."""
    data = np.ascontiguousarray(as_u8(data))
    if plan is None:
        plan = plan_block(data)
    out = np.empty(plan.size + PAD, np.uint8)
    end = write_block(data, plan, out, 0)
    return out[:end].tobytes()


def write_block(data: np.ndarray, plan: BlockPlan, out: np.ndarray, pos: int) -> int:
    """Write the Huffman block of ``plan`` at ``out[pos:]``; return its end.

    ``out`` must have PAD bytes of room after the block's end.
    """
    n = len(data)
    if n == 0:
        raise ValueError("a Huffman block codes at least one symbol")
    if len(out) < pos + plan.size + PAD:
        raise ValueError("output buffer too small")
    head = table_bytes(plan.lens) + _sizes_header(plan.stream_sizes)
    out[pos:pos + len(head)] = np.frombuffer(head, np.uint8)
    pos += len(head)
    total = int(plan.stream_sizes.sum())
    if total:
        ob = pos + np.concatenate(([0], np.cumsum(plan.stream_sizes))).astype(np.int64)
        ends = kernels().encode4(data, segment_bounds(n), encode_table(plan.lens), out, ob)
        if not np.array_equal(ends, ob[1:]):
            raise AssertionError("Huffman encoder wrote a size other than planned")
    return pos + total


def encode_table(lens: np.ndarray) -> np.ndarray:
    """Encoder lookup table (uint64[256]): ``code << 8 | bits`` per symbol."""
    return (canonical_codes(lens) << np.uint64(8)) | coding_lengths(lens).astype(np.uint64)


def multi_table(single: np.ndarray) -> tuple[np.ndarray, float]:
    """Multi-symbol decode table from a single-symbol one, and its mean symbols per lookup.

    Entry for a 12-bit window: the symbols (up to 4) whose codes lie wholly in
    it, one byte each from bit 0, their total length << 32 and their count << 40.
    """
    return kernels().multi_table(np.ascontiguousarray(single, dtype=np.uint16))


#: mean symbols per lookup from which the multi-symbol decoder is faster
MULTI_MIN = 1.6


def _stream_layout(buf: np.ndarray, pos: int, end: int, what: str) -> np.ndarray:
    """Read the 3 stream sizes; return the 5 stream bounds (absolute offsets into buf)."""
    sizes = []
    for _ in range(NSTREAMS - 1):
        s, pos = read_varint(buf, pos, end, what, max_len=VARINT_MAX_LEN)
        sizes.append(s)
    rest = end - pos - sum(sizes)
    if rest < 0:
        raise CorruptError(f"{what}: stream sizes {sizes} add up to more than the {end - pos} bytes left")
    bounds = [pos]
    for s in sizes:
        bounds.append(bounds[-1] + s)
    bounds.append(end)
    return np.array(bounds, np.int64)


def _padded_streams(buf: np.ndarray, sb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Copy the streams into a buffer with PAD zero bytes after them; rebase the bounds."""
    lo, hi = int(sb[0]), int(sb[-1])
    pb = np.zeros(hi - lo + PAD, np.uint8)
    pb[:hi - lo] = buf[lo:hi]
    return pb, sb - lo


def _check_ends(pb: np.ndarray, sb: np.ndarray, status: int, bitpos: np.ndarray, what: str) -> None:
    if status >= 0:
        raise CorruptError(f"{what}: bitstream {status} runs past its end")
    for k in range(NSTREAMS):
        used = int(bitpos[k]) - 8 * int(sb[k])
        size = int(sb[k + 1] - sb[k])
        if (used + 7) // 8 != size:
            raise CorruptError(f"{what}: bitstream {k} is {size} bytes but its symbols take {used} bits")
        if used % 8 and int(pb[sb[k + 1] - 1]) & ((1 << (8 - used % 8)) - 1):
            raise CorruptError(f"{what}: bitstream {k} has nonzero padding bits")


def _decode_start(data, n: int, out, what: str, kind: str):
    """``(bytes as uint8, their count, output buffer)``; a block codes at least one symbol."""
    if n == 0:
        raise CorruptError(f"{what}: {kind} must code at least one symbol")
    return as_u8(data), len(as_u8(data)), np.empty(n, np.uint8) if out is None else out


def decode_block(data, n: int, what: str, out: np.ndarray | None = None) -> np.ndarray:
    """Decode a Huffman block (all of ``data``) into ``n`` bytes; raise CorruptError if it is not one."""
    buf, end, out = _decode_start(data, n, out, what, "a Huffman block")
    lens, pos = parse_table(buf, 0, end, what)
    sb = _stream_layout(buf, pos, end, what)
    if np.count_nonzero(lens) == 1:
        if sb[-1] != sb[0]:
            raise CorruptError(f"{what}: a one-symbol code has empty bitstreams, found {int(sb[-1] - sb[0])} bytes")
        out[:] = np.nonzero(lens)[0][0]
        return out
    pb, sb = _padded_streams(buf, sb)
    bitpos = np.zeros(NSTREAMS, np.int64)
    single = decode_table(lens)
    mean = 0.0
    if n >= MULTI_MIN_N:  # building the multi-symbol table pays off only on long blocks
        mtable, mean = kernels().multi_table(single)
    if mean >= MULTI_MIN:
        status = kernels().decode4_multi(pb, sb, single, mtable, out, segment_bounds(n), bitpos)
    else:
        status = kernels().decode4(pb, sb, single, out, segment_bounds(n), bitpos)
    _check_ends(pb, sb, status, bitpos, what)
    return out


# --------------------------------------------------------------- context block


@dataclasses.dataclass
class ContextPlan:
    """Context block choices: the context range, the map, the tables and exact sizes."""

    first: int
    last: int
    cmap: np.ndarray  # uint8[256]: context value -> table index
    lens: np.ndarray  # uint8[T, 256]
    stream_sizes: np.ndarray  # int64[4]
    size: int


def plan_context(data, ctx, hist: np.ndarray | None = None) -> ContextPlan:
    """Choose tables for coding ``data`` given the context bytes ``ctx`` (same length).

    A context value gets its own table when the ideal saving over the pooled
    distribution exceeds the table's cost; all other context values share table 0.
    """
    data = np.ascontiguousarray(as_u8(data))
    ctx = np.ascontiguousarray(as_u8(ctx))
    n = len(data)
    bounds = segment_bounds(n)
    if hist is None:
        hist = kernels().context_histogram4(data, ctx, bounds)
    tot = hist.sum(axis=0)  # [ctx, sym]
    per_ctx = tot.sum(axis=1)
    present = np.nonzero(per_ctx)[0]
    first, last = int(present[0]), int(present[-1])
    pooled = tot.sum(axis=0)
    with np.errstate(divide="ignore"):
        cost_pooled = -np.log2(np.where(pooled > 0, pooled, 1) / n)  # bits per symbol
    cross = (tot * cost_pooled).sum(axis=1)
    own = entropy_bits(tot)
    nz = tot > 0
    any_nz = nz.any(axis=1)
    lo = np.where(any_nz, nz.argmax(axis=1), 0)
    hi = np.where(any_nz, 255 - nz[:, ::-1].argmax(axis=1), 0)
    table_cost = 8 * (2 + (hi - lo + 2) // 2) + 32  # table bytes plus a margin for Huffman rounding
    own_table = any_nz & (cross - own > table_cost)
    rest = any_nz & ~own_table
    cmap = np.zeros(256, np.uint8)
    tables = []
    if rest.any():
        tables.append(tot[rest].sum(axis=0))
    for c in np.nonzero(own_table)[0]:
        cmap[c] = len(tables)
        tables.append(tot[c])
    lens = np.stack([code_lengths(t) for t in tables])
    clens = np.stack([coding_lengths(ln) for ln in lens])
    bits = np.einsum("kcs,cs->k", hist, clens[cmap])
    sizes = _stream_sizes(bits)
    size = (3 + (last - first + 1) + sum(table_size(ln) for ln in lens)
            + len(_sizes_header(sizes)) + int(sizes.sum()))
    return ContextPlan(first, last, cmap, lens, sizes, size)


def encode_context_block(data, ctx, plan: ContextPlan | None = None) -> bytes:
    """A context block coding ``data`` given ``ctx`` (equal lengths, at least 1)."""
    data = np.ascontiguousarray(as_u8(data))
    ctx = np.ascontiguousarray(as_u8(ctx))
    if plan is None:
        plan = plan_context(data, ctx)
    out = np.empty(plan.size + PAD, np.uint8)
    end = write_context_block(data, ctx, plan, out, 0)
    return out[:end].tobytes()


def write_context_block(data: np.ndarray, ctx: np.ndarray, plan: ContextPlan, out: np.ndarray, pos: int) -> int:
    """Write the context block of ``plan`` at ``out[pos:]`` (PAD bytes of room after it); return its end."""
    n = len(data)
    if n == 0 or len(ctx) != n:
        raise ValueError("a context block codes at least one symbol, with one context byte per symbol")
    if len(out) < pos + plan.size + PAD:
        raise ValueError("output buffer too small")
    ntab = len(plan.lens)
    head = bytearray((plan.first, plan.last, ntab - 1))
    head += plan.cmap[plan.first:plan.last + 1].tobytes()
    for ln in plan.lens:
        head += table_bytes(ln)
    head += _sizes_header(plan.stream_sizes)
    out[pos:pos + len(head)] = np.frombuffer(bytes(head), np.uint8)
    pos += len(head)
    total = int(plan.stream_sizes.sum())
    if total:
        ob = pos + np.concatenate(([0], np.cumsum(plan.stream_sizes))).astype(np.int64)
        table = np.concatenate([encode_table(ln) for ln in plan.lens])
        ends = kernels().encode4_context(data, ctx, plan.cmap, segment_bounds(n), table, out, ob)
        if not np.array_equal(ends, ob[1:]):
            raise AssertionError("context encoder wrote a size other than planned")
    return pos + total


def decode_context_block(data, ctx, what: str, out: np.ndarray | None = None) -> np.ndarray:
    """Decode a context block (all of ``data``) given ``ctx``: ``len(ctx)`` bytes out."""
    ctx = np.ascontiguousarray(as_u8(ctx)).view()
    ctx.flags.writeable = False  # one kernel specialization for every caller
    n = len(ctx)
    buf, end, out = _decode_start(data, n, out, what, "a context block")
    if end < 3:
        raise CorruptError(f"{what}: data ends inside the context block header")
    first, last, ntab = int(buf[0]), int(buf[1]), int(buf[2]) + 1
    if first > last:
        raise CorruptError(f"{what}: context range {first}..{last} is empty")
    pos = 3
    nmap = last - first + 1
    if end - pos < nmap:
        raise CorruptError(f"{what}: data ends inside the context map")
    cm = np.asarray(buf[pos:pos + nmap], dtype=np.uint8)
    pos += nmap
    if int(cm.max()) >= ntab:
        raise CorruptError(f"{what}: context map names table {int(cm.max())} of {ntab}")
    if len(np.unique(cm)) != ntab:
        raise CorruptError(f"{what}: context map leaves some of the {ntab} tables unused")
    cmin, cmax = int(ctx.min()), int(ctx.max())
    if cmin < first or cmax > last:
        raise CorruptError(f"{what}: context values {cmin}..{cmax} fall outside the declared range {first}..{last}")
    lens = []
    for _ in range(ntab):
        ln, pos = parse_table(buf, pos, end, what)
        lens.append(ln)
    sb = _stream_layout(buf, pos, end, what)
    cmap = np.zeros(256, np.uint8)
    cmap[first:last + 1] = cm
    tables = np.concatenate([decode_table(ln) for ln in lens])
    pb, sb = _padded_streams(buf, sb)
    bitpos = np.zeros(NSTREAMS, np.int64)
    status = kernels().decode4_context(pb, sb, tables, cmap, ctx, out, segment_bounds(n), bitpos)
    _check_ends(pb, sb, status, bitpos, what)
    return out


__all__ = [
    "MAX_LEN", "NSTREAMS", "segment_bounds", "code_lengths",
    "canonical_codes", "table_bytes", "parse_table", "decode_table", "plan_block",
    "encode_block", "write_block", "decode_block", "encode_table", "multi_table", "plan_context",
    "encode_context_block", "write_context_block", "decode_context_block",
]
