"""``kmeans``: weight sharing, each weight replaced by the nearest of a few centroids (spec/codecs/kmeans.md).

An array->array stage: a float tensor becomes int32 indices into the centroids
stored in the configuration, and back (common rules in
:mod:`nncodec.codecs.floatcodec`). ``KMeans(k=16)`` describes a fit, not yet a
codec: :meth:`KMeans.fit` returns the configured ``KMeans(centroids=...)`` for
one tensor (``Writer.add`` and :meth:`nncodec.pipeline.Pipeline.fit_encode`
call it), and the codec object itself never changes.
"""

from __future__ import annotations

import math

import numpy as np

from .. import dtypes
from ..dtypes import round_float
from ..errors import CorruptError, UsageError
from .base import MISSING, ArraySpec, ArrayToArrayCodec, Context, cfg_float, cfg_only, int_arg
from .floatcodec import check_float_spec, check_levels, kernel_input

MAX_CENTROIDS = 1 << 16


def kernels():
    from ..kernels import quant

    return quant


class KMeans(ArrayToArrayCodec):
    """Weight sharing: each weight is replaced by the nearest of a few centroids (spec/codecs/kmeans.md).

    ``KMeans(k=16)`` fits ``k`` centroids to a tensor with :meth:`fit`: 1-D
    weighted k-means with linear initialization over [min, max] and at most
    ``iterations`` Lloyd steps, with ``importance`` (e.g. a Hessian diagonal,
    same shape as the tensor, non-negative) as the weights of the means.
    The fit is a new ``KMeans(centroids=...)`` whose centroids, rounded to the
    tensor's dtype, are stored in the configuration; the levels are int32
    indices into them. ``KMeans(centroids=[...])`` uses given centroids (a
    shared codebook). Only a codec with centroids encodes and decodes.
    """

    codec_id = "kmeans"

    def __init__(self, k: int | None = None, *, centroids=None, iterations: int = 30, importance=None):
        if (k is None) == (centroids is None):
            raise UsageError("kmeans: give exactly one of k (fit per tensor) and centroids")
        self.iterations = int_arg(iterations, "iterations", self.codec_id, 0, 10_000)
        self.importance = None if importance is None else np.asarray(importance)
        if k is not None:
            self.k = int_arg(k, "k", self.codec_id, 1, MAX_CENTROIDS)
            self.centroids = None
        else:
            c = np.asarray(centroids, dtype=np.float64).reshape(-1)
            if not 1 <= c.size <= MAX_CENTROIDS or not np.isfinite(c).all() or not (np.diff(c) > 0).all():
                raise UsageError(f"kmeans: centroids must be 1 to {MAX_CENTROIDS} finite numbers, strictly "
                                 f"increasing, found {c[:8].tolist()}{'...' if c.size > 8 else ''}")
            self.k = int(c.size)
            self.centroids = c

    @property
    def fitted(self) -> bool:
        """True when the centroids are known (the codec can encode, decode and be stored)."""
        return self.centroids is not None

    def get_config(self) -> dict:
        if not self.fitted:
            raise UsageError("kmeans: the centroids are known once fitted to a tensor (KMeans(k).fit(arr)), "
                             "or pass centroids=")
        return {"centroids": [float(v) for v in self.centroids]}

    @classmethod
    def from_config(cls, config: dict) -> "KMeans":
        cid = cls.codec_id
        cfg_only(config, cid, ("centroids",))
        c = config.get("centroids", MISSING)
        if not isinstance(c, list) or not 1 <= len(c) <= MAX_CENTROIDS:
            raise CorruptError(f"codec {cid!r}: configuration 'centroids' must be a list of 1 to "
                               f"{MAX_CENTROIDS} numbers, found {c if c is not MISSING else 'nothing'!r:.100}")
        vals = [cfg_float({"centroids": v}, "centroids", cid, -math.inf) for v in c]
        for i in range(1, len(vals)):
            if not vals[i - 1] < vals[i]:
                raise CorruptError(f"codec {cid!r}: configuration 'centroids' must be strictly increasing, "
                                   f"found {vals[i - 1]!r} then {vals[i]!r} at index {i}")
        return cls(centroids=vals)

    def _identity(self):
        if self.fitted:
            return ("centroids", tuple(self.centroids.tolist()))
        return ("k", self.k, self.iterations, self.importance is not None)

    def __repr__(self):
        if self.fitted:
            return f"KMeans(centroids={self.centroids.tolist()!r})"
        return f"KMeans(k={self.k}, iterations={self.iterations})"

    def resolve(self, spec: ArraySpec) -> ArraySpec:
        check_float_spec(spec, self.codec_id)
        return ArraySpec("int32", spec.shape)

    def fit(self, arr, ctx: Context | None = None, importance=None) -> "KMeans":
        """``KMeans(centroids=...)`` fitted to ``arr`` (``self`` when the centroids are given).

        The centroids are float64, strictly increasing and representable in
        the tensor's dtype; ``importance`` overrides the one given to the
        constructor.
        """
        if self.fitted:
            return self
        try:
            return KMeans(centroids=self._fit_centroids(arr, importance))
        except UsageError as e:
            if ctx is None:
                raise
            raise ctx.error(UsageError, self.codec_id, str(e)) from None

    def _fit_centroids(self, arr, importance) -> np.ndarray:
        arr, name, flat = kernel_input(arr, self.codec_id, Context())
        x = flat.astype(np.float64)
        if not np.isfinite(x).all():
            i = int(np.flatnonzero(~np.isfinite(x))[0])
            raise UsageError(f"kmeans: element {i} is {x[i]!r}; k-means needs finite values")
        h = self._weights(importance, arr.shape)
        if x.size == 0:
            return np.zeros(1)
        if h is None:
            xs = np.sort(x)
            hs = np.ones_like(xs)
        else:
            order = np.argsort(x, kind="stable")
            xs = np.ascontiguousarray(x[order])
            hs = np.ascontiguousarray(h[order])
        c = linear_init(xs[0], xs[-1], self.k)
        kernels().kmeans_lloyd(xs, hs, c, self.iterations)
        c = np.unique(round_float(c, name).astype(np.float64))
        if not np.isfinite(c).all():
            raise UsageError(f"kmeans: a centroid is not finite in {name}")
        return c

    def _weights(self, importance, shape):
        h = importance if importance is not None else self.importance
        if h is None:
            return None
        h = np.asarray(h)
        if h.shape != tuple(shape):
            raise UsageError(f"kmeans: importance has shape {h.shape}, the tensor {tuple(shape)}")
        h = h.astype(np.float64).reshape(-1)
        if not (np.isfinite(h) & (h >= 0)).all():
            raise UsageError("kmeans: importance must be finite and non-negative")
        if h.size and not h.sum() > 0:
            raise UsageError("kmeans: importance is zero everywhere")
        return h

    def encode(self, arr: np.ndarray, ctx: Context) -> np.ndarray:
        if not self.fitted:
            raise ctx.error(UsageError, self.codec_id, f"KMeans(k={self.k}) has no centroids yet: encode with "
                                                       f"its fit(arr) (Writer.add and Pipeline.fit_encode do)")
        arr, name, flat = kernel_input(arr, self.codec_id, ctx)
        c = self.centroids
        if not np.isfinite(round_float(c, name)).all():
            raise ctx.error(UsageError, self.codec_id, f"a centroid is not finite in {name}")
        if not np.isfinite(flat).all():
            i = int(np.flatnonzero(~np.isfinite(flat))[0])
            raise ctx.error(UsageError, self.codec_id, f"element {i} is {flat[i]!r}; k-means needs finite values")
        mids = 0.5 * c[:-1] + 0.5 * c[1:]
        out = np.empty(flat.size, dtype=np.int32)
        kernels().assign_sorted(flat, mids, out)
        return out.reshape(arr.shape)

    def decode(self, arr: np.ndarray, spec: ArraySpec, ctx: Context) -> np.ndarray:
        if not self.fitted:
            raise ctx.error(UsageError, self.codec_id, "no centroids to decode with")
        idx = check_levels(arr, self.resolve(spec), ctx, self.codec_id).reshape(-1)
        table = round_float(self.centroids, spec.dtype)
        if not np.isfinite(table.astype(np.float64)).all():
            raise ctx.error(CorruptError, self.codec_id, f"a centroid is not finite in {spec.dtype}")
        uv = dtypes.uint_view(spec.dtype)
        out = np.empty(idx.size, dtype=uv)
        bad = kernels().gather(idx, table.view(uv), out)
        if bad >= 0:
            raise ctx.error(CorruptError, self.codec_id,
                            f"index {int(idx[bad])} at element {bad} is outside [0, {table.size})")
        return out.view(dtypes.to_numpy(spec.dtype)).reshape(spec.shape)


def linear_init(lo: float, hi: float, k: int) -> np.ndarray:
    """Initial centroids ``lo + (hi - lo) * (j / (k - 1))`` (all ``lo`` when k is 1)."""
    if k == 1:
        return np.array([lo], dtype=np.float64)
    t = np.arange(k, dtype=np.float64) / (k - 1)
    with np.errstate(over="ignore"):
        c = lo + (hi - lo) * t
    if not np.isfinite(c).all():  # hi - lo overflowed: interpolate without forming it
        c = lo * (1.0 - t) + hi * t
    c[-1] = hi
    return np.maximum.accumulate(c)
