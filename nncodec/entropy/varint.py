"""Unsigned LEB128 numbers, the one varint of nncodec payloads.

7 bits per byte, least significant group first, the high bit set on every byte
but the last. Readers accept only the minimal encoding, so a number has exactly
one byte form. Each payload format fixes its own longest varint: 10 bytes
(values below 2**64) in ``ans``, ``zerorun``, ``huffman`` and ``cabac``, 9 bytes
(values below 2**63) in the block-Huffman lengths of ``planes``.
"""

from __future__ import annotations

from ..errors import CorruptError


def write_varint(v: int) -> bytes:
    """The LEB128 bytes of a non-negative integer."""
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def read_varint(buf, pos: int, end: int, what: str, field: str = "a length field",
                max_len: int = 10) -> tuple[int, int]:
    """Read a minimal LEB128 number of at most ``max_len`` bytes from ``buf[pos:end]``.

    Returns ``(value, position after it)``. Raises :class:`CorruptError` naming
    ``what`` and ``field`` when the data ends inside the number, the number is
    not minimally encoded, longer than ``max_len`` bytes, or 2**64 or more.
    """
    v = 0
    shift = 0
    start = pos
    while True:
        if pos >= end:
            raise CorruptError(f"{what}: data ends inside {field} at byte {start} (truncated)")
        b = int(buf[pos])
        pos += 1
        v |= (b & 0x7F) << shift
        if not b & 0x80:
            if b == 0 and pos - start > 1:
                raise CorruptError(f"{what}: {field} at byte {start} is not minimally encoded")
            if v >> 64:
                raise CorruptError(f"{what}: {field} at byte {start} is 2**64 or more")
            return v, pos
        shift += 7
        if pos - start >= max_len:
            raise CorruptError(f"{what}: {field} at byte {start} is longer than {max_len} bytes")
