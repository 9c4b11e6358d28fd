"""The exact size of the .nnc file a plan makes, before anything is written.

A whole-file rate target (``bits``, ``size``, ``ratio``) counts every byte of the file
(spec/FORMAT.md sections 2-6): the 16-byte file header, the metadata record, each tensor
record (24-byte prefix, JSON header padded to 8 bytes, payload, padding to 8 bytes), the
alias records, the index record and the 32-byte trailer. The JSON headers are those
:class:`nncodec.api.Writer` writes, so the count is exact, not an estimate.
"""

from __future__ import annotations

import dataclasses

from ..chunks import Pieces
from ..format import jsonutil
from ..format.constants import FILE_HEADER_SIZE, RECORD_PREFIX_SIZE, TRAILER_SIZE, pad_len


@dataclasses.dataclass(frozen=True)
class Layout:
    """What a file holds besides its tensor records: ``prefix_bytes`` before the first tensor
    record (file header and metadata record), and the aliases (name -> target) written after
    the tensors; their targets' records carry ``"aliased": true``."""

    prefix_bytes: int = FILE_HEADER_SIZE
    aliases: dict = dataclasses.field(default_factory=dict)

    @property
    def targets(self) -> set:
        return set(self.aliases.values())


def record_bytes(header: dict, payload_len: int) -> int:
    """Bytes of one record: prefix, padded JSON header, payload and its padding."""
    h = len(jsonutil.dumps(header))
    h += pad_len(RECORD_PREFIX_SIZE + h)
    return RECORD_PREFIX_SIZE + h + payload_len + pad_len(payload_len)


def tensor_header(name: str, dtype: str, shape, pipeline, payload, aliased: bool = False) -> dict:
    """The JSON header :meth:`nncodec.api.Writer.add_encoded` writes for this tensor."""
    h = {"name": name, "dtype": dtype, "shape": [int(d) for d in shape], "pipeline": pipeline.to_json()}
    if aliased:
        h["aliased"] = True
    if isinstance(payload, Pieces):
        h["chunks"] = payload.table()
    return h


def tensor_record_bytes(name: str, coded, aliased: bool = False) -> int:
    """Bytes of the record of a :class:`nncodec.encode.planner.Coded` tensor."""
    return record_bytes(tensor_header(name, coded.dtype, coded.shape, coded.pipeline, coded.payload, aliased),
                        len(coded.payload))


def file_bytes(records: list, layout: Layout = Layout()) -> int:
    """The file's length, given ``records`` = ``[(name, record bytes), ...]`` in file order."""
    pos = layout.prefix_bytes
    offsets = {}
    for name, n in records:
        offsets[name] = pos
        pos += n
    resolved = {}
    for a, t in layout.aliases.items():
        t = resolved.get(t, t)
        pos += record_bytes({"name": a, "target": t}, 0)
        resolved[a] = t
    meta = FILE_HEADER_SIZE if layout.prefix_bytes > FILE_HEADER_SIZE else None
    pos += record_bytes({"tensors": offsets, "aliases": resolved, "metadata": meta}, 0)
    return pos + TRAILER_SIZE
