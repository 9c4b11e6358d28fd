"""The counter-based dither generator of the quantizer stages (spec/dither.md).

Every dither value is a pure function of ``(seed, stream, index)``, so a
decoder regenerates any part of a tensor's dither in any order, in any
language. The algorithm is SplitMix64 (Steele, Lea and Flood, 2014) used as a
counter-based generator; all arithmetic is on unsigned 64-bit integers modulo
2**64::

    mix64(z):  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
               z = (z ^ (z >> 27)) * 0x94D049BB133111EB
               return z ^ (z >> 31)
    key      = mix64(seed ^ mix64(stream ^ 0xD1B54A32D192ED03))
    bits(i)  = mix64(key + (i + 1) * 0x9E3779B97F4A7C15)
    u01(i)   = (bits(i) >> 11) * 2**-53            # a double in [0, 1)

``i`` is the element's index in the tensor (C order). Two implementations
live here and agree bit for bit: plain NumPy (``impl="numpy"``) and Numba
(``impl="numba"``, the kernels in :mod:`nncodec.kernels.quant`).
"""

from __future__ import annotations

import numpy as np

from .errors import UsageError

__all__ = ["U64_MAX", "GAMMA", "STREAM_SALT", "mix64", "key", "bits", "uniform", "stream_for_name"]

U64_MAX = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15  #: the SplitMix64 increment (odd; 2**64 / golden ratio)
STREAM_SALT = 0xD1B54A32D192ED03  #: xored into the stream id before mixing
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
#: largest ``start + count`` accepted (indices stay far from wrapping)
MAX_INDEX = 1 << 62


def mix64(z: int) -> int:
    """The SplitMix64 finalizer on a Python integer in [0, 2**64)."""
    z &= U64_MAX
    z = ((z ^ (z >> 30)) * _M1) & U64_MAX
    z = ((z ^ (z >> 27)) * _M2) & U64_MAX
    return z ^ (z >> 31)


def _check_u64(v, what: str) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or not 0 <= int(v) <= U64_MAX:
        raise UsageError(f"dither {what} must be an integer in [0, 2**64 - 1], found {v!r}")
    return int(v)


def key(seed: int, stream: int) -> int:
    """The generator key of ``(seed, stream)``."""
    seed = _check_u64(seed, "seed")
    stream = _check_u64(stream, "stream")
    return mix64(seed ^ mix64(stream ^ STREAM_SALT))


def stream_for_name(name: str) -> int:
    """A stream id for a tensor name: 64-bit FNV-1a of its UTF-8 bytes.

    A convenience for callers that want a different dither per tensor from one
    seed; the stream id is stored in each stage's configuration, so decoders
    never need this function.
    """
    h = 0xCBF29CE484222325
    for byte in name.encode("utf-8", "surrogatepass"):
        h = ((h ^ byte) * 0x100000001B3) & U64_MAX
    return h


def _mix64_np(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_M1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_M2)
    return z ^ (z >> np.uint64(31))


def bits_numpy(k: int, start: int, count: int) -> np.ndarray:
    """The 64-bit outputs for indices ``start .. start+count-1`` under key ``k`` (NumPy)."""
    with np.errstate(over="ignore"):
        i = np.arange(count, dtype=np.uint64) + np.uint64(start) + np.uint64(1)
        return _mix64_np(np.uint64(k) + i * np.uint64(GAMMA))


def uniform_numpy(k: int, start: int, count: int) -> np.ndarray:
    """The [0, 1) doubles for indices ``start .. start+count-1`` under key ``k`` (NumPy)."""
    return (bits_numpy(k, start, count) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _check_range(start, count):
    for v, what in ((start, "start"), (count, "count")):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise UsageError(f"dither {what} must be a non-negative integer, found {v!r}")
    if int(start) + int(count) > MAX_INDEX:
        raise UsageError(f"dither indices up to {int(start) + int(count)} exceed {MAX_INDEX}")
    return int(start), int(count)


def _generate(seed, stream, start, count, impl, numpy_fn, kernel: str, dtype) -> np.ndarray:
    k = key(seed, stream)
    start, count = _check_range(start, count)
    if impl == "numpy":
        return numpy_fn(k, start, count)
    if impl != "numba":
        raise UsageError(f"dither impl must be 'numba' or 'numpy', found {impl!r}")
    from .kernels import quant

    out = np.empty(count, dtype=dtype)
    getattr(quant, kernel)(np.uint64(k), np.uint64(start), out)
    return out


def bits(seed: int, stream: int, start: int, count: int, impl: str = "numba") -> np.ndarray:
    """The raw 64-bit generator outputs (uint64) of elements ``start .. start+count-1``."""
    return _generate(seed, stream, start, count, impl, bits_numpy, "dither_bits", np.uint64)


def uniform(seed: int, stream: int, start: int, count: int, impl: str = "numba") -> np.ndarray:
    """The dither doubles in [0, 1) of elements ``start .. start+count-1``."""
    return _generate(seed, stream, start, count, impl, uniform_numpy, "dither_u01", np.float64)
