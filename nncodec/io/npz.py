"""NumPy .npz archives, read without pickle.

NumPy has no bfloat16 or float8: such arrays are written as unsigned integers
of the same width and their dtype is recorded in a ``__nncodec_dtypes__.npy``
member (a JSON string) that this reader uses to restore them.

Reading checks each member before it allocates: its declared sizes against
the file and the expansion limit (a zip bomb), its ``.npy`` header (no
Python objects, a stored dtype, a shape within the limits) and that the
header's shape accounts for exactly the member's bytes (a tiny member that
declares a huge array).
"""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np

from .. import dtypes
from ..errors import CorruptError, LimitError, NNCodecError, UnsupportedError
from ..format.constants import DEFAULT_LIMITS, Limits
from . import ZIP_ERRORS, Checkpoint, check_bool

_DTYPES_MEMBER = "__nncodec_dtypes__"
_ML = {"bfloat16", "float8_e4m3fn", "float8_e5m2"}
#: a .npy header is a short dict literal; numpy itself refuses headers over 10000 bytes
_MAX_NPY_HEADER = 10000


def _parse_npy(buf: bytearray, what: str, limits: Limits, text: bool = False) -> np.ndarray:
    """The array of one .npy member's bytes, after checking its header against its size."""
    f = io.BytesIO(memoryview(buf)[: 16 + _MAX_NPY_HEADER])
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dt = np.lib.format.read_array_header_1_0(f, max_header_size=_MAX_NPY_HEADER)
        elif version == (2, 0):
            shape, fortran, dt = np.lib.format.read_array_header_2_0(f, max_header_size=_MAX_NPY_HEADER)
        else:  # 3.0 (UTF-8 field names) is written only for structured dtypes, which nncodec does not store
            raise ValueError(f"unknown .npy version {version}")
    except (ValueError, SyntaxError, TypeError, KeyError, OverflowError, UnicodeError, MemoryError, RecursionError) as e:
        raise CorruptError(f"{what}: not a valid .npy header ({type(e).__name__}: {str(e)[:200]})") from None
    if dt.hasobject:
        raise UnsupportedError(f"{what} holds Python objects (pickled); only numeric arrays are supported")
    if not (text and dt.kind == "U"):
        dtypes.from_numpy(dt)  # a clear UnsupportedError for complex, str, structured ...
    if len(shape) > limits.max_rank:
        raise LimitError(f"{what}: {len(shape)} dimensions, over max_rank={limits.max_rank}")
    count = 1
    for d in shape:
        count *= d
        if count > limits.max_elements:
            raise LimitError(f"{what}: shape {shape} exceeds max_elements={limits.max_elements}")
    start = f.tell()
    need = count * dt.itemsize
    if start + need != len(buf):
        raise CorruptError(
            f"{what}: header declares {dt}{list(shape)} ({need} bytes) but the member holds {len(buf) - start} "
            f"bytes of data; the file is damaged"
        )
    arr = np.frombuffer(buf, dtype=dt, count=count, offset=start)
    if fortran:
        return np.ascontiguousarray(arr.reshape(shape[::-1]).T)
    return arr.reshape(shape)


def read(path, *, limits: Limits = DEFAULT_LIMITS) -> Checkpoint:
    from .torch import _read_zip_entry  # the checked zip entry reader both zip formats share

    path = os.fspath(path)
    file_size = os.path.getsize(path)
    try:
        zf = zipfile.ZipFile(path)
    except ZIP_ERRORS as e:
        raise CorruptError(f"{path}: not a readable .npz archive ({type(e).__name__}: {str(e)[:200]})") from None
    tensors = {}
    special = {}
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_records:
            raise LimitError(f"{path}: {len(infos)} members exceed max_records={limits.max_records}")
        for info in infos:
            if info.filename.endswith("/"):  # (ZipInfo.is_dir fails on an empty name)
                continue
            if not info.filename.endswith(".npy"):
                raise CorruptError(f"{path}: member {info.filename!r:.100} is not a .npy array")
            name = info.filename[:-4]
            what = f"{path}: array {name!r}"
            if name in tensors or (name == _DTYPES_MEMBER and special):
                raise CorruptError(f"{what} appears twice in the archive")
            if info.file_size > limits.max_elements * 8 + 16 + _MAX_NPY_HEADER:
                raise LimitError(f"{what} declares {info.file_size} bytes, over max_elements={limits.max_elements}")
            try:
                buf = _read_zip_entry(path, zf, info, file_size, limits)
            except NNCodecError:
                raise
            except ZIP_ERRORS as e:
                raise CorruptError(f"{what} is damaged ({type(e).__name__}: {str(e)[:200]})") from None
            arr = _parse_npy(buf, what, limits, text=name == _DTYPES_MEMBER)
            if name == _DTYPES_MEMBER:
                try:
                    special = json.loads(str(arr[()]))
                except (ValueError, TypeError, IndexError, RecursionError):
                    raise CorruptError(f"{path}: {_DTYPES_MEMBER} is not a JSON object") from None
                if not isinstance(special, dict):
                    raise CorruptError(f"{path}: {_DTYPES_MEMBER} is not a JSON object")
                continue
            tensors[name] = arr
    for name, dt in special.items():
        if name in tensors and dt in _ML:
            a = tensors[name]
            if a.dtype.itemsize != dtypes.itemsize(dt) or a.dtype.kind not in "iu":
                raise CorruptError(f"{path}: array {name!r} recorded as {dt} is {a.dtype}")
            tensors[name] = a.view(dtypes.to_numpy(dt))
    for name, a in tensors.items():
        dtypes.from_numpy(a.dtype)
        check_bool(a, f"{path}: array {name!r}")
    return Checkpoint(tensors=tensors, format="npz")


def write(path, ck: Checkpoint, *, format: str = "npz") -> None:
    """Write an uncompressed .npz (aliases become copies: npz has no shared storage)."""
    special = {}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        for name in ck.names():
            arr, dt = dtypes.as_stored(ck.get(name))
            if dt in _ML:
                special[name] = dt
                arr = arr.view(dtypes.uint_view(dt))
            with z.open(name + ".npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, arr, allow_pickle=False)
        if special:
            with z.open(_DTYPES_MEMBER + ".npy", "w") as f:
                np.lib.format.write_array(f, np.array(json.dumps(special)), allow_pickle=False)
