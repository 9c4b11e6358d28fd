"""``ans``: static interleaved rANS coding of the z-values of an integer tensor (spec/codecs/ans.md).

Codes integer tensors (quantization levels) losslessly, close to their
first-order empirical entropy: each element becomes an unsigned z-value
(:mod:`nncodec.entropy.zvalues`) and the z-values are coded as one rANS stream
(:mod:`nncodec.entropy.rans`, where the model and the coder live).
:class:`RansCodec` holds the configuration ``ans`` shares with ``zerorun``.
"""

from __future__ import annotations

import numpy as np

from .. import dtypes
from ..entropy.rans import (DEFAULT_PRECISION, DEFAULT_STATES, MAX_PRECISION, MIN_PRECISION, STATE_CHOICES,
                            decode_stream, encode_stream)
from ..entropy.zvalues import check_int_dtype, to_z, zmax_of
from ..errors import UsageError
from .base import ArraySpec, ArrayToBytesCodec, Context, cfg_choice, cfg_int, cfg_only

__all__ = ["Ans", "RansCodec"]


class RansCodec(ArrayToBytesCodec):
    """The configuration of a rANS stream coder: ``precision`` (frequency bits) and interleaved ``states``."""

    def __init__(self, precision: int = DEFAULT_PRECISION, states: int = DEFAULT_STATES):
        if not MIN_PRECISION <= precision <= MAX_PRECISION or states not in STATE_CHOICES:
            raise UsageError(
                f"codec {self.codec_id!r}: precision must be in [{MIN_PRECISION}, {MAX_PRECISION}] "
                f"and states one of {list(STATE_CHOICES)}, got precision={precision!r}, states={states!r}"
            )
        self.precision = precision
        self.states = states

    def get_config(self) -> dict:
        return {"precision": self.precision, "states": self.states}

    @classmethod
    def from_config(cls, config: dict):
        cfg_only(config, cls.codec_id, {"precision", "states"})
        return cls(
            cfg_int(config, "precision", cls.codec_id, MIN_PRECISION, MAX_PRECISION),
            cfg_choice(config, "states", cls.codec_id, STATE_CHOICES),
        )

    def _prepare(self, arr, ctx):
        arr, name = dtypes.as_stored(np.asarray(arr))
        check_int_dtype(name, f"tensor {ctx.name!r}, codec {self.codec_id!r}", UsageError)
        return arr, name

    def _what(self, ctx: Context) -> str:
        return f"tensor {ctx.name!r}, codec {self.codec_id!r}"


class Ans(RansCodec):
    """Static interleaved rANS over the z-values of an integer tensor (spec/codecs/ans.md)."""

    codec_id = "ans"

    def encode(self, arr: np.ndarray, ctx: Context) -> bytes:
        arr, _ = self._prepare(arr, ctx)
        return encode_stream(to_z(arr), self.precision, self.states)

    def decode(self, data, spec: ArraySpec, ctx: Context) -> np.ndarray:
        what = self._what(ctx)
        check_int_dtype(spec.dtype, what)
        buf = np.frombuffer(data, np.uint8)
        dt = dtypes.to_numpy(spec.dtype)
        out = np.empty(spec.size, dt)
        decode_stream(buf, 0, buf.shape[0], out, self.precision, self.states, 0, zmax_of(spec.dtype),
                      dt.kind == "i", what)
        return out.reshape(spec.shape)
