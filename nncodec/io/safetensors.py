"""safetensors files, read and written without the safetensors library.

Layout: an 8-byte little-endian header length N, N bytes of JSON
(``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``),
then the tensor bytes. Offsets are relative to the end of the header and must
tile the data exactly, as the safetensors library requires.

``F4`` packs two FP4 values per byte and its header shape counts values; it is read
as torch's ``float4_e2m1fn_x2`` (one byte, two values), so the last dimension is
halved on read and doubled on write. ``F6_E2M3`` and ``F6_E3M2`` pack four 6-bit values
in three bytes; they are read as ``float6_e2m3fn_x4`` / ``float6_e3m2fn_x4`` (one element
a byte), the last dimension taken times 3/4 on read and 4/3 on write. Only whole groups
along the last dimension are taken (an FP4 row of even length, an FP6 row of a multiple
of 4 values), so every row starts on a byte.
"""

from __future__ import annotations

import math
import mmap
import os

import numpy as np

from .. import dtypes
from ..errors import CorruptError, LimitError, TruncatedError, UnsupportedError, describe
from ..format import jsonutil
from ..format.constants import DEFAULT_LIMITS, Limits
from . import Checkpoint, check_bool

_TO_NAME = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool",
    "F8_E8M0": "float8_e8m0fnu", "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2FNUZ": "float8_e5m2fnuz",
    "F4": "float4_e2m1fn_x2", "C64": "complex64",
    "F6_E2M3": "float6_e2m3fn_x4", "F6_E3M2": "float6_e3m2fn_x4",
}
_FROM_NAME = {v: k for k, v in _TO_NAME.items()}


#: prefix of the metadata keys nncodec records for itself (SOURCE_FORMAT_KEY,
#: the torch structure, update records ...)
NNCODEC_PREFIX = "nncodec."
#: an input file's own keys in nncodec's namespace are kept under this prefix
#: (escaped on read, unescaped on write): data, never nncodec's records
ESCAPE_PREFIX = "nncodec.input."


def escape_key(key: str) -> str:
    """A metadata key from an input file, kept apart from nncodec's own records."""
    return ESCAPE_PREFIX + key if key.startswith(NNCODEC_PREFIX) else key


def unescape_key(key: str) -> str | None:
    """The input file's key for ``key``, or None for nncodec's own records (not written back)."""
    if key.startswith(ESCAPE_PREFIX):
        return key[len(ESCAPE_PREFIX):]
    if key.startswith(NNCODEC_PREFIX):
        return None
    return key


def _int(v) -> bool:
    return type(v) is int


def _header(path, raw: bytes) -> dict:
    """Parse and check the JSON header; returns {name: entry} plus "__metadata__"."""
    # duplicate keys (tensors or metadata) are refused: the safetensors library keeps the last
    # one, other readers the first, so such a file has two meanings (spec/SECURITY.md)
    header = jsonutil.parse(raw, f"{path}: safetensors header", max_depth=jsonutil.MAX_DEPTH)
    if not isinstance(header, dict):
        raise CorruptError(f"{path}: safetensors header is {describe(header)}, not a JSON object")
    return header


