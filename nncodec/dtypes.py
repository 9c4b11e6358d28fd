"""The dtypes nncodec stores, by their names in the format.

A dtype name in a file is one of the strings in :data:`DTYPE_NAMES`. In memory
each maps to a NumPy dtype; ``bfloat16`` and the float8 types use the
``ml_dtypes`` package. Values are always stored little-endian.

``float4_e2m1fn_x2`` is torch's packed FP4: one element is a byte holding two
E2M1 values (the first in the low nibble). NumPy has no such type, so it is a
``uint8`` dtype tagged in its ``metadata`` (:data:`PACKED`); the tag survives
views, copies and reshapes, and :func:`from_numpy` reads it.

``float6_e2m3fn_x4`` and ``float6_e3m2fn_x4`` are the packed FP6 of safetensors (``F6_E2M3``,
``F6_E3M2``): four 6-bit values in three bytes. They are tagged ``uint8`` bytes in the same
way; one element is one byte of the packed stream, so the last dimension counts bytes (3/4
of the values). nncodec moves the bytes and never unpacks the values.
"""

from __future__ import annotations

import numpy as np

from .errors import UnsupportedError

# name -> (itemsize in bytes, kind) ; kind: 'f' float, 'i' signed, 'u' unsigned (and packed
# sub-byte floats, whose bytes move as unsigned integers), 'c' complex, 'b' bool
_INFO = {
    "float64": (8, "f"),
    "float32": (4, "f"),
    "float16": (2, "f"),
    "bfloat16": (2, "f"),
    "float8_e4m3fn": (1, "f"),
    "float8_e5m2": (1, "f"),
    "int64": (8, "i"),
    "int32": (4, "i"),
    "int16": (2, "i"),
    "int8": (1, "i"),
    "uint64": (8, "u"),
    "uint32": (4, "u"),
    "uint16": (2, "u"),
    "uint8": (1, "u"),
    "bool": (1, "b"),
    # format 1.2
    "float8_e8m0fnu": (1, "f"),
    "float8_e4m3fnuz": (1, "f"),
    "float8_e5m2fnuz": (1, "f"),
    "float4_e2m1fn_x2": (1, "u"),
    "complex64": (8, "c"),
    "float6_e2m3fn_x4": (1, "u"),
    "float6_e3m2fn_x4": (1, "u"),
}

#: the dtypes format 1.2 added (spec/FORMAT.md 4.3); a 1.1 decoder refuses them
DTYPES_1_2 = ("float8_e8m0fnu", "float8_e4m3fnuz", "float8_e5m2fnuz", "float4_e2m1fn_x2", "complex64",
              "float6_e2m3fn_x4", "float6_e3m2fn_x4")
#: key of the NumPy dtype metadata that tags a packed dtype's uint8 bytes
PACKED_KEY = "nncodec.dtype"
#: packed dtypes: name -> (values, bytes): a group of that many values along the last dimension
#: fills that many bytes (elements); FP4 two values a byte, FP6 four values in three bytes
PACKED = {"float4_e2m1fn_x2": (2, 1), "float6_e2m3fn_x4": (4, 3), "float6_e3m2fn_x4": (4, 3)}

DTYPE_NAMES = tuple(_INFO)

#: the float dtypes the lossy stages take (the float8 types are stored, never quantized)
FLOAT_DTYPES = ("float64", "float32", "float16", "bfloat16")

_ML = {"bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e8m0fnu", "float8_e4m3fnuz", "float8_e5m2fnuz"}
_cache: dict[str, np.dtype] = {}


def itemsize(name: str) -> int:
    return _INFO[check_name(name)][0]


def kind(name: str) -> str:
    return _INFO[check_name(name)][1]


def check_name(name) -> str:
    if not isinstance(name, str) or name not in _INFO:
        raise UnsupportedError(
            f"unknown dtype {name!r:.60}; nncodec stores: {', '.join(DTYPE_NAMES)} "
            f"(a newer nncodec may know it)"
        )
    return name


def to_numpy(name: str) -> np.dtype:
    """The little-endian NumPy dtype for a format dtype name."""
    dt = _cache.get(name)
    if dt is not None:
        return dt
    check_name(name)
    if name in _ML:
        import ml_dtypes

        dt = np.dtype(getattr(ml_dtypes, name))
    elif name in PACKED:
        dt = np.dtype(np.uint8, metadata={PACKED_KEY: name})
    else:
        dt = np.dtype(name).newbyteorder("<")
    _cache[name] = dt
    return dt


def uint_view(name: str) -> np.dtype:
    """Unsigned little-endian integer dtype of the same width (used to move bits)."""
    return np.dtype(f"<u{itemsize(name)}")


def from_numpy(dt: np.dtype) -> str:
    """The format dtype name for a NumPy dtype (any byte order)."""
    dt = np.dtype(dt)
    md = dt.metadata
    if md and md.get(PACKED_KEY) in PACKED and dt.kind == "u" and dt.itemsize == 1:
        return md[PACKED_KEY]
    name = dt.name
    if name in _INFO and (name in _ML or dt.kind != "V"):
        return name
    if dt.kind == "V" or dt.names is not None:
        raise UnsupportedError(f"dtype {dt} (raw bytes or a structure) is not a tensor dtype nncodec stores")
    if dt.kind == "b":
        return "bool"
    raise UnsupportedError(
        f"dtype {dt} is not supported; nncodec stores: {', '.join(DTYPE_NAMES)}"
    )


def as_stored(arr: np.ndarray) -> tuple[np.ndarray, str]:
    """Return ``(array, dtype name)`` with the array C-contiguous and little-endian."""
    arr = np.asarray(arr)
    name = from_numpy(arr.dtype)
    target = to_numpy(name)
    if arr.dtype != target:  # byte order differs
        arr = arr.astype(target)
    if not arr.flags.c_contiguous:
        arr = arr.copy(order="C")  # (np.ascontiguousarray would turn 0-d into 1-d)
    return arr, name


def round_float(values: np.ndarray, name: str) -> np.ndarray:
    """Round float64 or float32 values to the float dtype ``name``, the rule of every lossy stage.

    float64 as is; float32 round-to-nearest-even (RNE); float16 and bfloat16 RNE
    to float32 first, then RNE to the dtype. Overflow gives infinities (callers
    check); no copy is made when the values already have the dtype.
    """
    if name == "float64":
        return values.astype(np.float64, copy=False)
    with np.errstate(over="ignore", invalid="ignore"):
        v32 = values.astype(np.float32, copy=False)
        if name == "float32":
            return v32
        return v32.astype(to_numpy(name))
