"""The lossy quantizer stages: ``scalar``, ``lattice``, ``kmeans`` and ``prune``.

Each is an array->array stage. ``scalar``, ``lattice`` and ``kmeans`` map a
float tensor (float64, float32, float16 or bfloat16) to an int32 array of
levels and back; ``prune`` zeroes small weights and decodes as the identity.
An array->bytes stage (an entropy coder) follows them in a pipeline.

The formats are specified in spec/codecs/scalar.md, lattice.md, kmeans.md,
prune.md and spec/dither.md. The encoders are ours; decoders only depend on
what the pages fix.

Common rules:

* Every reconstruction is computed in float64, then rounded to the tensor's
  dtype: float64 as is; float32 round-to-nearest-even (RNE); float16 and
  bfloat16 RNE to float32 first, then RNE to the dtype.
* A decoder raises :class:`CorruptError` when a reconstructed value is not
  finite in the tensor's dtype, or the levels are not what the stage can
  produce.
* Encoders raise :class:`UsageError` on values that are not finite and on
  levels that do not fit int32 (naming the tensor and the fix).

``kmeans`` and ``prune`` may be data-dependent: built with ``k=`` or
``sparsity=``, they fit each tensor they encode and their configuration then
describes the last tensor encoded (``Writer.add`` stores it right after
encoding). Use one instance per thread.
"""

from __future__ import annotations

import math

import numpy as np

from .. import dither as _dither
from .. import dtypes
from ..errors import CorruptError, UnsupportedError, UsageError
from .base import ArraySpec, ArrayToArrayCodec, Context, cfg_choice, cfg_int, cfg_only

__all__ = ["Scalar", "Lattice", "KMeans", "Prune", "global_threshold", "sparsity_threshold", "FLOAT_DTYPES"]

#: dtypes the quantizers take
FLOAT_DTYPES = ("float64", "float32", "float16", "bfloat16")
LEVEL_MAX = 2**31 - 1
U64_MAX = 2**64 - 1
MAX_CENTROIDS = 1 << 16
_MISSING = object()


# ------------------------------------------------------------------ helpers


def _cfg_float(config: dict, key: str, codec_id: str, lo: float, hi: float = math.inf,
               lo_open: bool = False, default=_MISSING) -> float:
    v = config.get(key, default)
    ok = not isinstance(v, bool) and isinstance(v, (int, float))
    if ok:
        try:
            f = float(v)
        except OverflowError:
            ok = False
        else:
            ok = math.isfinite(f) and (f > lo if lo_open else f >= lo) and f <= hi
    if not ok:
        rng = f"{'(' if lo_open else '['}{lo!r}, {hi!r}]" if math.isfinite(hi) else f"{'>' if lo_open else '>='} {lo!r}"
        if v is _MISSING:
            raise CorruptError(f"codec {codec_id!r}: configuration {key!r} is missing (a finite number {rng})")
        raise CorruptError(f"codec {codec_id!r}: configuration {key!r} = {v!r:.100}, must be a finite number {rng}")
    return f


def _cfg_bool(config: dict, key: str, codec_id: str, default: bool) -> bool:
    v = config.get(key, default)
    if not isinstance(v, bool):
        raise CorruptError(f"codec {codec_id!r}: configuration {key!r} = {v!r:.100}, must be true or false")
    return v


def _float_arg(v, what: str, codec_id: str, lo: float, lo_open: bool, hi: float = math.inf) -> float:
    ok = not isinstance(v, (bool, np.bool_)) and isinstance(v, (int, float, np.floating, np.integer))
    if ok:
        try:
            f = float(v)
        except OverflowError:
            ok = False
        else:
            ok = math.isfinite(f) and (f > lo if lo_open else f >= lo) and f <= hi
    if not ok:
        raise UsageError(f"{codec_id}: {what} must be a finite number {'>' if lo_open else '>='} {lo}"
                         f"{'' if math.isinf(hi) else f' and <= {hi}'}, found {v!r:.100}")
    return f


def _u64_arg(v, what: str, codec_id: str) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or not 0 <= int(v) <= U64_MAX:
        raise UsageError(f"{codec_id}: {what} must be an integer in [0, 2**64 - 1], found {v!r:.100}")
    return int(v)


