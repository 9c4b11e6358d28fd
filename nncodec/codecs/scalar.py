"""``scalar``: uniform mid-tread scalar quantization, optionally dithered (spec/codecs/scalar.md).

An array->array stage: a float tensor becomes an int32 array of levels of the
same shape and back (common rules in :mod:`nncodec.codecs.floatcodec`; the
dither in spec/dither.md). An entropy coder follows it in a pipeline.
"""

from __future__ import annotations

import numpy as np

from .. import dither as _dither
from ..errors import CorruptError
from .base import ArraySpec, ArrayToArrayCodec, Context, cfg_float, cfg_only, float_arg
from .floatcodec import (bad_input, check_float_spec, check_levels, check_step_fits, dither_args, dither_config,
                         dither_from_config, finish, kernel_input, work_dtype)


def kernels():
    from ..kernels import quant

    return quant


class Scalar(ArrayToArrayCodec):
    """Uniform mid-tread scalar quantization with step ``step`` (spec/codecs/scalar.md).

    ``dither=True`` subtracts a uniform dither in [-step/2, step/2) drawn from
    ``(seed, stream)`` (spec/dither.md): the error is then uniform and
    independent of the weights. ``rd_lambda > 0`` lets the encoder move a
    level one step toward zero, or to zero, where that lowers
    ``error**2/step**2 + rd_lambda * bits``; decoders do not need it.
    Without RD the error is at most ``step/2`` (plus the final rounding to
    the tensor's dtype).
    """

    codec_id = "scalar"

    def __init__(self, step: float, *, dither: bool = False, seed: int = 0, stream: int = 0,
                 rd_lambda: float = 0.0):
        self.step = float_arg(step, "step", self.codec_id, 0.0, True)
        self.dither, self.seed, self.stream = dither_args(dither, seed, stream, self.codec_id)
        self.rd_lambda = float_arg(rd_lambda, "rd_lambda", self.codec_id, 0.0, False)

    def get_config(self) -> dict:
        cfg = {"step": self.step}
        dither_config(cfg, self.dither, self.seed, self.stream)
        if self.rd_lambda:
            cfg["rd_lambda"] = self.rd_lambda
        return cfg

    @classmethod
    def from_config(cls, config: dict) -> "Scalar":
        cid = cls.codec_id
        cfg_only(config, cid, ("step", "dither", "seed", "stream", "rd_lambda"))
        step = cfg_float(config, "step", cid, 0.0, lo_open=True)
        dither, seed, stream = dither_from_config(config, cid)
        lam = cfg_float(config, "rd_lambda", cid, 0.0, default=0.0)
        return cls(step, dither=dither, seed=seed, stream=stream, rd_lambda=lam)

    def _key(self):
        return np.uint64(_dither.key(self.seed, self.stream) if self.dither else 0)

    def resolve(self, spec: ArraySpec) -> ArraySpec:
        check_float_spec(spec, self.codec_id)
        return ArraySpec("int32", spec.shape)

    def encode(self, arr: np.ndarray, ctx: Context) -> np.ndarray:
        kq = kernels()
        arr, name, flat = kernel_input(arr, self.codec_id, ctx)
        out = np.empty(flat.size, dtype=np.int32)
        if self.rd_lambda > 0.0:
            status, index, mx = kq.scalar_encode_rd(flat, self.step, self.dither, self._key(), self.rd_lambda, out)
        else:
            status, index, mx = kq.scalar_encode(flat, self.step, self.dither, self._key(), out)
        if status:
            raise bad_input(ctx, self.codec_id, status, index, flat, self.step)
        out = out.reshape(arr.shape)
        # the reconstruction must be finite in the dtype; |w^| <= (max level + 1) * step
        check_step_fits(self, out, ArraySpec(name, arr.shape), (mx + 1.0) * self.step, ctx)
        return out

    def decode(self, arr: np.ndarray, spec: ArraySpec, ctx: Context) -> np.ndarray:
        q = check_levels(arr, self.resolve(spec), ctx, self.codec_id).reshape(-1)
        work = np.empty(q.size, dtype=work_dtype(spec.dtype))
        bad = kernels().scalar_decode(q, self.step, self.dither, self._key(), work)
        if bad >= 0:
            raise ctx.error(CorruptError, self.codec_id,
                            f"level {int(q[bad])} at element {bad} reconstructs to a value not finite in {spec.dtype}")
        return finish(work, spec, ctx, self.codec_id)
