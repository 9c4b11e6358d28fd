"""Reading and writing the records of a .nnc file (spec/FORMAT.md sections 3-7).

This module knows bytes, records and JSON headers; it does not know codecs.
"""

from __future__ import annotations

import dataclasses
import zlib

from ..errors import CorruptError, FormatError, LimitError, TruncatedError, UnsupportedError
from . import jsonutil
from .constants import (
    ALIGN,
    END_MAGIC,
    FILE_HEADER,
    FILE_HEADER_SIZE,
    FILE_MAGIC,
    FORMAT_MAJOR,
    FORMAT_MINOR,
    KIND_NAMES,
    RECORD_PREFIX,
    RECORD_PREFIX_SIZE,
    RECORD_SYNC,
    TRAILER,
    TRAILER_SIZE,
    Limits,
    pad_len,
)

_ZEROS = bytes(ALIGN)
#: first buffer size of a stream read (see Source.read)
_STREAM_CHUNK = 1 << 20


def crc32(*parts) -> int:
    c = 0
    for p in parts:
        c = zlib.crc32(p, c)
    return c & 0xFFFFFFFF


@dataclasses.dataclass
class Record:
    kind: int
    header: dict
    payload: memoryview
    offset: int  #: where the record starts in the file
    end: int  #: first byte after the record and its padding
    payload_crc: int = 0  #: the stored CRC-32 of the payload (verified unless the reader was told not to)


# --------------------------------------------------------------------- writing


def file_header() -> bytes:
    body = FILE_HEADER.pack(FILE_MAGIC, FORMAT_MAJOR, FORMAT_MINOR, 0, 0)[:12]
    return body + crc32(body).to_bytes(4, "little")


def _nbytes(b) -> int:
    return b.nbytes if isinstance(b, memoryview) else len(b)


def encode_record(kind: int, header: dict, payload=b"", payload_crc: int | None = None) -> list:
    """The byte chunks of one record: prefix, padded header, payload, padding.

    ``payload`` is bytes-like, or a list/tuple of bytes-like parts written one after the
    other (the pieces of a chunked record); ``payload_crc``, if given, is its CRC-32
    (combined from the pieces' CRCs by the caller)."""
    parts = list(payload) if isinstance(payload, (list, tuple)) else [payload]
    hbytes = jsonutil.dumps(header)
    hbytes += b" " * pad_len(RECORD_PREFIX_SIZE + len(hbytes))
    plen = sum(_nbytes(p) for p in parts)
    head16 = RECORD_PREFIX.pack(RECORD_SYNC, kind, 0, len(hbytes), plen, 0, 0)[:16]
    hcrc = crc32(head16, hbytes)
    pcrc = crc32(*parts) if payload_crc is None else payload_crc
    prefix = head16 + hcrc.to_bytes(4, "little") + pcrc.to_bytes(4, "little")
    chunks = [prefix, hbytes]
    chunks.extend(p for p in parts if _nbytes(p))
    p = pad_len(plen)
    if p:
        chunks.append(_ZEROS[:p])
    return chunks


def trailer(index_offset: int, file_length: int) -> bytes:
    body = TRAILER.pack(index_offset, file_length, 0, 0, END_MAGIC)[:20]
    return body + crc32(body).to_bytes(4, "little") + END_MAGIC


# --------------------------------------------------------------------- reading


class Source:
    """Bytes read in order from a buffer (zero copy) or a stream (exact reads)."""

    def __init__(self, buf=None, stream=None, pos: int = 0, what: str = "input"):
        self.buf = memoryview(buf).cast("B") if buf is not None else None
        self.stream = stream
        self.pos = pos
        self.what = what

    def read(self, n: int, field: str) -> memoryview:
        if self.buf is not None:
            end = self.pos + n
            if end > len(self.buf):
                raise TruncatedError(
                    f"{self.what}: truncated: {field} needs {n} bytes at offset {self.pos}, "
                    f"the file has {max(len(self.buf) - self.pos, 0)} left (incomplete download or copy?)"
                )
            out = self.buf[self.pos:end]
            self.pos = end
            return out
        # The buffer grows with the bytes that actually arrive (doubling from
        # _STREAM_CHUNK), so a declared length never allocates by itself: a
        # tiny stream that declares a terabyte payload ends as truncated.
        out = bytearray(min(n, _STREAM_CHUNK))
        got = 0
        while got < n:
            if got == len(out):
                out.extend(bytes(min(n, 2 * len(out)) - len(out)))
            with memoryview(out) as view:
                k = self.stream.readinto(view[got:])
            if not k:
                raise TruncatedError(
                    f"{self.what}: stream ended early: {field} needs {n} bytes at offset {self.pos}, "
                    f"got {got} (connection closed or file cut off?)"
                )
            got += k
        self.pos += n
        return memoryview(out)

    def at_eof(self) -> bool:
        """True when no byte follows (a stream is read one byte ahead: call it last)."""
        if self.buf is not None:
            return self.pos >= len(self.buf)
        return not self.stream.read(1)


