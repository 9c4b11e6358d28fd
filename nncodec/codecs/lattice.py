"""``lattice``: lattice vector quantization on D4 or E8 (spec/codecs/lattice.md).

An array->array stage: a float tensor (C order) becomes an int32 array of
shape ``(vectors, dim)`` and back (common rules in
:mod:`nncodec.codecs.floatcodec`; the dither in spec/dither.md).
"""

from __future__ import annotations

import numpy as np

from .. import dither as _dither
from ..errors import CorruptError, UsageError
from .base import ArraySpec, ArrayToArrayCodec, Context, cfg_choice, cfg_float, cfg_only, float_arg
from .floatcodec import (bad_input, check_float_spec, check_levels, check_step_fits, dither_args, dither_config,
                         dither_from_config, finish, kernel_input, work_dtype)

_LATTICES = {"D4": (0, 4), "E8": (1, 8)}


class Lattice(ArrayToArrayCodec):
    """Lattice vector quantization on D4 or E8 scaled by ``step`` (spec/codecs/lattice.md).

    The tensor (C order) is cut into vectors of 4 (D4) or 8 (E8) elements, the
    last one padded with zeros. Each vector is replaced by its nearest point
    of ``step * lattice``; the levels are an int32 array of shape
    ``(vectors, dim)`` holding D4 coordinates, or E8 coordinates times two.
    ``dither=True`` adds a dither uniform over the Voronoi cell first and
    subtracts it after decoding.
    """

    codec_id = "lattice"

    def __init__(self, lattice: str, step: float, *, dither: bool = False, seed: int = 0, stream: int = 0):
        if lattice not in _LATTICES:
            raise UsageError(f"lattice: lattice must be one of {sorted(_LATTICES)}, found {lattice!r}")
        self.lattice = lattice
        self.step = float_arg(step, "step", self.codec_id, 0.0, True)
        self.dither, self.seed, self.stream = dither_args(dither, seed, stream, self.codec_id)

    @property
    def dim(self) -> int:
        return _LATTICES[self.lattice][1]

    def get_config(self) -> dict:
        cfg = {"lattice": self.lattice, "step": self.step}
        dither_config(cfg, self.dither, self.seed, self.stream)
        return cfg

    @classmethod
    def from_config(cls, config: dict) -> "Lattice":
        cid = cls.codec_id
        cfg_only(config, cid, ("lattice", "step", "dither", "seed", "stream"))
        lattice = cfg_choice(config, "lattice", cid, tuple(_LATTICES))
        step = cfg_float(config, "step", cid, 0.0, lo_open=True)
        dither, seed, stream = dither_from_config(config, cid)
        return cls(lattice, step, dither=dither, seed=seed, stream=stream)

    def _args(self):
        from ..kernels import quant as kq

        kind = _LATTICES[self.lattice][0]
        g = kq._G_D4 if kind == kq.D4 else kq._G_E8  # generator matrices of the kernel module
        key = np.uint64(_dither.key(self.seed, self.stream) if self.dither else 0)
        return kq, kind, g, key

    def resolve(self, spec: ArraySpec) -> ArraySpec:
        check_float_spec(spec, self.codec_id)
        d = self.dim
        return ArraySpec("int32", (-(-spec.size // d), d))

    def encode(self, arr: np.ndarray, ctx: Context) -> np.ndarray:
        kq, kind, g, key = self._args()
        arr, name, flat = kernel_input(arr, self.codec_id, ctx)
        spec = ArraySpec(name, arr.shape)
        out = np.empty(self.resolve(spec).shape, dtype=np.int32)
        status, index = kq.lattice_encode(flat, kind, g, self.step, self.dither, key, out)
        if status:
            if index >= flat.size:  # a padding coordinate cannot fail, but never index past the end
                index = flat.size - 1
            raise bad_input(ctx, self.codec_id, status, index, flat, self.step,
                            " (E8 stores coordinates times two)" if kind else "")
        if out.size:
            mx = float(np.abs(out.astype(np.int64)).max())
            s = self.step if kind == kq.D4 else self.step * 0.5
            # |dither| <= covering radius = step
            check_step_fits(self, out, spec, mx * s + self.step, ctx)
        return out

    def decode(self, arr: np.ndarray, spec: ArraySpec, ctx: Context) -> np.ndarray:
        kq, kind, g, key = self._args()
        k = check_levels(arr, self.resolve(spec), ctx, self.codec_id)
        work = np.empty(spec.size, dtype=work_dtype(spec.dtype))
        status, index = kq.lattice_decode(k, kind, g, self.step, self.dither, key, work)
        if status == 1:
            raise ctx.error(CorruptError, self.codec_id,
                            f"vector {index} = {k[index].tolist()} is not a point of {self.lattice}"
                            + (" (coordinates times two)" if kind else ""))
        if status:
            raise ctx.error(CorruptError, self.codec_id,
                            f"element {index} reconstructs to a value not finite in {spec.dtype}")
        return finish(work, spec, ctx, self.codec_id)
