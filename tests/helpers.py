"""Shared test helpers: arrays of every dtype and bit-exact comparison."""

from __future__ import annotations

import numpy as np

from nncodec import dtypes


def bits(a: np.ndarray) -> np.ndarray:
    """The raw little-endian bytes of an array, for bit-exact comparison."""
    a, _ = dtypes.as_stored(np.asarray(a))
    return np.frombuffer(a.tobytes(), dtype=np.uint8)


def assert_same(a, b) -> None:
    a, b = np.asarray(a), np.asarray(b)
    assert dtypes.from_numpy(a.dtype) == dtypes.from_numpy(b.dtype), (a.dtype, b.dtype)
    assert a.shape == b.shape, (a.shape, b.shape)
    np.testing.assert_array_equal(bits(a), bits(b))


def sample(dtype: str, shape=(37, 5), seed: int = 0) -> np.ndarray:
    """Realistic values of a dtype: Gaussian floats with outliers and specials, small ints."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    k = dtypes.kind(dtype)
    if k == "f":
        x = rng.standard_normal(n) * 0.05
        if n > 8:
            x[:4] = [np.nan, np.inf, -np.inf, -0.0]
            x[4] = 40.0
        return x.astype(dtypes.to_numpy(dtype)).reshape(shape)
    if k == "b":
        return (rng.random(n) < 0.3).reshape(shape)
    if k == "c":
        x = rng.standard_normal((n, 2)).astype(np.float32) * 0.05
        return x.view(dtypes.to_numpy(dtype)).reshape(shape)
    info = np.iinfo(dtypes.uint_view(dtype) if dtype in dtypes.PACKED else np.dtype(dtype))
    x = rng.integers(-50 if info.min < 0 else 0, 200, n).astype(dtypes.to_numpy(dtype))
    if n > 4:
        x[0], x[1] = info.min, info.max
    return x.reshape(shape)
