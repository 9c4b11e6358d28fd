"""``prune``: magnitude pruning, every weight with ``|w| < threshold`` becomes +0 (spec/codecs/prune.md).

An array->array stage on float tensors that decodes as the identity. Its
configuration records the threshold applied and the fraction of zeros that
came out, so :meth:`Prune.fit_encode` returns a new codec describing the
tensor it pruned (``Writer.add`` and :meth:`nncodec.pipeline.Pipeline.fit_encode`
call it); a codec object never changes.
"""

from __future__ import annotations

import math

import numpy as np

from .. import dtypes
from ..errors import CorruptError, UnsupportedError, UsageError
from .base import ArraySpec, ArrayToArrayCodec, Context, cfg_float, cfg_only, float_arg


def kernels():
    from ..kernels import quant

    return quant


def sparsity_threshold(magnitudes: np.ndarray, sparsity: float) -> float:
    """The threshold that prunes at least ``floor(sparsity * n)`` of ``magnitudes``.

    It is the smallest float64 above the k-th smallest magnitude, so every
    weight with that magnitude or less goes (ties go together); 0.0 when k is 0.
    """
    s = float_arg(sparsity, "sparsity", "prune", 0.0, False, 1.0)
    m = np.asarray(magnitudes).reshape(-1)
    n = m.size
    k = min(n, math.floor(s * n))
    if k == 0:
        return 0.0
    if np.isnan(m).any():
        raise UsageError("prune: a weight is NaN; a sparsity target needs numbers")
    v = float(np.partition(m, k - 1)[k - 1])
    t = float(np.nextafter(v, np.inf))
    return t if math.isfinite(t) else float(np.finfo(np.float64).max)


def _magnitudes(arr) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype.kind != "f" and dtypes.kind(dtypes.from_numpy(arr.dtype)) != "f":
        raise UsageError(f"prune: takes float tensors, not {arr.dtype}")
    dt = np.float64 if arr.dtype.itemsize == 8 else np.float32
    return np.abs(arr.astype(dt).reshape(-1))


def global_threshold(tensors, sparsity: float) -> float:
    """One threshold for several tensors: ``Prune(threshold=t)`` on each then prunes
    at least ``floor(sparsity * total)`` weights, the smallest magnitudes across all."""
    tensors = list(tensors.values()) if isinstance(tensors, dict) else list(tensors)
    mags = [_magnitudes(t) for t in tensors]
    if not mags:
        return 0.0
    dt = np.float64 if any(m.dtype == np.float64 for m in mags) else np.float32
    return sparsity_threshold(np.concatenate([m.astype(dt, copy=False) for m in mags]), sparsity)


class Prune(ArrayToArrayCodec):
    """Magnitude pruning: every weight with ``|w| < threshold`` becomes +0 (spec/codecs/prune.md).

    ``Prune(threshold=t)`` applies a fixed threshold (see
    :func:`global_threshold` for one threshold across a model);
    ``Prune(sparsity=s)`` is a target: :meth:`fit_encode` picks each tensor's
    threshold so that at least ``floor(s * size)`` weights go. The fitted
    codec's configuration records the threshold applied and the fraction of
    zeros that came out (``sparsity``). Decoding is the identity.
    """

    codec_id = "prune"

    def __init__(self, threshold: float | None = None, *, sparsity: float | None = None):
        if (threshold is None) == (sparsity is None):
            raise UsageError("prune: give exactly one of threshold and sparsity")
        #: the sparsity target (None once a threshold is known)
        self.target = None if sparsity is None else float_arg(sparsity, "sparsity", "prune", 0.0, False, 1.0)
        self.threshold = None if threshold is None else float_arg(threshold, "threshold", "prune", 0.0, False)
        #: fraction of zeros in the tensor this codec was fitted to (recorded in the configuration)
        self.sparsity = None

    @classmethod
    def _fitted(cls, threshold: float, zeros: float) -> "Prune":
        p = cls(threshold=threshold)
        p.sparsity = zeros  # set once, at construction
        return p

    def get_config(self) -> dict:
        if self.threshold is None:
            raise UsageError("prune: the threshold is known once fitted to a tensor (Prune(sparsity=s)"
                             ".fit(arr)), or pass threshold=")
        cfg = {"threshold": self.threshold}
        if self.sparsity is not None:
            cfg["sparsity"] = self.sparsity
        return cfg

    @classmethod
    def from_config(cls, config: dict) -> "Prune":
        cid = cls.codec_id
        cfg_only(config, cid, ("threshold", "sparsity"))
        t = cfg_float(config, "threshold", cid, 0.0)
        if "sparsity" in config:
            return cls._fitted(t, cfg_float(config, "sparsity", cid, 0.0, 1.0))
        return cls(threshold=t)

    def _identity(self):
        if self.target is not None:
            return ("target", self.target)
        return ("threshold", self.threshold, self.sparsity)

    def __repr__(self):
        if self.target is not None:
            return f"Prune(sparsity={self.target!r})"
        return f"Prune(threshold={self.threshold!r})"

    def resolve(self, spec: ArraySpec) -> ArraySpec:
        if dtypes.kind(spec.dtype) != "f":
            raise UnsupportedError(f"codec 'prune' takes float tensors, not {spec.dtype}")
        return spec

    def fit(self, arr: np.ndarray, ctx: Context | None = None) -> "Prune":
        """The codec :meth:`fit_encode` returns for ``arr``: threshold and zero fraction recorded."""
        return self.fit_encode(arr, ctx or Context())[0]

    def fit_encode(self, arr: np.ndarray, ctx: Context) -> tuple["Prune", np.ndarray]:
        arr, name, flat, mag = self._input(arr, ctx)
        t = self.threshold
        if self.target is not None:
            try:
                t = sparsity_threshold(np.abs(mag), self.target)
            except UsageError as e:
                raise ctx.error(UsageError, self.codec_id, str(e)) from None
        out, zeros = self._apply(arr, flat, mag, t)
        return Prune._fitted(t, zeros / flat.size if flat.size else 0.0), out

    def encode(self, arr: np.ndarray, ctx: Context) -> np.ndarray:
        if self.threshold is None:
            raise ctx.error(UsageError, self.codec_id, f"Prune(sparsity={self.target!r}) has no threshold "
                                                       f"yet: encode with fit_encode (Writer.add does)")
        arr, name, flat, mag = self._input(arr, ctx)
        return self._apply(arr, flat, mag, self.threshold)[0]

    def _input(self, arr, ctx: Context):
        arr, name = dtypes.as_stored(arr)
        if dtypes.kind(name) != "f":
            raise ctx.error(UnsupportedError, self.codec_id, f"takes float tensors, not {name}")
        flat = arr.reshape(-1)
        mag = flat if name in ("float32", "float64") else flat.astype(np.float32)
        return arr, name, flat, mag

    @staticmethod
    def _apply(arr, flat, mag, threshold: float):
        uv = dtypes.uint_view(dtypes.from_numpy(arr.dtype))
        out = np.empty(flat.size, dtype=uv)
        zeros = kernels().prune_apply(mag, flat.view(uv), threshold, out)
        return out.view(arr.dtype).reshape(arr.shape), zeros

    def decode(self, arr: np.ndarray, spec: ArraySpec, ctx: Context) -> np.ndarray:
        got = ArraySpec.of(np.asarray(arr))
        if got != spec:
            raise ctx.error(CorruptError, self.codec_id, f"input is {got.dtype}{list(got.shape)}, expected "
                                                        f"{spec.dtype}{list(spec.shape)}")
        return arr
