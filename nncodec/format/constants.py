"""Constants and limits of format version 1 (spec/FORMAT.md sections 2 and 8)."""

from __future__ import annotations

import dataclasses
import struct

# 0x89 is not ASCII (catches 7-bit transfers), CR LF catches newline conversion,
# 0x1A stops DOS `type`, the final LF catches LF -> CRLF conversion.
FILE_MAGIC = b"\x89NNC\r\n\x1a\n"
END_MAGIC = b"\x89END\r\n\x1a\n"
FORMAT_MAJOR = 1
FORMAT_MINOR = 2  #: 1.1 added chunked tensor records (section 4.2.1), 1.2 dtype names (section 4.3); older files read as before

FILE_HEADER = struct.Struct("<8sBBHI")  # magic, major, minor, flags, crc32 of bytes 0..11
FILE_HEADER_SIZE = FILE_HEADER.size  # 16

RECORD_PREFIX = struct.Struct("<2sBBIQII")  # sync, kind, flags, header_len, payload_len, header_crc, payload_crc
RECORD_PREFIX_SIZE = RECORD_PREFIX.size  # 24
RECORD_SYNC = b"NR"

TRAILER = struct.Struct("<QQII8s")  # index_offset, file_length, reserved, crc, end magic
TRAILER_SIZE = TRAILER.size  # 32

ALIGN = 8

KIND_META = ord("M")
KIND_TENSOR = ord("T")
KIND_ALIAS = ord("A")
KIND_INDEX = ord("I")
KIND_NAMES = {KIND_META: "metadata", KIND_TENSOR: "tensor", KIND_ALIAS: "alias", KIND_INDEX: "index"}


def pad_len(n: int) -> int:
    """Bytes of padding that bring ``n`` up to a multiple of ALIGN."""
    return (-n) % ALIGN


@dataclasses.dataclass(frozen=True)
class Limits:
    """Caps a decoder enforces before it allocates. Raise any of them per call.

    The defaults admit every real checkpoint we know of; a file over a cap
    raises :class:`nncodec.LimitError` naming the cap to raise.
    """

    max_header_bytes: int = 64 << 20  #: JSON header of one record (the index included)
    max_rank: int = 32  #: dimensions of one tensor
    max_elements: int = 1 << 40  #: elements of one tensor
    max_records: int = 10_000_000  #: records in one file
    max_tensor_bytes: int = 1 << 34  #: decoded bytes of one tensor (16 GiB), checked before allocating
    max_expansion: int = 1 << 16  #: decoded bytes per compressed byte of a zip member (npz, torch zip)
    min_expansion_floor: int = 1 << 24  #: zip members of at most this many bytes skip the expansion check
    max_metadata_bytes: int = 16 << 20  #: total size of user metadata keys and values
    max_pickle_bytes: int = 1 << 30  #: pickle stream inside a torch checkpoint

    def replace(self, **kw) -> "Limits":
        for k in kw:
            if not hasattr(self, k):
                from ..errors import UsageError

                raise UsageError(f"unknown limit {k!r}; limits are: {', '.join(f.name for f in dataclasses.fields(self))}")
        return dataclasses.replace(self, **kw)


DEFAULT_LIMITS = Limits()
