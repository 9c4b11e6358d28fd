"""The verbs of ``safetensors.torch`` for .nnc files, on torch tensors.

::

    import nncodec.torch

    nncodec.torch.save_file(model.state_dict(), "model.nnc")           # lossless
    nncodec.torch.save_file(model.state_dict(), "model.nnc", bits=4)   # or any coding option
    model.load_state_dict(nncodec.torch.load_file("model.nnc"))
    blob = nncodec.torch.save(tensors); tensors = nncodec.torch.load(blob)

Dtypes come back exactly: ``torch.bfloat16`` and the float8 types travel as their bits
(a view as an integer of the same width, never a float conversion). A loaded tensor shares
the memory of the decoded array (no copy). Names whose tensors are the very same view of
the same storage (tied weights such as an embedding and an output head) are stored once, as
an alias, and load as one tensor under both names; tensors that merely overlap are stored
separately. The coding options are those of :func:`nncodec.encode_file` (``bits``,
``snr``, ``step``, ``max_error``, ``preset``, ``keep``, ``lossy``, ``overrides``,
``quantizer``, ``objective``, ``dither``, ``seed``); lossless unless one is given.

This module is the only part of nncodec that imports torch. For lazy reading by name and
row slices, see :func:`nncodec.safe_open` (``framework="pt"``).
"""

from __future__ import annotations

import io
import os

import numpy as np
import torch

from . import dtypes
from . import numpy as _np_api
from .errors import UnsupportedError, UsageError
from .format.constants import DEFAULT_LIMITS, Limits

__all__ = ["load_file", "save_file", "load", "save"]

#: signed integer torch dtypes by item size: the carriers of dtypes NumPy lacks
_CARRIER = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_NP_CARRIER = {1: np.int8, 2: np.int16, 4: np.int32, 8: np.int64}


def torch_dtype(name: str, what: str = "") -> torch.dtype:
    """The torch dtype of the format dtype ``name`` (the names are torch's)."""
    dt = getattr(torch, name, None)
    if not isinstance(dt, torch.dtype) or dt.itemsize != dtypes.itemsize(name):
        raise UnsupportedError(f"{what}dtype {name} has no torch dtype in torch {torch.__version__}")
    return dt


def dtype_name(dt: torch.dtype, what: str = "") -> str:
    """The format dtype name of the torch dtype ``dt``."""
    name = str(dt).removeprefix("torch.")
    try:
        return dtypes.check_name(name)
    except UnsupportedError as e:
        raise UnsupportedError(f"{what}{e}") from None


#: format dtypes whose NumPy dtype torch.from_numpy and Tensor.numpy take as they are; the
#: others (the ml_dtypes types, packed float4) travel as a signed integer of their width
_NATIVE = frozenset({"float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint64", "uint32",
                     "uint16", "uint8", "bool", "complex64", "complex128"})


def to_torch(arr: np.ndarray, name: str = "") -> torch.Tensor:
    """A torch tensor sharing ``arr``'s memory where it can (a copy only for a read-only or
    negatively strided array); the dtype is the exact torch counterpart of ``arr``'s."""
    what = f"tensor {name!r}: " if name else ""
    stored = dtypes.from_numpy(arr.dtype)
    tdt = torch_dtype(stored, what)
    if not arr.flags.writeable or any(s < 0 for s in arr.strides):
        arr = arr.copy()
    if stored in _NATIVE and arr.dtype.isnative:
        return torch.from_numpy(arr)
    if arr.dtype.itemsize not in _CARRIER:
        raise UnsupportedError(f"{what}dtype {stored} cannot be handed to torch")
    return torch.from_numpy(arr.view(_NP_CARRIER[arr.dtype.itemsize])).view(tdt)