def read(path, *, limits: Limits = DEFAULT_LIMITS) -> Checkpoint:
    path = os.fspath(path)
    size = os.path.getsize(path)
    if size < 8:
        raise TruncatedError(f"{path}: {size} bytes is too short for a safetensors file")
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if n > limits.max_header_bytes:
            raise LimitError(f"{path}: safetensors header of {n} bytes exceeds max_header_bytes={limits.max_header_bytes}")
        if 8 + n > size:
            raise TruncatedError(f"{path}: safetensors header declares {n} bytes but the file has {size - 8} (truncated?)")
        header = _header(path, f.read(n))
        md = header.pop("__metadata__", None)  # null is accepted, like the library
        if md is None:
            md = {}
        if type(md) is not dict or not all(type(v) is str for v in md.values()):
            raise CorruptError(f"{path}: safetensors __metadata__ is {describe(md)}; it must map strings to strings")
        data_len = size - 8 - n
        entries = []
        for name, e in header.items():
            where = f"{path}: tensor {describe(name)}"
            # fields other than these three are ignored, as the safetensors library ignores them
            if type(e) is not dict or not {"dtype", "shape", "data_offsets"} <= set(e):
                raise CorruptError(f"{where}: entry is {describe(e)}; it needs dtype, shape and data_offsets")
            st = e["dtype"]
            if st not in _TO_NAME:
                raise UnsupportedError(f"{where}: safetensors dtype {describe(st)} is not supported; "
                                       f"nncodec reads {', '.join(_TO_NAME)}")
            shape = e["shape"]
            offs = e["data_offsets"]
            if type(shape) is not list or not all(_int(d) and d >= 0 for d in shape):
                raise CorruptError(f"{where}: shape {describe(shape)} is not a list of non-negative integers")
            if len(shape) > limits.max_rank:
                raise LimitError(f"{where}: {len(shape)} dimensions, over max_rank={limits.max_rank}; "
                                 f"raise the limit if the file is trusted")
            if (type(offs) is not list or len(offs) != 2 or not all(_int(o) for o in offs)
                    or not 0 <= offs[0] <= offs[1] <= data_len):
                raise CorruptError(f"{where}: data_offsets {describe(offs)} outside the {data_len} data bytes")
            dt = _TO_NAME[st]
            packed = dtypes.PACKED.get(dt)
            if packed is not None:  # the header counts values; `vals` of them fill `nb` bytes
                vals, nb = packed
                if not shape or shape[-1] % vals:
                    group = "per byte" if nb == 1 else f"in {nb} bytes"
                    raise UnsupportedError(
                        f"{where}: {st} shape {shape} does not pack {vals} values {group} along its last "
                        f"dimension (it must be a multiple of {vals}, so that each row starts on a byte); "
                        f"nncodec stores {st} as {dt}, whose elements are the packed bytes")
                shape = shape[:-1] + [shape[-1] // vals * nb]
            count = 1
            for d in shape:  # checked as formed: no product of a thousand large dims is computed
                count *= d
                if count > limits.max_elements:
                    break
            if count > limits.max_elements:
                raise LimitError(f"{where}: more than max_elements={limits.max_elements} elements")
            if count * dtypes.itemsize(dt) != offs[1] - offs[0]:
                raise CorruptError(
                    f"{where}: {dt}{tuple(shape)} needs {count * dtypes.itemsize(dt)} bytes, "
                    f"data_offsets span {offs[1] - offs[0]}"
                )
            entries.append((offs[0], offs[1], name, dt, shape))
        # the data must be tiled exactly: no holes, no overlaps
        pos = 0
        for b, e, name, _, _ in sorted(entries, key=lambda t: (t[0], t[1])):
            if b != pos:
                raise CorruptError(f"{path}: tensor {describe(name)}: data starts at {b}, expected {pos} (hole or overlap)")
            pos = e
        if pos != data_len:
            raise CorruptError(f"{path}: {data_len - pos} bytes after the last tensor are not described by the header")
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size > 8 + n else None
    tensors = {}
    base = 8 + n
    # header order is not meaningful in safetensors; keep the data order
    for b, e, name, dt, shape in sorted(entries, key=lambda t: (t[0], t[1])):
        count = math.prod(shape)
        if count == 0:
            arr = np.zeros(shape, dtype=dtypes.to_numpy(dt))
        else:
            arr = np.frombuffer(mm, dtype=dtypes.to_numpy(dt), count=count, offset=base + b).reshape(shape)
        tensors[name] = check_bool(arr, f"{path}: tensor {describe(name)}")
    # the file's metadata is data: keys in nncodec's namespace are escaped, so an input cannot
    # pose as nncodec's records (the recorded torch structure, the source format ...)
    metadata = {escape_key(k): v for k, v in md.items()}
    return Checkpoint(tensors=tensors, metadata=metadata, format="safetensors")


def header_bytes(entries, metadata: dict) -> bytes:
    """The 8-byte length and padded JSON header of a file holding ``entries`` ((name, stored
    dtype name, shape) in data order, packed without gaps) and ``metadata`` (a checkpoint's,
    nncodec's own keys left out). What :func:`write` writes before the data."""
    header = {}
    user_md = {}
    for k, v in metadata.items():
        key = unescape_key(k)
        if key is not None:
            user_md[key] = v
    if user_md:
        header["__metadata__"] = user_md
    pos = 0
    for name, dt, shape in entries:
        n = math.prod(shape) * dtypes.itemsize(dt)
        shape = list(shape)
        packed = dtypes.PACKED.get(dt)
        if packed is not None:  # the header counts values (as the safetensors library writes it)
            vals, nb = packed
            if not shape:
                raise UnsupportedError(f"tensor {describe(name)}: a 0-d {dt} has no {_FROM_NAME[dt]} shape")
            if shape[-1] % nb:
                raise UnsupportedError(
                    f"tensor {describe(name)}: {dt} shape {tuple(shape)} has a last dimension that is not "
                    f"a multiple of {nb} bytes, so its rows are not whole groups of {vals} "
                    f"{_FROM_NAME[dt]} values; write npz or .nnc instead")
            shape[-1] = shape[-1] // nb * vals
        header[name] = {"dtype": _FROM_NAME[dt], "shape": shape, "data_offsets": [pos, pos + n]}
        pos += n
    hb = jsonutil.dumps(header)  # UsageError for a name or value no UTF-8 file can hold
    hb += b" " * ((-len(hb)) % 8)
    return len(hb).to_bytes(8, "little") + hb


def write(path, ck: Checkpoint, *, format: str = "safetensors") -> None:
    """Write ``ck``; aliases become copies (safetensors has no shared storage)."""
    arrays = [dtypes.as_stored(ck.get(name)) for name in ck.names()]
    head = header_bytes([(name, dt, arr.shape) for name, (arr, dt) in zip(ck.names(), arrays)], ck.metadata)
    with open(path, "wb") as f:
        f.write(head)
        for arr, _ in arrays:
            f.write(arr.reshape(-1).view(np.uint8).data if arr.size else b"")
