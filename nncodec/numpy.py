"""The verbs of ``safetensors.numpy`` for .nnc files, on NumPy arrays.

::

    import nncodec.numpy

    nncodec.numpy.save_file({"w": w, "b": b}, "model.nnc")            # lossless
    nncodec.numpy.save_file(tensors, "model.nnc", bits=4)             # or any coding option
    arrays = nncodec.numpy.load_file("model.nnc")
    blob = nncodec.numpy.save(tensors); arrays = nncodec.numpy.load(blob)

Dtypes come back exactly as they went in; ``bfloat16`` and float8 are the ``ml_dtypes``
types. Names whose array is the very same memory as an earlier name's (tied weights) are
stored once, as an alias, and load as one array object under both names. The coding
options are those of :func:`nncodec.encode_file` (``bits``, ``snr``, ``step``,
``max_error``, ``preset``, ``keep``, ``lossy``, ``overrides``, ``quantizer``,
``objective``, ``dither``, ``seed``); lossless unless one is given.

For lazy reading by name and row slices, see :func:`nncodec.safe_open`; for torch
tensors, :mod:`nncodec.torch`.
"""

from __future__ import annotations

import io
import os

import numpy as np

from . import dtypes
from .errors import UnsupportedError, UsageError
from .format.constants import DEFAULT_LIMITS, Limits

__all__ = ["load_file", "save_file", "load", "save"]


# ----------------------------------------------------------------- shared by nncodec.torch


def check_tensor_dict(tensors, what: str = "tensors") -> None:
    if not isinstance(tensors, dict):
        raise UsageError(f"{what} must be a dict of name -> tensor, got {type(tensors).__name__}")
    for name in tensors:
        if not isinstance(name, str):
            raise UsageError(f"{what}: tensor names must be str, found {type(name).__name__} {name!r:.60}")


def file_metadata(metadata) -> dict:
    """The record metadata of a file written from ``metadata`` (str -> str): the user's keys
    (those in nncodec's own ``nncodec.`` namespace kept apart, as from a safetensors file)
    and the source format ``safetensors``, which ``nncodec decode`` writes by default."""
    from .io.checkpoint import SOURCE_FORMAT_KEY
    from .io.safetensors import escape_key

    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in metadata.items()):
        raise UsageError("metadata must be a dict of str -> str (or None)")
    md = {SOURCE_FORMAT_KEY: "safetensors"}
    md.update({escape_key(k): v for k, v in metadata.items()})
    return md


def user_metadata(md: dict) -> dict:
    """The user's metadata of a file: nncodec's own records left out, escaped keys restored."""
    from .io.safetensors import unescape_key

    out = {}
    for k, v in md.items():
        key = unescape_key(k)
        if key is not None:
            out[key] = v
    return out


def write(target, arrays: dict, aliases: dict, metadata, *, options=None, threads=None,
          limits: Limits = DEFAULT_LIMITS, **keywords) -> None:
    """Code ``arrays`` (name -> stored NumPy array) and ``aliases`` (name -> target name) to
    ``target``, a path (written atomically) or a binary stream."""
    from .api import Writer
    from .encode import EncodeOptions
    from .files import write_tensors

    if options is not None and keywords:
        raise UsageError(f"give options either as EncodeOptions or as keywords, not both ({sorted(keywords)})")
    opts = options if options is not None else EncodeOptions.from_keywords(**keywords)
    md = file_metadata(metadata)
    if isinstance(target, (str, os.PathLike)) and os.path.isdir(target):
        raise UsageError(f"{os.fspath(target)}: is a directory; give a file path")
    with Writer(target, metadata=md, limits=limits) as w:
        write_tensors(w, arrays, aliases, opts, threads=threads)


def read_file(path, *, limits: Limits = DEFAULT_LIMITS, threads=None) -> tuple:
    """``(arrays, metadata)`` of the .nnc file ``path``: aliases map to their target's array
    object."""
    from .api import Reader

    if not isinstance(path, (str, os.PathLike)):
        raise UsageError(f"load_file needs a path, got {type(path).__name__} (for bytes use load())")
    with Reader(path, limits=limits, threads=threads) as r:
        return r.to_dict(), dict(r.metadata)


