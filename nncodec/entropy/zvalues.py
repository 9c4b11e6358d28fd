"""Z-values: integer elements as unsigned numbers, zigzag for signed dtypes.

``ans``, ``zerorun`` and ``huffman`` code z-values: for a signed dtype
``z = 2v`` when ``v >= 0`` and ``z = -2v - 1`` otherwise (a bijection onto
``[0, 2**bits)``); for an unsigned dtype ``z = v``.
"""

from __future__ import annotations

import numpy as np

from .. import dtypes
from ..errors import CorruptError


def zmax_of(dtype_name: str) -> int:
    """The largest z-value a dtype has: ``2**bits - 1`` (zigzag is a bijection onto [0, 2**bits))."""
    return (1 << (8 * dtypes.itemsize(dtype_name))) - 1


def to_z(arr: np.ndarray) -> np.ndarray:
    """The z-values (uint64, C order) of an integer array: zigzag if signed, the value if unsigned."""
    a = np.ascontiguousarray(arr.reshape(-1))
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    out = np.empty(a.shape[0], np.uint64)
    _kernels().to_z(a, a.dtype.kind == "i", out)
    return out


def z_to_values(z: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Invert :func:`to_z` for z-values already known to fit ``dtype``."""
    z = np.asarray(z, np.uint64)
    if dtype.kind == "i":
        z = (z >> np.uint64(1)) ^ (np.uint64(0) - (z & np.uint64(1)))
        return z.view(np.int64).astype(dtype)
    return z.astype(dtype)


def check_int_dtype(dtype_name: str, what: str, cls=CorruptError) -> None:
    if dtypes.kind(dtype_name) not in "iu":
        raise cls(f"{what}: codes integer tensors only (int8..int64, uint8..uint64), found {dtype_name}")


def _kernels():
    from ..kernels import ans

    return ans
