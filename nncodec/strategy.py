"""How the encoder picks a pipeline for a tensor.

Lossless: every candidate pipeline is tried and the smallest payload wins
(ties go to the simpler pipeline). Decoders do not depend on this choice: the
chosen pipeline is stored in the record.
"""

from __future__ import annotations

import numpy as np

from . import dtypes
from .codecs import Context, codec_class
from .pipeline import Pipeline

#: tensors at most this many bytes are stored raw: no coder wins on them
SMALL_BYTES = 64


def lossless_candidates(dtype: str, nbytes: int) -> list:
    raw = codec_class("raw")()
    if nbytes <= SMALL_BYTES:
        return [Pipeline([raw])]
    planes = codec_class("planes").for_dtype(dtype)
    return [Pipeline([raw]), Pipeline([planes])]


def encode_lossless(arr: np.ndarray, ctx: Context) -> tuple:
    """Return ``(pipeline, payload)`` with the smallest payload among the candidates."""
    arr, dt = dtypes.as_stored(arr)
    best = None
    for p in lossless_candidates(dt, arr.nbytes):
        data = p.encode(arr, ctx)
        if best is None or len(data) < len(best[1]):
            best = (p, data)
    return best
