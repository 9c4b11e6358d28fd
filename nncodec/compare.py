"""Compare two checkpoints tensor by tensor: SNR, max absolute error, relative error."""

from __future__ import annotations

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


def load_tensors(path, *, limits: Limits = DEFAULT_LIMITS) -> dict:
    """Every tensor of a checkpoint or .nnc file, by name."""
    from . import io as nio

    fmt = nio.detect_format(path)
    if fmt == "nnc":
        from .api import iter_decode

        return dict(iter_decode(os.fspath(path), limits=limits))
    ck = nio.read_checkpoint(path, format=fmt, limits=limits)
    out = dict(ck.tensors)
    for a, t in ck.aliases.items():
        out[a] = ck.tensors[t]
    return out


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
    sig = sum(d.signal for d in diffs)
    noise = sum(d.noise for d in diffs)
    overall = TensorDiff("(all)", "", (), snr_db(sig, noise), max((d.max_abs_error for d in diffs), default=0.0),
                         math.sqrt(noise / sig) if sig > 0 else 0.0, sig, noise, all(d.exact for d in diffs))
    return diffs, overall, [n for n in A if n not in B], [n for n in B if n not in A]
