"""``nncodec.safe_open``: the ``safetensors.safe_open`` surface on a .nnc file.

::

    with nncodec.safe_open("model.nnc", framework="pt") as f:
        for name in f.keys():
            t = f.get_tensor(name)                         # one tensor, decoded on its own
        rows = f.get_slice("embed.weight")[1000:1010]      # decodes only the pieces holding them
        md = f.metadata()

``filename`` may also be a URL (``https://...``; ``s3://...`` and the like with that fsspec
backend installed): the file is then read by range requests (:mod:`nncodec.remote`), a
tensor costing about its record's bytes and a slice about the pieces it touches.

The file is memory-mapped and read lazily (:class:`nncodec.Reader`): a tensor is decoded
when asked for, and a slice of a chunked record (spec/FORMAT.md 4.2.1) decodes only the
pieces whose rows the slice's first index meets, each checked against its CRC-32. A record
coded with array->array stages (a lossy tensor) decodes whole and is then sliced.
One object may serve several threads at once; :meth:`SafeOpen.close` waits for none of
them but frees the mapping only after the last read in flight returns.
"""

from __future__ import annotations

import operator
import os
import threading

import numpy as np

from .api import Reader
from .errors import UnsupportedError, UsageError
from .format.constants import DEFAULT_LIMITS, Limits

__all__ = ["safe_open", "SafeOpen", "SafeSlice", "TensorNotFoundError", "SliceIndexError"]

_FRAMEWORKS = {"pt": "pt", "torch": "pt", "pytorch": "pt", "np": "np", "numpy": "np"}


class TensorNotFoundError(UsageError, KeyError):
    """A tensor name the file does not hold (a KeyError, and an nncodec UsageError)."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


class SliceIndexError(UsageError, IndexError):
    """An index out of a tensor's range, or more indices than it has dimensions."""


def _check_framework(framework) -> str:
    fw = _FRAMEWORKS.get(framework) if isinstance(framework, str) else None
    if fw is None:
        raise UsageError(f"framework {framework!r:.40} is not supported; choose one of "
                         f"'pt' (torch tensors; also 'torch') or 'np' (NumPy arrays; also 'numpy')")
    return fw


class SafeOpen:
    """A .nnc file opened like ``safetensors.safe_open``; see :func:`safe_open`."""

    def __init__(self, filename, framework: str = "pt", device="cpu", *, limits: Limits = DEFAULT_LIMITS,
                 threads: int | None = None, verify_checksums: bool = True):
        self._framework = _check_framework(framework)
        self._torch = None
        self._device = None
        if self._framework == "pt":
            try:
                from . import torch as nt
            except ImportError as e:
                raise UnsupportedError(f"framework='pt' needs torch, which is not importable here ({e}); "
                                       f"install it or use framework='np'") from None
            self._torch = nt
            self._device = nt._device(device)
        elif not (device == "cpu" or getattr(device, "type", None) == "cpu"):
            raise UsageError(f"framework='np' gives NumPy arrays, which live on the CPU: device must be "
                             f"'cpu', not {device!r:.40}")
        if not isinstance(filename, (str, os.PathLike)):
            raise UsageError(f"safe_open needs a path, got {type(filename).__name__}")
        self._reader = Reader(filename, limits=limits, verify_checksums=verify_checksums, threads=threads)
        self._lock = threading.Lock()
        self._active = 0
        self._closed = False

    # -- the reader's life: reads in flight keep it open

    def _acquire(self) -> Reader:
        with self._lock:
            if self._closed:
                raise UsageError(f"{self._reader.path}: safe_open object is closed")
            self._active += 1
            return self._reader

    def _release(self) -> None:
        with self._lock:
            self._active -= 1
            last = self._closed and self._active == 0
        if last:
            self._reader.close()

    def close(self) -> None:
        """Close the file (once the reads in flight on other threads have returned)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            idle = self._active == 0
        if idle:
            self._reader.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # -- what the file holds

    def _check_key(self, name) -> str:
        if not isinstance(name, str):
            raise UsageError(f"tensor names are str, got {type(name).__name__}")
        if name not in self._reader:
            keys = self._reader.keys()
            some = ", ".join(repr(k) for k in keys[:5]) + (", ..." if len(keys) > 5 else "")
            raise TensorNotFoundError(f"{self._reader.path}: no tensor named {name!r} (the file holds "
                                      f"{len(keys)}: {some})")
        return name

    def keys(self) -> list:
        """Every tensor name, sorted (as safetensors gives them)."""
        return sorted(self._reader.keys())

    def offset_keys(self) -> list:
        """Every tensor name in file order (aliases after the tensors they share)."""
        return self._reader.keys()

    def __contains__(self, name) -> bool:
        return isinstance(name, str) and name in self._reader

    def __len__(self) -> int:
        return len(self._reader)

    def metadata(self) -> dict | None:
        """The user metadata (str -> str), nncodec's own records left out; None when there is
        none (as safetensors returns)."""
        from .numpy import user_metadata

        md = user_metadata(self._reader.metadata)
        return md or None

    # -- tensors

    def _out(self, arr: np.ndarray, name: str):
        if self._torch is None:
            return arr
        return self._torch.to_device(self._torch.to_torch(arr, name), self._device)

    def get_tensor(self, name: str):
        """Tensor ``name``, decoded whole (a torch tensor for 'pt', a NumPy array for 'np')."""
        self._check_key(name)
        r = self._acquire()
        try:
            return self._out(r[name], name)
        finally:
            self._release()

    def get_tensors(self) -> dict:
        """Every tensor, in file order; aliases share their target's tensor."""
        r = self._acquire()
        try:
            arrays = r.to_dict()
        finally:
            self._release()
        done: dict = {}
        out = {}
        for n, a in arrays.items():
            t = done.get(id(a))
            if t is None:
                t = done[id(a)] = self._out(a, n)
            out[n] = t
        return out

    def get_slice(self, name: str) -> "SafeSlice":
        """A lazy view of tensor ``name``: ``get_shape()``, ``get_dtype()`` and indexing
        (``[a:b]``, ``[i]``, ``[..., j]``, steps) decode only what the index needs."""
        self._check_key(name)
        r = self._acquire()
        try:
            spec = r.spec(name)
        finally:
            self._release()
        return SafeSlice(self, name, spec.dtype, tuple(spec.shape))

    def _rows(self, name: str, lo: int | None, hi: int | None) -> np.ndarray:
        r = self._acquire()
        try:
            return r[name] if lo is None else r.read_rows(name, lo, hi)
        finally:
            self._release()

    def __repr__(self):
        return f"<nncodec.safe_open {self._reader.path!r} framework={self._framework!r}>"