def read_bytes(data, *, limits: Limits = DEFAULT_LIMITS, threads=None) -> dict:
    """name -> array of .nnc bytes; aliases map to their target's array object."""
    from .api import iter_decode

    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise UsageError(f"load needs the bytes of a .nnc file, got {type(data).__name__} (for a path use load_file())")
    return dict(iter_decode(data, limits=limits, threads=threads))


def as_stored(name: str, arr) -> np.ndarray:
    """``arr`` as nncodec stores it (C-contiguous, little-endian), or an error naming the tensor."""
    if not isinstance(arr, np.ndarray):
        raise UsageError(f"tensor {name!r}: expected a numpy.ndarray, got {type(arr).__name__}")
    try:
        return dtypes.as_stored(arr)[0]
    except UnsupportedError as e:
        raise UnsupportedError(f"tensor {name!r}: {e}") from None


def split_aliases(tensors: dict, key) -> tuple:
    """``(stored names in order, {alias: target})``: a name whose ``key(value)`` (None for a value
    that never aliases) equals an earlier name's becomes an alias of that name."""
    seen: dict = {}
    names, aliases = [], {}
    for name, t in tensors.items():
        k = key(t)
        if k is not None and k in seen:
            aliases[name] = seen[k]
            continue
        if k is not None:
            seen[k] = name
        names.append(name)
    return names, aliases


def _numpy_key(arr):
    if not isinstance(arr, np.ndarray) or arr.size == 0:
        return None
    return (arr.__array_interface__["data"][0], arr.shape, arr.strides, arr.dtype.str)


# ----------------------------------------------------------------- the verbs


def save_file(tensor_dict: dict, filename, metadata: dict | None = None, *, options=None,
              threads: int | None = None, limits: Limits = DEFAULT_LIMITS, **coding) -> None:
    """Write ``tensor_dict`` (name -> numpy.ndarray) to the .nnc file ``filename`` (atomically).

    ``metadata`` (str -> str) is stored as the file's user metadata. ``coding`` takes the
    options of :func:`nncodec.encode_file` (``bits=4``, ``preset="small"``, ...; lossless when
    none is given), or pass ``options=`` an :class:`nncodec.encode.EncodeOptions`.
    """
    check_tensor_dict(tensor_dict, "tensor_dict")
    if not isinstance(filename, (str, os.PathLike)):
        raise UsageError(f"filename must be a path, got {type(filename).__name__} (for bytes use save())")
    names, aliases = split_aliases(tensor_dict, _numpy_key)
    arrays = {n: as_stored(n, tensor_dict[n]) for n in names}
    write(filename, arrays, aliases, metadata, options=options, threads=threads, limits=limits, **coding)


def save(tensor_dict: dict, metadata: dict | None = None, *, options=None, threads: int | None = None,
         limits: Limits = DEFAULT_LIMITS, **coding) -> bytes:
    """The bytes of a .nnc file holding ``tensor_dict``; options as in :func:`save_file`."""
    check_tensor_dict(tensor_dict, "tensor_dict")
    names, aliases = split_aliases(tensor_dict, _numpy_key)
    arrays = {n: as_stored(n, tensor_dict[n]) for n in names}
    buf = io.BytesIO()
    write(buf, arrays, aliases, metadata, options=options, threads=threads, limits=limits, **coding)
    return buf.getvalue()


def load_file(filename, *, limits: Limits = DEFAULT_LIMITS, threads: int | None = None) -> dict:
    """name -> numpy.ndarray of every tensor in the .nnc file ``filename`` (tied names share
    one array object)."""
    return read_file(filename, limits=limits, threads=threads)[0]


def load(data: bytes, *, limits: Limits = DEFAULT_LIMITS, threads: int | None = None) -> dict:
    """name -> numpy.ndarray of the .nnc file held in ``data`` (bytes)."""
    return read_bytes(data, limits=limits, threads=threads)
