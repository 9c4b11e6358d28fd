"""NumPy .npz archives, read without pickle.

NumPy has no bfloat16, float8 or packed FP4/FP6: such arrays are written as unsigned integers
of the same width and their dtype is recorded in a ``__nncodec_dtypes__.npy``
member (a JSON string) that this reader uses to restore them.

Reading checks each member before it allocates (with the shared zip reader,
:mod:`nncodec.io.zipread`): its declared sizes against the file, the deflate
bound and the expansion limit (a zip bomb), unique member names, then --
after inflating only the first few kilobytes -- its ``.npy`` header (no
Python objects, a stored dtype, a shape within the limits) and that the
header's shape accounts for exactly the member's declared size (a tiny member
that declares a huge array), before the rest is inflated.
"""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np

from .. import dtypes
from ..errors import CorruptError, LimitError, UnsupportedError
from ..format.constants import DEFAULT_LIMITS, Limits
from .checkpoint import Checkpoint, Deferred, check_bool, load_tensor
from .zipread import ZipReader, member_name

_DTYPES_MEMBER = "__nncodec_dtypes__"
_ML = {"bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e8m0fnu", "float8_e4m3fnuz", "float8_e5m2fnuz",
       "float4_e2m1fn_x2", "float6_e2m3fn_x4", "float6_e3m2fn_x4"}
#: a .npy header is a short dict literal; numpy itself refuses headers over 10000 bytes
_MAX_NPY_HEADER = 10000


def _parse_header(head: bytes, what: str, limits: Limits, text: bool = False):
    """``(shape, fortran, dtype, data offset, element count)`` from the first bytes of a .npy member."""
    f = io.BytesIO(head)
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
            raise LimitError(f"{what}: {len(shape)}-dimensional shape exceeds max_elements={limits.max_elements}")
    return shape, fortran, dt, f.tell(), count


def _read_npy(zr: ZipReader, info, what: str, limits: Limits, text: bool = False) -> np.ndarray:
    """One .npy member: its header is read and checked against the member's declared size first."""
    with zr.open(info) as m:
        head = m.read(16 + _MAX_NPY_HEADER)
        shape, fortran, dt, start, count = _parse_header(head, what, limits, text)
        need = count * dt.itemsize
        if start + need != info.file_size:
            raise CorruptError(
                f"{what}: header declares {dt}{list(shape)} ({need} bytes) but the member holds "
                f"{info.file_size - start} bytes of data; the file is damaged"
            )
        buf = m.finish(bytearray(head))
    arr = np.frombuffer(buf, dtype=dt, count=count, offset=start)
    if fortran:
        return np.ascontiguousarray(arr.reshape(shape[::-1]).T)
    return arr.reshape(shape)


def read(path, *, limits: Limits = DEFAULT_LIMITS) -> Checkpoint:
    path = os.fspath(path)
    tensors = {}
    special = {}
    with ZipReader(path, limits, file_size=os.path.getsize(path), kind=".npz archive") as zr:
        infos = zr.infos
        if len(infos) > limits.max_records:
            raise LimitError(f"{path}: {len(infos)} members exceed max_records={limits.max_records}")
        for info in infos:
            if info.filename.endswith("/"):  # (ZipInfo.is_dir fails on an empty name)
                continue
            if not info.filename.endswith(".npy"):
                raise CorruptError(f"{path}: member {member_name(info.filename)} is not a .npy array")
            name = info.filename[:-4]
            what = f"{path}: array {member_name(name)}"
            if name in tensors or (name == _DTYPES_MEMBER and special):
                raise CorruptError(f"{what} appears twice in the archive")
            if info.file_size > limits.max_elements * 8 + 16 + _MAX_NPY_HEADER:
                raise LimitError(f"{what} declares {info.file_size} bytes, over max_elements={limits.max_elements}")
            arr = _read_npy(zr, info, what, limits, text=name == _DTYPES_MEMBER)
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
                raise CorruptError(f"{path}: array {member_name(name)} recorded as {dt} is {a.dtype}")
            tensors[name] = a.view(dtypes.to_numpy(dt))
    for name, a in tensors.items():
        dtypes.from_numpy(a.dtype)
        check_bool(a, f"{path}: array {member_name(name)}")
    return Checkpoint(tensors=tensors, format="npz")


def write(path, ck: Checkpoint, *, format: str = "npz") -> None:
    """Write an uncompressed .npz (aliases become copies: npz has no shared storage)."""
    special = {}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        for name in ck.names():
            entry = ck.get(name)
            loaded = load_tensor(entry)  # a deferred tensor is loaded now and let go after writing
            arr, dt = dtypes.as_stored(loaded)
            if dt in _ML:
                special[name] = dt
                arr = arr.view(dtypes.uint_view(dt))
            with z.open(name + ".npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, arr, allow_pickle=False)
            del arr
            if isinstance(entry, Deferred):
                entry.release(loaded)
            del loaded
        if special:
            with z.open(_DTYPES_MEMBER + ".npy", "w") as f:
                np.lib.format.write_array(f, np.array(json.dumps(special)), allow_pickle=False)