def read_file_header(src: Source) -> tuple[int, int]:
    raw = bytes(src.read(FILE_HEADER_SIZE, "file header"))
    magic, major, minor, flags, crc = FILE_HEADER.unpack(raw)
    if magic != FILE_MAGIC:
        hint = ""
        if magic[:4] == FILE_MAGIC[:4]:
            hint = " (the first bytes match: the file was probably changed by a text-mode transfer)"
        raise FormatError(f"{src.what}: not an nncodec file: magic bytes {magic!r} != {FILE_MAGIC!r}{hint}")
    if crc32(raw[:12]) != crc:
        raise CorruptError(f"{src.what}: file header checksum mismatch; the file is damaged")
    if major != FORMAT_MAJOR:
        raise UnsupportedError(
            f"{src.what}: format version {major}.{minor} is not readable by this nncodec "
            f"(reads {FORMAT_MAJOR}.x); upgrade nncodec"
        )
    if flags != 0:
        raise CorruptError(f"{src.what}: file header flags are 0x{flags:04x}, must be 0 in version {FORMAT_MAJOR}")
    return major, minor


def _guess_name(header_bytes, expect_name) -> str:
    """Best effort: the tensor a damaged header belongs to, for the error message."""
    if expect_name is not None:
        return f" (tensor {expect_name!r})"
    try:
        name = jsonutil.loads(header_bytes, "").get("name")
    except Exception:
        return ""
    return f" (tensor {name!r}, by its damaged header)" if isinstance(name, str) else ""


def read_record(src: Source, limits: Limits, *, max_payload: int | None = None, verify_payload: bool = True,
                expect_name: str | None = None) -> Record:
    """Read and verify one record at the source's position.

    The header checksum is always verified; ``verify_payload=False`` skips the
    payload checksum (trusted speed runs only).
    """
    offset = src.pos
    where = f"{src.what}: record at offset {offset}"
    prefix = bytes(src.read(RECORD_PREFIX_SIZE, "record prefix"))
    sync, kind, flags, hlen, plen, hcrc, pcrc = RECORD_PREFIX.unpack(prefix)
    if sync != RECORD_SYNC:
        raise CorruptError(f"{where}: bad record sync bytes {sync!r} (expected {RECORD_SYNC!r}); the file is damaged")
    if hlen > limits.max_header_bytes:
        raise LimitError(
            f"{where}: header of {hlen} bytes exceeds max_header_bytes={limits.max_header_bytes} "
            f"(corrupt, or raise the limit for a legitimately huge index)"
        )
    header_bytes = src.read(hlen, "record header")
    if crc32(prefix[:16], header_bytes) != hcrc:
        raise CorruptError(f"{where}{_guess_name(header_bytes, expect_name)}: record header checksum mismatch; the file is damaged")
    if flags != 0:
        raise CorruptError(f"{where}: record flags are 0x{flags:02x}, must be 0 in version 1")
    if (RECORD_PREFIX_SIZE + hlen) % ALIGN:
        raise CorruptError(f"{where}: header length {hlen} breaks {ALIGN}-byte alignment")
    header = jsonutil.loads(header_bytes, where)
    name = header.get("name")
    if isinstance(name, str):
        where = f"{src.what}: tensor {name!r}"
    if max_payload is not None and plen > max_payload:
        raise TruncatedError(
            f"{where}: payload of {plen} bytes runs past the end of the data ({max_payload} bytes left); "
            f"the file is truncated or damaged"
        )
    payload = src.read(plen, f"payload of {KIND_NAMES.get(kind, 'record')}")
    if verify_payload and crc32(payload) != pcrc:
        raise CorruptError(f"{where}: payload checksum mismatch (crc32); the stored bytes are damaged")
    pad = src.read(pad_len(plen), "record padding")
    if any(pad):
        raise CorruptError(f"{where}: padding bytes after the payload are not zero")
    return Record(kind, header, payload, offset, src.pos, pcrc)


def read_trailer(buf: memoryview, what: str) -> int:
    """Check the trailer at the end of a whole file; return the index offset."""
    n = len(buf)
    if n < FILE_HEADER_SIZE + TRAILER_SIZE:
        raise TruncatedError(f"{what}: {n} bytes is too short to be an nncodec file (truncated?)")
    raw = bytes(buf[n - TRAILER_SIZE:])
    index_offset, file_length, reserved, crc, magic = TRAILER.unpack(raw)
    if magic != END_MAGIC or crc32(raw[:20]) != crc:
        raise TruncatedError(
            f"{what}: no valid trailer at the end of the file: it is truncated (an incomplete download?) "
            f"or has bytes appended; tensors before the damage can be recovered with "
            f"`nncodec decode --salvage` or nncodec.iter_decode(..., salvage=True)"
        )
    if file_length != n:
        raise CorruptError(
            f"{what}: trailer says the file is {file_length} bytes but it is {n}; "
            f"it was truncated or other data was concatenated to it"
        )
    if reserved != 0:
        raise CorruptError(f"{what}: trailer reserved field is {reserved}, must be 0")
    if not (FILE_HEADER_SIZE <= index_offset <= n - TRAILER_SIZE - RECORD_PREFIX_SIZE) or index_offset % ALIGN:
        raise CorruptError(f"{what}: trailer index offset {index_offset} is outside the file or misaligned")
    return index_offset


def check_trailer_bytes(raw: bytes, index_offset: int, file_length: int, what: str) -> None:
    """Stream reading: the trailer must point back at the index we just read."""
    got_index, got_len, reserved, crc, magic = TRAILER.unpack(raw)
    if magic != END_MAGIC or crc32(raw[:20]) != crc:
        raise CorruptError(f"{what}: the trailer after the index is damaged")
    if got_index != index_offset or got_len != file_length or reserved != 0:
        raise CorruptError(
            f"{what}: trailer (index at {got_index}, length {got_len}) does not match the stream "
            f"(index at {index_offset}, length {file_length})"
        )