def _check_float_spec(spec: ArraySpec, codec_id: str) -> None:
    if spec.dtype not in FLOAT_DTYPES:
        raise UnsupportedError(
            f"codec {codec_id!r} quantizes {', '.join(FLOAT_DTYPES)} tensors, not {spec.dtype}"
        )


def _kernel_input(arr: np.ndarray, codec_id: str, ctx: Context):
    """The tensor as a flat float32/float64 array (exact), and its stored form."""
    arr, name = dtypes.as_stored(arr)
    if name not in FLOAT_DTYPES:
        raise ctx.error(UnsupportedError, codec_id, f"quantizes {', '.join(FLOAT_DTYPES)} tensors, not {name}")
    flat = arr.reshape(-1)
    if name in ("float16", "bfloat16"):
        flat = flat.astype(np.float32)
    return arr, name, flat


def _work_dtype(name: str):
    """The dtype kernels write reconstructions in: float64 for float64, else float32."""
    return np.float64 if name == "float64" else np.float32


def to_dtype(values: np.ndarray, name: str) -> np.ndarray:
    """Round float64 or float32 values to the tensor dtype ``name`` by the stages' rule."""
    if name == "float64":
        return values.astype(np.float64, copy=False)
    with np.errstate(over="ignore"):
        v32 = values.astype(np.float32, copy=False)
        if name == "float32":
            return v32
        return v32.astype(dtypes.to_numpy(name))


def _finish(work: np.ndarray, spec: ArraySpec, ctx: Context, codec_id: str) -> np.ndarray:
    out = to_dtype(work, spec.dtype)
    if spec.dtype in ("float16", "bfloat16"):
        with np.errstate(over="ignore"):
            bad = ~np.isfinite(out)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ctx.error(CorruptError, codec_id,
                            f"element {i} reconstructs to {work[i]!r}, not finite in {spec.dtype}")
    return out.reshape(spec.shape)


def _check_levels(arr: np.ndarray, want: ArraySpec, ctx: Context, codec_id: str) -> np.ndarray:
    got = ArraySpec.of(np.asarray(arr))
    if got != want:
        raise ctx.error(CorruptError, codec_id, f"levels are {got.dtype}{list(got.shape)}, expected "
                                                f"{want.dtype}{list(want.shape)}")
    return np.ascontiguousarray(arr, dtype=np.int32)


def _bad_input(ctx: Context, codec_id: str, status: int, index: int, flat, step: float, extra: str = ""):
    if status == 1:
        return ctx.error(UsageError, codec_id, f"element {index} is {flat[index]!r}; quantizers need finite values")
    return ctx.error(
        UsageError, codec_id,
        f"element {index} = {flat[index]!r} needs a level beyond int32 with step {step!r}{extra}; "
        f"use a larger step",
    )


def _dither_config(cfg: dict, dither: bool, seed: int, stream: int) -> None:
    if dither:
        cfg["dither"] = True
        cfg["seed"] = seed
        cfg["stream"] = stream


def _dither_from_config(config: dict, codec_id: str):
    dither = _cfg_bool(config, "dither", codec_id, False)
    if dither:
        for k in ("seed", "stream"):
            if k not in config:
                raise CorruptError(f"codec {codec_id!r}: configuration {k!r} is missing (required with dither)")
        seed = cfg_int(config, "seed", codec_id, 0, U64_MAX)
        stream = cfg_int(config, "stream", codec_id, 0, U64_MAX)
    else:
        extra = sorted({"seed", "stream"} & set(config))
        if extra:
            raise CorruptError(f"codec {codec_id!r}: configuration {extra} given without dither")
        seed = stream = 0
    return dither, seed, stream


