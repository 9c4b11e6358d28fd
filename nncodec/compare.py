"""Compare two checkpoints tensor by tensor: SNR, max absolute error, relative error."""

from __future__ import annotations

import collections.abc
import dataclasses
import math
import os

import numpy as np

from .errors import UsageError
from .format.constants import DEFAULT_LIMITS, Limits


@dataclasses.dataclass(frozen=True)
class TensorDiff:
    name: str
    dtype: str
    shape: tuple
    snr_db: float  #: 10·log10(Σw² / Σ(w−ŵ)²); inf when identical
    max_abs_error: float
    rel_error: float  #: ‖w−ŵ‖ / ‖w‖
    signal: float  #: Σw²
    noise: float  #: Σ(w−ŵ)²
    exact: bool  #: bit-identical


class _Tensors(collections.abc.Mapping):
    """Tensors by name, loaded when asked for; the last one is kept, so ``t[name].shape`` then
    ``t[name]`` loads once. When another name is asked for, the previous tensor goes and the
    pages of the mapped file under it are given back: memory is one tensor at a time."""

    def __init__(self, names, load, drop):
        self._names = list(names)
        self._known = set(self._names)
        self._load, self._drop = load, drop
        self._last = (None, None)

    def __getitem__(self, name):
        if name not in self._known:
            raise KeyError(name)
        if self._last[0] != name:
            prev, arr = self._last
            self._last = (None, None)
            if prev is not None:
                self._drop(prev, arr)
            del arr
            self._last = (name, self._load(name))
        return self._last[1]

    def __iter__(self):
        return iter(self._names)

    def __len__(self):
        return len(self._names)

    def __contains__(self, name):
        return name in self._known


def load_tensors(path, *, limits: Limits = DEFAULT_LIMITS):
    """Every tensor of a checkpoint or .nnc file, by name (aliases included), as a mapping that
    holds one tensor at a time: views of the mapped checkpoint, or, for a .nnc file, decoded
    when asked for."""
    from ._memory import release, release_array
    from .io import detect_format, read_checkpoint

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UsageError(f"{path}: no such file")
    fmt = detect_format(path)
    if fmt == "nnc":
        from .api import Reader

        r = Reader(path, limits=limits)

        def drop(name, arr):
            rec = r._tensor_record(name, verify=False)
            release(r._mm, rec.offset, rec.end - rec.offset)

        return _Tensors(r.keys(), r.__getitem__, drop)
    ck = read_checkpoint(path, format=fmt, limits=limits)
    return _Tensors(ck.names(), ck.get, lambda name, arr: release_array(arr))


def snr_db(signal: float, noise: float) -> float:
    if noise == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


#: elements per block of the float64 arithmetic in :func:`diff_tensor` (bounds its temporaries)
BLOCK = 1 << 20


def _as_real(arr: np.ndarray) -> np.ndarray:
    """The flat values whose difference is measured: complex as (real, imaginary) pairs."""
    flat = arr.reshape(-1)
    if flat.dtype.kind == "c":
        return flat.view(np.float32 if flat.dtype.itemsize == 8 else np.float64)
    return flat


def diff_tensor(name: str, a: np.ndarray, b: np.ndarray) -> TensorDiff:
    from . import dtypes

    if a.shape != b.shape:
        raise UsageError(f"tensor {name!r}: shapes differ, {a.shape} vs {b.shape}")
    sa, sb = dtypes.as_stored(a)[0], dtypes.as_stored(b)[0]
    exact = a.dtype == b.dtype and sa.nbytes == sb.nbytes and (
        not sa.nbytes or np.array_equal(sa.reshape(-1).view(np.uint8), sb.reshape(-1).view(np.uint8)))
    x_all, y_all = _as_real(sa), _as_real(sb)
    sig = noise = mx = 0.0
    for i in range(0, x_all.size, BLOCK):  # float64 a block at a time: memory does not follow the tensor
        x = x_all[i : i + BLOCK].astype(np.float64)
        s2 = float(np.dot(x, x))
        if exact and math.isfinite(s2):  # the same bits: only the signal is needed
            sig += s2
            continue
        y = y_all[i : i + BLOCK].astype(np.float64)
        with np.errstate(invalid="ignore", over="ignore"):  # inf - inf: such pairs are left out below
            e = x - y
            n2 = float(np.dot(e, e))
        if not (math.isfinite(s2) and math.isfinite(n2)):  # inf or NaN somewhere: finite pairs only
            finite = np.isfinite(x) & np.isfinite(y)
            e = np.where(finite, e, 0.0)
            s2 = float(np.sum(np.where(finite, x, 0.0) ** 2))
            n2 = float(np.sum(e * e))
        sig += s2
        noise += n2
        if e.size and not exact:
            mx = max(mx, float(np.max(np.abs(e))))
    if exact:
        noise, mx = 0.0, 0.0
    rel = math.sqrt(noise / sig) if sig > 0 else (0.0 if noise == 0 else math.inf)
    return TensorDiff(name, dtypes.from_numpy(a.dtype), tuple(a.shape), snr_db(sig, noise), mx, rel, sig, noise, exact)


def compare(a_path, b_path, *, limits: Limits = DEFAULT_LIMITS) -> tuple:
    """Return (per-tensor diffs, overall diff, names only in A, names only in B)."""
    A = load_tensors(a_path, limits=limits)
    B = load_tensors(b_path, limits=limits)
    common = [n for n in A if n in B]
    diffs = [diff_tensor(n, A[n], B[n]) for n in common]
    return diffs, overall_diff(diffs), [n for n in A if n not in B], [n for n in B if n not in A]


def overall_diff(diffs: list) -> TensorDiff:
    """The "(all)" row: SNR, errors and exactness over the float tensors only.

    Integer and bool tensors (step counters such as ``num_batches_tracked``,
    ``position_ids``, masks) are not weights: their large values would swamp
    the signal power and make a lossy checkpoint read tens of dB too good.
    ``exact`` still covers every tensor.
    """
    from .dtypes import kind

    floats = [d for d in diffs if kind(d.dtype) == "f"]
    sig = sum(d.signal for d in floats)
    noise = sum(d.noise for d in floats)
    return TensorDiff("(all)", "", (), snr_db(sig, noise), max((d.max_abs_error for d in floats), default=0.0),
                      math.sqrt(noise / sig) if sig > 0 else 0.0, sig, noise, all(d.exact for d in diffs))
