"""safetensors files, read and written without the safetensors library.

Layout: an 8-byte little-endian header length N, N bytes of JSON
(``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``),
then the tensor bytes. Offsets are relative to the end of the header and must
tile the data exactly, as the safetensors library requires.
"""

from __future__ import annotations

import json
import math
import mmap
import os

import numpy as np

from .. import dtypes
from ..errors import CorruptError, LimitError, TruncatedError, UnsupportedError
from ..format.constants import DEFAULT_LIMITS, Limits
from . import Checkpoint, check_bool

_TO_NAME = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool",
}
_FROM_NAME = {v: k for k, v in _TO_NAME.items()}


def _dupes(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise CorruptError(f"duplicate key {k!r} in the safetensors header")
        d[k] = v
    return d


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
        raw = f.read(n)
        try:
            header = json.loads(raw.decode("utf-8"), object_pairs_hook=_dupes)
        except (UnicodeDecodeError, ValueError) as e:
            raise CorruptError(f"{path}: safetensors header is not valid JSON ({e})") from None
        if not isinstance(header, dict):
            raise CorruptError(f"{path}: safetensors header is not a JSON object")
        md = header.pop("__metadata__", None) or {}
        if not isinstance(md, dict) or not all(isinstance(v, str) for v in md.values()):
            raise CorruptError(f"{path}: safetensors __metadata__ must map strings to strings")
        data_len = size - 8 - n
        entries = []
        for name, e in header.items():
            if not isinstance(e, dict) or set(e) - {"dtype", "shape", "data_offsets"}:
                raise CorruptError(f"{path}: tensor {name!r}: malformed entry {e!r:.100}")
            st = e.get("dtype")
            if st not in _TO_NAME:
                raise UnsupportedError(f"{path}: tensor {name!r}: safetensors dtype {st!r} is not supported")
            shape = e.get("shape")
            offs = e.get("data_offsets")
            if (not isinstance(shape, list) or len(shape) > limits.max_rank
                    or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
                raise CorruptError(f"{path}: tensor {name!r}: bad shape {shape!r:.80}")
            if (not isinstance(offs, list) or len(offs) != 2
                    or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs)
                    or not 0 <= offs[0] <= offs[1] <= data_len):
                raise CorruptError(f"{path}: tensor {name!r}: data_offsets {offs!r:.80} outside the {data_len} data bytes")
            dt = _TO_NAME[st]
            count = math.prod(shape)
            if count > limits.max_elements:
                raise LimitError(f"{path}: tensor {name!r}: {count} elements exceed max_elements={limits.max_elements}")
            if count * dtypes.itemsize(dt) != offs[1] - offs[0]:
                raise CorruptError(
                    f"{path}: tensor {name!r}: {dt}{shape} needs {count * dtypes.itemsize(dt)} bytes, "
                    f"data_offsets span {offs[1] - offs[0]}"
                )
            entries.append((offs[0], offs[1], name, dt, shape))
        # the data must be tiled exactly: no holes, no overlaps
        pos = 0
        for b, e, name, _, _ in sorted(entries, key=lambda t: (t[0], t[1])):
            if b != pos:
                raise CorruptError(f"{path}: tensor {name!r}: data starts at {b}, expected {pos} (hole or overlap)")
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
        tensors[name] = check_bool(arr, f"{path}: tensor {name!r}")
    return Checkpoint(tensors=tensors, metadata=dict(md), format="safetensors")


def write(path, ck: Checkpoint, *, format: str = "safetensors") -> None:
    """Write ``ck``; aliases become copies (safetensors has no shared storage)."""
    header = {}
    user_md = {k: v for k, v in ck.metadata.items() if not k.startswith("nncodec.")}
    if user_md:
        header["__metadata__"] = user_md
    arrays = []
    pos = 0
    for name in ck.names():
        arr, dt = dtypes.as_stored(ck.get(name))
        header[name] = {"dtype": _FROM_NAME[dt], "shape": list(arr.shape), "data_offsets": [pos, pos + arr.nbytes]}
        pos += arr.nbytes
        arrays.append(arr)
    hb = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((-len(hb)) % 8)
    with open(path, "wb") as f:
        f.write(len(hb).to_bytes(8, "little"))
        f.write(hb)
        for arr in arrays:
            f.write(arr.reshape(-1).view(np.uint8).data if arr.size else b"")