# ------------------------------------------------------------------ scalar


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
        self.step = _float_arg(step, "step", self.codec_id, 0.0, True)
        if not isinstance(dither, (bool, np.bool_)):
            raise UsageError(f"scalar: dither must be True or False, found {dither!r}")
        self.dither = bool(dither)
        self.seed = _u64_arg(seed, "seed", self.codec_id)
        self.stream = _u64_arg(stream, "stream", self.codec_id)
        if not self.dither:  # seed and stream only matter with dither
            self.seed = self.stream = 0
        self.rd_lambda = _float_arg(rd_lambda, "rd_lambda", self.codec_id, 0.0, False)

    def get_config(self) -> dict:
        cfg = {"step": self.step}
        _dither_config(cfg, self.dither, self.seed, self.stream)
        if self.rd_lambda:
            cfg["rd_lambda"] = self.rd_lambda
        return cfg

    @classmethod
    def from_config(cls, config: dict) -> "Scalar":
        cid = cls.codec_id
        cfg_only(config, cid, ("step", "dither", "seed", "stream", "rd_lambda"))
        step = _cfg_float(config, "step", cid, 0.0, lo_open=True)
        dither, seed, stream = _dither_from_config(config, cid)
        lam = _cfg_float(config, "rd_lambda", cid, 0.0, default=0.0)
        return cls(step, dither=dither, seed=seed, stream=stream, rd_lambda=lam)

    def _key(self):
        return np.uint64(_dither.key(self.seed, self.stream) if self.dither else 0)

    def resolve(self, spec: ArraySpec) -> ArraySpec:
        _check_float_spec(spec, self.codec_id)
        return ArraySpec("int32", spec.shape)

    def encode(self, arr: np.ndarray, ctx: Context) -> np.ndarray:
        from ..kernels import quant as kq

        arr, name, flat = _kernel_input(arr, self.codec_id, ctx)
        out = np.empty(flat.size, dtype=np.int32)
        if self.rd_lambda > 0.0:
            status, index, mx = kq.scalar_encode_rd(flat, self.step, self.dither, self._key(), self.rd_lambda, out)
        else:
            status, index, mx = kq.scalar_encode(flat, self.step, self.dither, self._key(), out)
        if status:
            raise _bad_input(ctx, self.codec_id, status, index, flat, self.step)
        # the reconstruction must be finite in the dtype; |w^| <= (max level + 1) * step
        with np.errstate(over="ignore"):
            bound = to_dtype(np.array([(mx + 1.0) * self.step]), name)
        if not np.isfinite(bound).all():
            spec = ArraySpec(name, arr.shape)
            try:
                self.decode(out.reshape(arr.shape), spec, ctx)
            except CorruptError as e:
                raise ctx.error(UsageError, self.codec_id,
                                f"step {self.step!r} is too large for {name}: {e}; use a smaller step") from None
        return out.reshape(arr.shape)

    def decode(self, arr: np.ndarray, spec: ArraySpec, ctx: Context) -> np.ndarray:
        from ..kernels import quant as kq

        q = _check_levels(arr, self.resolve(spec), ctx, self.codec_id).reshape(-1)
        work = np.empty(q.size, dtype=_work_dtype(spec.dtype))
        bad = kq.scalar_decode(q, self.step, self.dither, self._key(), work)
        if bad >= 0:
            raise ctx.error(CorruptError, self.codec_id,
                            f"level {int(q[bad])} at element {bad} reconstructs to a value not finite in {spec.dtype}")
        return _finish(work, spec, ctx, self.codec_id)


