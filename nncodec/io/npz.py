"""NumPy .npz archives, read without pickle.

NumPy has no bfloat16 or float8: such arrays are written as unsigned integers
of the same width and their dtype is recorded in a ``__nncodec_dtypes__.npy``
member (a JSON string) that this reader uses to restore them.
"""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np

from .. import dtypes
from ..errors import CorruptError, LimitError, UnsupportedError
from ..format.constants import DEFAULT_LIMITS, Limits
from . import Checkpoint

_DTYPES_MEMBER = "__nncodec_dtypes__"
_ML = {"bfloat16", "float8_e4m3fn", "float8_e5m2"}


def read(path, *, limits: Limits = DEFAULT_LIMITS) -> Checkpoint:
    path = os.fspath(path)
    try:
        z = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise CorruptError(f"{path}: not a readable .npz archive ({e})") from None
    tensors = {}
    special = {}
    with z:
        for name in z.files:
            try:
                info = z.zip.getinfo(name + ".npy")
            except KeyError:
                info = None
            if info is not None and info.file_size > limits.max_elements * 8 + 4096:
                raise LimitError(f"{path}: member {name!r} declares {info.file_size} bytes, over max_elements")
            try:
                arr = z[name]
            except ValueError as e:
                if "pickle" in str(e):
                    raise UnsupportedError(f"{path}: array {name!r} holds Python objects (pickled); only numeric arrays are supported") from None
                raise CorruptError(f"{path}: array {name!r} is damaged ({e})") from None
            except (zipfile.BadZipFile, EOFError, OSError) as e:
                raise CorruptError(f"{path}: array {name!r} is damaged ({e})") from None
            if name == _DTYPES_MEMBER:
                try:
                    special = json.loads(str(arr[()]))
                except (ValueError, TypeError):
                    raise CorruptError(f"{path}: {_DTYPES_MEMBER} is not a JSON object") from None
                continue
            tensors[name] = arr
    for name, dt in (special.items() if isinstance(special, dict) else ()):
        if name in tensors and dt in _ML:
            a = tensors[name]
            if a.dtype.itemsize != dtypes.itemsize(dt):
                raise CorruptError(f"{path}: array {name!r} recorded as {dt} has itemsize {a.dtype.itemsize}")
            tensors[name] = a.view(dtypes.to_numpy(dt))
    for name, a in tensors.items():
        dtypes.from_numpy(a.dtype)  # raises a clear UnsupportedError for e.g. complex or str arrays
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