class SafeSlice:
    """One tensor of a :class:`SafeOpen` file, indexed lazily like safetensors' ``PySafeSlice``."""

    def __init__(self, owner: SafeOpen, name: str, dtype: str, shape: tuple):
        self._owner = owner
        self.name = name
        self._dtype = dtype
        self._shape = shape

    def get_shape(self) -> list:
        """The shape, in elements as torch counts them (for ``float4_e2m1fn_x2`` one element is
        a byte of two values, where safetensors' ``get_shape`` counts values)."""
        return list(self._shape)

    def get_dtype(self) -> str:
        """The safetensors dtype string (``"F32"``, ``"BF16"``, ...)."""
        from .io.safetensors import _FROM_NAME

        return _FROM_NAME.get(self._dtype, self._dtype.upper())

    def __len__(self) -> int:
        if not self._shape:
            raise TypeError("len() of a 0-dimensional tensor")
        return self._shape[0]

    def __getitem__(self, key):
        lo, hi, new_key = index_plan(key, self._shape, f"tensor {self.name!r}")
        rows = self._owner._rows(self.name, lo, hi)
        try:
            part = rows[new_key]
        except IndexError as e:  # e.g. integer lists whose shapes do not broadcast
            raise SliceIndexError(f"tensor {self.name!r}: {e}") from None
        return self._owner._out(part, self.name)

    def __repr__(self):
        return f"<nncodec SafeSlice {self.name!r} {self.get_dtype()} {list(self._shape)}>"


# ------------------------------------------------------------------ indexing