# ------------------------------------------------------------------ lattice


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
        self.step = _float_arg(step, "step", self.codec_id, 0.0, True)
        if not isinstance(dither, (bool, np.bool_)):
            raise UsageError(f"lattice: dither must be True or False, found {dither!r}")
        self.dither = bool(dither)
        self.seed = _u64_arg(seed, "seed", self.codec_id)
        self.stream = _u64_arg(stream, "stream", self.codec_id)
        if not self.dither:  # seed and stream only matter with dither
            self.seed = self.stream = 0

    @property
    def dim(self) -> int:
        return _LATTICES[self.lattice][1]

    def get_config(self) -> dict:
        cfg = {"lattice": self.lattice, "step": self.step}
        _dither_config(cfg, self.dither, self.seed, self.stream)
        return cfg

    @classmethod
    def from_config(cls, config: dict) -> "Lattice":
        cid = cls.codec_id
        cfg_only(config, cid, ("lattice", "step", "dither", "seed", "stream"))
        lattice = cfg_choice(config, "lattice", cid, tuple(_LATTICES))
        step = _cfg_float(config, "step", cid, 0.0, lo_open=True)
        dither, seed, stream = _dither_from_config(config, cid)
        return cls(lattice, step, dither=dither, seed=seed, stream=stream)

    def _args(self):
        from ..kernels import quant as kq

        kind = _LATTICES[self.lattice][0]
        g = kq._G_D4 if kind == kq.D4 else kq._G_E8
        key = np.uint64(_dither.key(self.seed, self.stream) if self.dither else 0)
        return kq, kind, g, key

    def resolve(self, spec: ArraySpec) -> ArraySpec:
        _check_float_spec(spec, self.codec_id)
        d = self.dim
        return ArraySpec("int32", (-(-spec.size // d), d))

    def encode(self, arr: np.ndarray, ctx: Context) -> np.ndarray:
        kq, kind, g, key = self._args()
        arr, name, flat = _kernel_input(arr, self.codec_id, ctx)
        spec = ArraySpec(name, arr.shape)
        out = np.empty(self.resolve(spec).shape, dtype=np.int32)
        status, index = kq.lattice_encode(flat, kind, g, self.step, self.dither, key, out)
        if status:
            if index >= flat.size:  # a padding coordinate cannot fail, but never index past the end
                index = flat.size - 1
            raise _bad_input(ctx, self.codec_id, status, index, flat, self.step,
                             " (E8 stores coordinates times two)" if kind else "")
        if out.size:
            mx = float(np.abs(out.astype(np.int64)).max())
            s = self.step if kind == kq.D4 else self.step * 0.5
            with np.errstate(over="ignore"):
                bound = to_dtype(np.array([mx * s + self.step]), name)  # |dither| <= covering radius = step
            if not np.isfinite(bound).all():
                try:
                    self.decode(out, spec, ctx)
                except CorruptError as e:
                    raise ctx.error(UsageError, self.codec_id,
                                    f"step {self.step!r} is too large for {name}: {e}; use a smaller step") from None
        return out

    def decode(self, arr: np.ndarray, spec: ArraySpec, ctx: Context) -> np.ndarray:
        kq, kind, g, key = self._args()
        k = _check_levels(arr, self.resolve(spec), ctx, self.codec_id)
        work = np.empty(spec.size, dtype=_work_dtype(spec.dtype))
        status, index = kq.lattice_decode(k, kind, g, self.step, self.dither, key, work)
        if status == 1:
            raise ctx.error(CorruptError, self.codec_id,
                            f"vector {index} = {k[index].tolist()} is not a point of {self.lattice}"
                            + (" (coordinates times two)" if kind else ""))
        if status:
            raise ctx.error(CorruptError, self.codec_id,
                            f"element {index} reconstructs to a value not finite in {spec.dtype}")
        return _finish(work, spec, ctx, self.codec_id)


# ------------------------------------------------------------------ k-means


class KMeans(ArrayToArrayCodec):
    """Weight sharing: each weight is replaced by the nearest of a few centroids (spec/codecs/kmeans.md).

    ``KMeans(k=16)`` fits ``k`` centroids to each tensor it encodes: 1-D
    weighted k-means with linear initialization over [min, max] and at most
    ``iterations`` Lloyd steps, with ``importance`` (e.g. a Hessian diagonal,
    same shape as the tensor, non-negative) as the weights of the means.
    The centroids, rounded to the tensor's dtype, are stored in the
    configuration; the levels are int32 indices into them.
    ``KMeans(centroids=[...])`` uses given centroids (a shared codebook).
    """

    codec_id = "kmeans"

    def __init__(self, k: int | None = None, *, centroids=None, iterations: int = 30, importance=None):
        if (k is None) == (centroids is None):
            raise UsageError("kmeans: give exactly one of k (fit per tensor) and centroids")
        if (isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer))
                or not 0 <= iterations <= 10_000):
            raise UsageError(f"kmeans: iterations must be an integer in [0, 10000], found {iterations!r}")
        self.iterations = int(iterations)
        self.importance = None if importance is None else np.asarray(importance)
        if k is not None:
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= MAX_CENTROIDS:
                raise UsageError(f"kmeans: k must be an integer in [1, {MAX_CENTROIDS}], found {k!r}")
            self.k = int(k)
            self.centroids = None
            self._fits = True
        else:
            c = np.asarray(centroids, dtype=np.float64).reshape(-1)
            if not 1 <= c.size <= MAX_CENTROIDS or not np.isfinite(c).all() or not (np.diff(c) > 0).all():
                raise UsageError(f"kmeans: centroids must be 1 to {MAX_CENTROIDS} finite numbers, strictly "
                                 f"increasing, found {c[:8].tolist()}{'...' if c.size > 8 else ''}")
            self.k = int(c.size)
            self.centroids = c
            self._fits = False

    def get_config(self) -> dict:
        if self.centroids is None:
            raise UsageError("kmeans: the centroids are known once a tensor is encoded (or pass centroids=)")
        return {"centroids": [float(v) for v in self.centroids]}

    @classmethod
    def from_config(cls, config: dict) -> "KMeans":
        cid = cls.codec_id
        cfg_only(config, cid, ("centroids",))
        c = config.get("centroids", _MISSING)
        if not isinstance(c, list) or not 1 <= len(c) <= MAX_CENTROIDS:
            raise CorruptError(f"codec {cid!r}: configuration 'centroids' must be a list of 1 to "
                               f"{MAX_CENTROIDS} numbers, found {c if c is not _MISSING else 'nothing'!r:.100}")
        vals = [_cfg_float({"centroids": v}, "centroids", cid, -math.inf) for v in c]
        for i in range(1, len(vals)):
            if not vals[i - 1] < vals[i]:
                raise CorruptError(f"codec {cid!r}: configuration 'centroids' must be strictly increasing, "
                                   f"found {vals[i - 1]!r} then {vals[i]!r} at index {i}")
        return cls(centroids=vals)

    def _state(self):
        if self.centroids is not None and not self._fits:
            return ("centroids", tuple(self.centroids.tolist()))
        return ("k", self.k, self.iterations, self.importance is not None)

    def __eq__(self, other):
        return type(self) is type(other) and self._state() == other._state()

    def __hash__(self):
        return hash(self._state())

    def __repr__(self):
        if not self._fits:
            return f"KMeans(centroids={self.centroids.tolist()!r})"
        return f"KMeans(k={self.k}, iterations={self.iterations})"

    def resolve(self, spec: ArraySpec) -> ArraySpec:
        _check_float_spec(spec, self.codec_id)
        return ArraySpec("int32", spec.shape)

    def fit(self, arr, importance=None) -> np.ndarray:
        """The centroids (float64, strictly increasing, representable in the dtype) for ``arr``."""
        from ..kernels import quant as kq

        ctx = Context()
        arr, name, flat = _kernel_input(arr, self.codec_id, ctx)
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
        kq.kmeans_lloyd(xs, hs, c, self.iterations)
        c = np.unique(to_dtype(c, name).astype(np.float64))
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
        from ..kernels import quant as kq

        arr, name, flat = _kernel_input(arr, self.codec_id, ctx)
        if self._fits:
            try:
                self.centroids = self.fit(arr)
            except UsageError as e:
                raise ctx.error(UsageError, self.codec_id, str(e)) from None
        c = self.centroids
        if not np.isfinite(to_dtype(c, name)).all():
            raise ctx.error(UsageError, self.codec_id, f"a centroid is not finite in {name}")
        if not np.isfinite(flat).all():
            i = int(np.flatnonzero(~np.isfinite(flat))[0])
            raise ctx.error(UsageError, self.codec_id, f"element {i} is {flat[i]!r}; k-means needs finite values")
        mids = 0.5 * c[:-1] + 0.5 * c[1:]
        out = np.empty(flat.size, dtype=np.int32)
        kq.assign_sorted(flat, mids, out)
        return out.reshape(arr.shape)

    def decode(self, arr: np.ndarray, spec: ArraySpec, ctx: Context) -> np.ndarray:
        from ..kernels import quant as kq

        if self.centroids is None:
            raise ctx.error(UsageError, self.codec_id, "no centroids to decode with")
        idx = _check_levels(arr, self.resolve(spec), ctx, self.codec_id).reshape(-1)
        table = to_dtype(self.centroids, spec.dtype)
        if not np.isfinite(table.astype(np.float64)).all():
            raise ctx.error(CorruptError, self.codec_id, f"a centroid is not finite in {spec.dtype}")
        uv = dtypes.uint_view(spec.dtype)
        out = np.empty(idx.size, dtype=uv)
        bad = kq.gather(idx, table.view(uv), out)
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


# ------------------------------------------------------------------ pruning


def sparsity_threshold(magnitudes: np.ndarray, sparsity: float) -> float:
    """The threshold that prunes at least ``floor(sparsity * n)`` of ``magnitudes``.

    It is the smallest float64 above the k-th smallest magnitude, so every
    weight with that magnitude or less goes (ties go together); 0.0 when k is 0.
    """
    s = _float_arg(sparsity, "sparsity", "prune", 0.0, False, 1.0)
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
    ``Prune(sparsity=s)`` picks each tensor's threshold so that at least
    ``floor(s * size)`` weights go. The configuration records the threshold
    applied and the fraction of zeros that came out. Decoding is the identity.
    """

    codec_id = "prune"

    def __init__(self, threshold: float | None = None, *, sparsity: float | None = None):
        if (threshold is None) == (sparsity is None):
            raise UsageError("prune: give exactly one of threshold and sparsity")
        self.target = None if sparsity is None else _float_arg(sparsity, "sparsity", "prune", 0.0, False, 1.0)
        self.threshold = None if threshold is None else _float_arg(threshold, "threshold", "prune", 0.0, False)
        self.sparsity = None  #: fraction of zeros in the last output (recorded in the configuration)

    def get_config(self) -> dict:
        if self.threshold is None:
            raise UsageError("prune: the threshold is known once a tensor is encoded (or pass threshold=)")
        cfg = {"threshold": self.threshold}
        if self.sparsity is not None:
            cfg["sparsity"] = self.sparsity
        return cfg

    @classmethod
    def from_config(cls, config: dict) -> "Prune":
        cid = cls.codec_id
        cfg_only(config, cid, ("threshold", "sparsity"))
        t = _cfg_float(config, "threshold", cid, 0.0)
        p = cls(threshold=t)
        if "sparsity" in config:
            p.sparsity = _cfg_float(config, "sparsity", cid, 0.0, 1.0)
        return p

    def _state(self):
        if self.target is not None:
            return ("target", self.target)
        return ("threshold", self.threshold, self.sparsity)

    def __eq__(self, other):
        return type(self) is type(other) and self._state() == other._state()

    def __hash__(self):
        return hash(self._state())

    def __repr__(self):
        if self.target is not None:
            return f"Prune(sparsity={self.target!r})"
        return f"Prune(threshold={self.threshold!r})"

    def resolve(self, spec: ArraySpec) -> ArraySpec:
        if dtypes.kind(spec.dtype) != "f":
            raise UnsupportedError(f"codec 'prune' takes float tensors, not {spec.dtype}")
        return spec

    def encode(self, arr: np.ndarray, ctx: Context) -> np.ndarray:
        from ..kernels import quant as kq

        arr, name = dtypes.as_stored(arr)
        if dtypes.kind(name) != "f":
            raise ctx.error(UnsupportedError, self.codec_id, f"takes float tensors, not {name}")
        flat = arr.reshape(-1)
        mag = flat if name in ("float32", "float64") else flat.astype(np.float32)
        if self.target is not None:
            try:
                self.threshold = sparsity_threshold(np.abs(mag), self.target)
            except UsageError as e:
                raise ctx.error(UsageError, self.codec_id, str(e)) from None
        uv = dtypes.uint_view(name)
        out = np.empty(flat.size, dtype=uv)
        zeros = kq.prune_apply(mag, flat.view(uv), self.threshold, out)
        self.sparsity = zeros / flat.size if flat.size else 0.0
        return out.view(arr.dtype).reshape(arr.shape)

    def decode(self, arr: np.ndarray, spec: ArraySpec, ctx: Context) -> np.ndarray:
        got = ArraySpec.of(np.asarray(arr))
        if got != spec:
            raise ctx.error(CorruptError, self.codec_id, f"input is {got.dtype}{list(got.shape)}, expected "
                                                        f"{spec.dtype}{list(spec.shape)}")
        return arr
