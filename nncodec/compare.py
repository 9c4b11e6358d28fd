"""Compare two checkpoints tensor by tensor: SNR, max absolute error, relative error."""

from __future__ import annotations

import dataclasses
import math

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


def load_tensors(path, *, limits: Limits = DEFAULT_LIMITS) -> dict:
    """Every tensor of a checkpoint or .nnc file, by name (aliases included)."""
    from .io import load_any

    ck = load_any(path, limits=limits)
    return {name: ck.get(name) for name in ck.names()}


def snr_db(signal: float, noise: float) -> float:
    if noise == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def diff_tensor(name: str, a: np.ndarray, b: np.ndarray) -> TensorDiff:
    from . import dtypes

    if a.shape != b.shape:
        raise UsageError(f"tensor {name!r}: shapes differ, {a.shape} vs {b.shape}")
    exact = a.dtype == b.dtype and dtypes.as_stored(a)[0].tobytes() == dtypes.as_stored(b)[0].tobytes()
    if a.dtype == bool or b.dtype == bool:
        x, y = a.astype(np.float64), b.astype(np.float64)
    else:
        x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    finite = np.isfinite(x) & np.isfinite(y)
    e = np.where(finite, x - y, 0.0)
    sig = float(np.sum(np.where(finite, x, 0.0) ** 2))
    noise = float(np.sum(e * e))
    mx = float(np.max(np.abs(e))) if e.size else 0.0
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
