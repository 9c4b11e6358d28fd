"""Structure-aware helpers for .nnc bytes: walk records and recompute checksums.

A random byte change almost always breaks a CRC-32, so a plain fuzzer spends
its time on the checksum checks. :func:`fix_crcs` rewrites every checksum of
a mutated file (file header, each record it can walk, trailer) so the mutation
reaches the JSON, index and codec parsers behind them.
"""

from __future__ import annotations

import struct
import zlib

from nncodec.format.constants import (
    END_MAGIC,
    FILE_HEADER_SIZE,
    RECORD_PREFIX,
    RECORD_PREFIX_SIZE,
    TRAILER_SIZE,
    pad_len,
)


def _crc(*parts) -> int:
    c = 0
    for p in parts:
        c = zlib.crc32(p, c)
    return c & 0xFFFFFFFF


def records(buf) -> list:
    """``(offset, kind, header_len, payload_len)`` of each record that fits, from offset 16."""
    out = []
    pos = FILE_HEADER_SIZE
    n = len(buf)
    while pos + RECORD_PREFIX_SIZE <= n:
        sync, kind, _flags, hlen, plen, _hc, _pc = RECORD_PREFIX.unpack_from(buf, pos)
        if sync != b"NR":
            break
        end = pos + RECORD_PREFIX_SIZE + hlen + plen
        if pos + RECORD_PREFIX_SIZE + hlen <= n < end:  # the header fits, the payload runs past the end
            out.append((pos, kind, hlen, plen))
        if end > n:
            break
        out.append((pos, kind, hlen, plen))
        pos = end + pad_len(plen)
    return out


def fix_crcs(data, *, fix_length: bool = True) -> bytes:
    """``data`` with the file header, record and trailer checksums recomputed.

    With ``fix_length`` the trailer's ``file_length`` is set to the real length
    when the data ends with the end magic.
    """
    buf = bytearray(data)
    if len(buf) >= FILE_HEADER_SIZE:
        struct.pack_into("<I", buf, 12, _crc(bytes(buf[:12])))
    for pos, _kind, hlen, plen in records(buf):
        h0 = pos + RECORD_PREFIX_SIZE
        hcrc = _crc(bytes(buf[pos:pos + 16]), bytes(buf[h0:h0 + hlen]))
        if h0 + hlen + plen <= len(buf):
            pcrc = _crc(bytes(buf[h0 + hlen:h0 + hlen + plen]))
            struct.pack_into("<II", buf, pos + 16, hcrc, pcrc)
        else:
            struct.pack_into("<I", buf, pos + 16, hcrc)
    if len(buf) >= FILE_HEADER_SIZE + TRAILER_SIZE and bytes(buf[-8:]) == END_MAGIC:
        t = len(buf) - TRAILER_SIZE
        if fix_length:
            struct.pack_into("<Q", buf, t + 8, len(buf))
        struct.pack_into("<I", buf, t + 20, _crc(bytes(buf[t:t + 20])))
    return bytes(buf)


def set_header(data, offset: int, header: bytes, payload: bytes | None = None) -> bytes:
    """Replace the JSON header (and optionally the payload) of the record at ``offset``.

    Pads the header to keep alignment, shifts what follows and does *not* fix
    the index offsets or CRCs (call :func:`fix_crcs`, and rebuild the index
    if the record's size changed).
    """
    buf = bytes(data)
    sync, kind, flags, hlen, plen, hc, pc = RECORD_PREFIX.unpack_from(buf, offset)
    h = header + b" " * pad_len(RECORD_PREFIX_SIZE + len(header))
    old_payload = buf[offset + RECORD_PREFIX_SIZE + hlen: offset + RECORD_PREFIX_SIZE + hlen + plen]
    p = old_payload if payload is None else payload
    prefix = RECORD_PREFIX.pack(sync, kind, flags, len(h), len(p), hc, pc)
    end = offset + RECORD_PREFIX_SIZE + hlen + plen + pad_len(plen)
    return buf[:offset] + prefix + h + p + bytes(pad_len(len(p))) + buf[end:]