def _item(k, what: str):
    """One index entry checked: Ellipsis, None, a slice of ints, an int, or a 1-D+ int array."""
    if k is Ellipsis or k is None:
        return k
    if isinstance(k, slice):
        parts = []
        for v in (k.start, k.stop, k.step):
            if v is None:
                parts.append(None)
                continue
            if isinstance(v, (bool, np.bool_)):
                raise UsageError(f"{what}: slice bounds must be integers, found {v!r}")
            try:
                parts.append(operator.index(v))
            except TypeError:
                raise UsageError(f"{what}: slice bounds must be integers or None, found {type(v).__name__}") from None
        if parts[2] == 0:
            raise UsageError(f"{what}: slice step cannot be zero")
        return slice(*parts)
    if isinstance(k, (bool, np.bool_)):
        raise UsageError(f"{what}: boolean indices are not supported; index with integers or slices")
    if isinstance(k, (list, tuple, np.ndarray)) or hasattr(k, "__array__"):
        try:
            arr = np.asarray(k)
        except (TypeError, ValueError, RuntimeError):
            raise UsageError(f"{what}: cannot index with {type(k).__name__}; use integers, slices, '...' "
                             f"or integer lists") from None
        if arr.ndim == 0:
            k = arr.item()
        elif arr.size == 0 and arr.dtype.kind not in "biu":
            return arr.astype(np.intp)
        elif arr.dtype.kind not in "iu":
            raise UsageError(f"{what}: index arrays must hold integers, found dtype {arr.dtype}")
        else:
            return arr.astype(np.intp)
    try:
        return operator.index(k)
    except TypeError:
        raise UsageError(f"{what}: cannot index with {type(k).__name__}; use integers, slices, '...' "
                         f"or integer lists") from None


def index_plan(key, shape: tuple, what: str = "tensor") -> tuple:
    """``(lo, hi, key')``: the rows ``lo:hi`` of the first axis an index ``key`` needs (both None:
    the whole tensor) and the index that, applied to those rows, gives ``tensor[key]``.
    Errors are :class:`UsageError` (a bad kind of index) or :class:`SliceIndexError`."""
    items = [_item(k, what) for k in (key if isinstance(key, tuple) else (key,))]
    ndim = len(shape)
    if sum(k is Ellipsis for k in items) > 1:
        raise SliceIndexError(f"{what}: an index can only have a single ellipsis ('...')")
    consuming = sum(1 for k in items if k is not None and k is not Ellipsis)
    if consuming > ndim:
        raise SliceIndexError(f"{what}: too many indices ({consuming}) for a tensor of {ndim} dimensions")
    axis, first = 0, None
    for pos, k in enumerate(items):
        if k is None:
            continue
        if k is Ellipsis:
            axis += ndim - consuming
            continue
        n = shape[axis]
        if isinstance(k, int):
            if not -n <= k < n:
                raise SliceIndexError(f"{what}: index {k} is out of range for axis {axis} of size {n}")
            items[pos] = k % n
        elif isinstance(k, np.ndarray):
            if k.size and (k.min() < -n or k.max() >= n):
                bad = k[(k < -n) | (k >= n)][0]
                raise SliceIndexError(f"{what}: index {int(bad)} is out of range for axis {axis} of size {n}")
            items[pos] = np.where(k < 0, k + n, k)
        if axis == 0:
            first = pos
        axis += 1
    if not any(k is Ellipsis for k in items):
        items.append(Ellipsis)  # always an array, never a NumPy scalar
    if first is None:
        return None, None, tuple(items)
    n = shape[0]
    k = items[first]
    if isinstance(k, int):
        lo, hi, items[first] = k, k + 1, 0
    elif isinstance(k, slice):
        r = range(*k.indices(n))
        if not r:
            lo = hi = 0
            items[first] = slice(0, 0)
        else:
            lo, hi = min(r[0], r[-1]), max(r[0], r[-1]) + 1
            start, last = r[0] - lo, r[-1] - lo
            stop = last + r.step
            items[first] = slice(start, stop if stop >= 0 else None, r.step)
    else:
        lo, hi = (int(k.min()), int(k.max()) + 1) if k.size else (0, 0)
        items[first] = k - lo
    if lo == 0 and hi == n:
        return None, None, tuple(items)
    return lo, hi, tuple(items)


def safe_open(filename, framework: str = "pt", device="cpu", *, limits: Limits = DEFAULT_LIMITS,
              threads: int | None = None, verify_checksums: bool = True) -> SafeOpen:
    """Open the .nnc file ``filename`` like ``safetensors.safe_open``: ``keys()``,
    ``get_tensor(name)``, ``get_slice(name)[...]``, ``metadata()``, as a context manager.
    ``filename`` may be a URL (``https://``, ``s3://``, ...), read by range requests.

    ``framework`` is ``"pt"`` (torch tensors, moved to ``device``) or ``"np"`` / ``"numpy"``
    (NumPy arrays; ``device`` must be ``"cpu"``). A slice of a chunked record decodes only the
    pieces holding the rows it asks for. Safe to share between threads.
    """
    return SafeOpen(filename, framework, device, limits=limits, threads=threads,
                    verify_checksums=verify_checksums)