def to_numpy(t, name: str = "") -> np.ndarray:
    """The NumPy array nncodec stores for the tensor ``t`` (CPU, C-contiguous; no copy for a
    contiguous CPU tensor); bfloat16 and float8 become the ml_dtypes types, bit for bit."""
    what = f"tensor {name!r}: " if name else ""
    if not isinstance(t, torch.Tensor):
        raise UsageError(f"{what}expected a torch.Tensor, got {type(t).__name__}")
    if t.layout != torch.strided:
        raise UsageError(f"{what}{t.layout} tensors are not supported; convert with .to_dense()")
    if t.device.type == "meta":
        raise UsageError(f"{what}a tensor on the meta device holds no data")
    stored = dtype_name(t.dtype, what)
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    t = t.contiguous()
    target = dtypes.to_numpy(stored)
    if stored in _NATIVE:
        arr = t.numpy()
    else:
        arr = t.view(_CARRIER[t.element_size()]).numpy().view(target)
    return dtypes.as_stored(arr)[0]


def _torch_key(t):
    """Tensors with equal keys are the same view of the same storage (tied)."""
    if not isinstance(t, torch.Tensor) or t.layout != torch.strided or t.device.type == "meta" or t.numel() == 0:
        return None
    return (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)


def _device(device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    if isinstance(device, bool) or not isinstance(device, (str, int)):
        raise UsageError(f"device must be a str, an int or a torch.device, got {type(device).__name__}")
    try:
        return torch.device(device)
    except (RuntimeError, ValueError, TypeError) as e:
        raise UsageError(f"device {device!r}: not a torch device ({e})") from None


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cpu":
        return t
    try:
        return t.to(device)
    except (RuntimeError, AssertionError) as e:
        raise UsageError(f"cannot move tensors to device {str(device)!r}: {e}") from None


def _convert(arrays: dict, device) -> dict:
    """name -> tensor; names sharing one array object share one tensor."""
    dev = _device(device)
    done: dict = {}
    out = {}
    for name, arr in arrays.items():
        t = done.get(id(arr))
        if t is None:
            t = done[id(arr)] = to_device(to_torch(arr, name), dev)
        out[name] = t
    return out


def _stored(tensors: dict) -> tuple:
    _np_api.check_tensor_dict(tensors, "tensors")
    names, aliases = _np_api.split_aliases(tensors, _torch_key)
    return {n: to_numpy(tensors[n], n) for n in names}, aliases


# ----------------------------------------------------------------- the verbs


def save_file(tensors: dict, filename, metadata: dict | None = None, *, options=None,
              threads: int | None = None, limits: Limits = DEFAULT_LIMITS, **coding) -> None:
    """Write ``tensors`` (name -> torch.Tensor, e.g. a state dict) to the .nnc file
    ``filename`` (atomically: nothing appears there unless the write succeeds).

    ``metadata`` (str -> str) is stored as the file's user metadata. ``coding`` takes the
    options of :func:`nncodec.encode_file` (``bits=4``, ``preset="small"``, ...; lossless when
    none is given), or pass ``options=`` an :class:`nncodec.encode.EncodeOptions`.
    """
    if not isinstance(filename, (str, os.PathLike)):
        raise UsageError(f"filename must be a path, got {type(filename).__name__} (for bytes use save())")
    arrays, aliases = _stored(tensors)
    _np_api.write(filename, arrays, aliases, metadata, options=options, threads=threads, limits=limits, **coding)


def save(tensors: dict, metadata: dict | None = None, *, options=None, threads: int | None = None,
         limits: Limits = DEFAULT_LIMITS, **coding) -> bytes:
    """The bytes of a .nnc file holding ``tensors``; options as in :func:`save_file`."""
    arrays, aliases = _stored(tensors)
    buf = io.BytesIO()
    _np_api.write(buf, arrays, aliases, metadata, options=options, threads=threads, limits=limits, **coding)
    return buf.getvalue()


def load_file(filename, device="cpu", *, limits: Limits = DEFAULT_LIMITS, threads: int | None = None) -> dict:
    """name -> torch.Tensor of every tensor in the .nnc file ``filename``, on ``device``
    (tied names share one tensor)."""
    _device(device)
    arrays, _ = _np_api.read_file(filename, limits=limits, threads=threads)
    return _convert(arrays, device)


def load(data: bytes, device="cpu", *, limits: Limits = DEFAULT_LIMITS, threads: int | None = None) -> dict:
    """name -> torch.Tensor of the .nnc file held in ``data`` (bytes), on ``device``."""
    _device(device)
    return _convert(_np_api.read_bytes(data, limits=limits, threads=threads), device)
