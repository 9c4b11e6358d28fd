"""``raw``: the array's elements as little-endian bytes in C order (spec/codecs/raw.md)."""

from __future__ import annotations

import numpy as np

from .. import dtypes
from ..errors import CorruptError
from .base import ArraySpec, ArrayToBytesCodec, Context


class Raw(ArrayToBytesCodec):
    codec_id = "raw"

    def encode(self, arr: np.ndarray, ctx: Context) -> bytes:
        arr, _ = dtypes.as_stored(arr)
        return arr.tobytes()

    def decode(self, data, spec: ArraySpec, ctx: Context) -> np.ndarray:
        n = data.nbytes if isinstance(data, memoryview) else len(data)
        if n != spec.nbytes:
            raise CorruptError(
                f"tensor {ctx.name!r}: raw payload is {n} bytes, {spec.dtype}{list(spec.shape)} needs {spec.nbytes}"
            )
        arr = np.frombuffer(data, dtype=dtypes.to_numpy(spec.dtype), count=spec.size).copy()
        return arr.reshape(spec.shape)
