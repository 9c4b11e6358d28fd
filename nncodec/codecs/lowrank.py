"""``lowrank``: a truncated SVD W ~ A.B of a float tensor viewed as a matrix (spec/codecs/lowrank.md).

An array->array stage over float tensors of rank 2 or more: A = U.diag(sqrt s)
and B = diag(sqrt s).V^T, stored as A then B in the working dtype (float64 for
float64 tensors, float32 otherwise); lossy, with squared Frobenius error equal
to the sum of the discarded squared singular values. ``LowRank(energy=...)``
and ``LowRank(rd_slope=...)`` describe a choice of rank, not yet a codec:
:meth:`LowRank.fit` (called by ``Writer.add`` and
:meth:`nncodec.pipeline.Pipeline.fit_encode`) returns ``LowRank(rank=r)``.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import CorruptError, UsageError
from .base import ArraySpec, ArrayToArrayCodec, Context, cfg_int, cfg_only
from .floatcodec import check_float_spec, check_input, finish, float_input, work_name

__all__ = ["LowRank", "choose_rank", "singular_values", "MAX_RANK"]

#: largest rank a ``lowrank`` configuration may declare
MAX_RANK = (1 << 31) - 1




def _matrix_shape(shape: tuple, rows: int, err=CorruptError) -> tuple[int, int]:
    if len(shape) < 2:
        raise err(f"codec 'lowrank' factorizes tensors of rank 2 or more, not shape {list(shape)}")
    if not 1 <= rows <= len(shape) - 1:
        raise err(f"codec 'lowrank': rows = {rows} for shape {list(shape)}; must be in [1, {len(shape) - 1}]")
    return math.prod(shape[:rows]), math.prod(shape[rows:])


def singular_values(w, rows: int = 1) -> np.ndarray:
    """The singular values (float64, descending) of ``w`` viewed as a matrix (see :class:`LowRank`)."""
    w = np.asarray(w)
    m, n = _matrix_shape(w.shape, rows, UsageError)
    x = w.astype(np.float64).reshape(m, n)
    if x.size == 0:
        return np.zeros(0)
    if not np.isfinite(x).all():
        raise UsageError("lowrank: the tensor has values that are not finite")
    return np.linalg.svd(x, compute_uv=False)


def _rank_from_s(s: np.ndarray, m: int, n: int, energy=None, rd_slope=None) -> int:
    if (energy is None) == (rd_slope is None):
        raise UsageError("lowrank: give exactly one of energy and rd_slope")
    e2 = s.astype(np.float64) ** 2
    if energy is not None:
        if isinstance(energy, bool) or not isinstance(energy, (int, float, np.floating, np.integer)) \
                or not 0.0 <= float(energy) <= 1.0:
            raise UsageError(f"lowrank: energy must be a number in [0, 1], found {energy!r}")
        total = float(e2.sum())
        if total == 0.0 or float(energy) == 0.0:
            return 0
        kept = np.cumsum(e2)
        r = int(np.searchsorted(kept, float(energy) * total, side="left")) + 1
        return min(r, s.size)
    if isinstance(rd_slope, bool) or not isinstance(rd_slope, (int, float, np.floating, np.integer)) \
            or not (math.isfinite(float(rd_slope)) and float(rd_slope) >= 0.0):
        raise UsageError(f"lowrank: rd_slope must be a finite number >= 0, found {rd_slope!r}")
    # keep component i iff the distortion it removes beats the cost of its m + n parameters
    return int(np.count_nonzero(e2 > float(rd_slope) * (m + n)))


def choose_rank(w, energy=None, rd_slope=None, rows: int = 1) -> int:
    """The rank to keep for ``w`` (viewed as a matrix with ``rows`` leading axes as rows).

    * ``energy=e`` (in [0, 1]): the smallest r with sum(s[:r]**2) >= e * sum(s**2)
      (0 for an all-zero tensor).
    * ``rd_slope=lam`` (>= 0): the r minimizing ``D(r) + lam * r * (m + n)``, with
      D(r) = sum(s[r:]**2) the squared error and r*(m + n) the stored values:
      component i is kept iff s_i**2 > lam * (m + n).
    """
    w = np.asarray(w)
    m, n = _matrix_shape(w.shape, rows, UsageError)
    return _rank_from_s(singular_values(w, rows), m, n, energy, rd_slope)


class LowRank(ArrayToArrayCodec):
    """Truncated SVD W ~ A.B, stored as A (m x r) then B (r x n) (spec/codecs/lowrank.md).

    The tensor is viewed as an m x n matrix: m = product of its first ``rows``
    axes, n = product of the rest (``rows=1`` makes a conv weight
    ``(out, in, kh, kw)`` the matrix ``(out, in*kh*kw)``). Give exactly one of
    ``rank`` (fixed), ``energy`` or ``rd_slope`` (chosen per tensor by
    :func:`choose_rank` by :meth:`fit`, which returns ``LowRank(rank=r)``).
    """

    codec_id = "lowrank"

    def __init__(self, rank: int | None = None, *, energy=None, rd_slope=None, rows: int = 1):
        given = [v is not None for v in (rank, energy, rd_slope)]
        if sum(given) != 1:
            raise UsageError("lowrank: give exactly one of rank, energy and rd_slope")
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, (int, np.integer))
                                 or not 0 <= rank <= MAX_RANK):
            raise UsageError(f"lowrank: rank must be an integer in [0, {MAX_RANK}], found {rank!r}")
        if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)) or not 1 <= rows <= 31:
            raise UsageError(f"lowrank: rows must be an integer in [1, 31], found {rows!r}")
        if energy is not None:
            _rank_from_s(np.zeros(0), 0, 0, energy=energy)  # validates
        if rd_slope is not None:
            _rank_from_s(np.zeros(0), 0, 0, rd_slope=rd_slope)
        self.rank = None if rank is None else int(rank)
        self.energy = energy
        self.rd_slope = rd_slope
        self.rows = int(rows)

    @property
    def fitted(self) -> bool:
        """True when the rank is known (the codec can encode, decode and be stored)."""
        return self.rank is not None

    def get_config(self) -> dict:
        if not self.fitted:
            raise UsageError("lowrank: the rank is known once fitted to a tensor (LowRank(energy=...).fit(arr)), "
                             "or pass rank=")
        return {"rank": self.rank, "rows": self.rows}

    @classmethod
    def from_config(cls, config: dict) -> "LowRank":
        cid = cls.codec_id
        cfg_only(config, cid, ("rank", "rows"))
        return cls(rank=cfg_int(config, "rank", cid, 0, MAX_RANK), rows=cfg_int(config, "rows", cid, 1, 31))

    def _identity(self):
        if not self.fitted:
            return ("fit", self.energy, self.rd_slope, self.rows)
        return ("rank", self.rank, self.rows)

    def __repr__(self):
        if not self.fitted:
            what = f"energy={self.energy!r}" if self.energy is not None else f"rd_slope={self.rd_slope!r}"
            return f"LowRank({what}, rows={self.rows})"
        return f"LowRank(rank={self.rank}, rows={self.rows})"

    def resolve(self, spec: ArraySpec) -> ArraySpec:
        check_float_spec(spec, self.codec_id, "transforms")
        m, n = _matrix_shape(tuple(spec.shape), self.rows)
        if not self.fitted:
            raise UsageError("lowrank: the rank is known once fitted to a tensor (or pass rank=)")
        if self.rank > min(m, n):
            raise CorruptError(f"codec 'lowrank': rank {self.rank} exceeds min({m}, {n}) for shape "
                               f"{list(spec.shape)} with rows={self.rows}")
        return ArraySpec(work_name(spec.dtype), (self.rank * (m + n),))

    def fit(self, arr: np.ndarray, ctx: Context | None = None) -> "LowRank":
        """``LowRank(rank=r, rows=...)`` with the rank chosen for ``arr`` (``self`` when the rank is given)."""
        return self if self.fitted else self.fit_encode(arr, ctx or Context())[0]

    def fit_encode(self, arr: np.ndarray, ctx: Context) -> tuple["LowRank", np.ndarray]:
        """The fitted codec and the factors, from one SVD."""
        m, n, name, svd = self._svd(arr, ctx)
        codec = self
        if not self.fitted:
            codec = LowRank(rank=_rank_from_s(svd[1], m, n, self.energy, self.rd_slope), rows=self.rows)
        return codec, codec._factors(m, n, name, svd, ctx)

    def encode(self, arr: np.ndarray, ctx: Context) -> np.ndarray:
        if not self.fitted:
            raise ctx.error(UsageError, self.codec_id, f"{self!r} has no rank yet: encode with its fit(arr) "
                                                       f"(Writer.add and Pipeline.fit_encode do)")
        m, n, name, svd = self._svd(arr, ctx)
        return self._factors(m, n, name, svd, ctx)

    def _svd(self, arr, ctx: Context):
        arr, name, x = float_input(arr, self.codec_id, ctx)
        try:
            m, n = _matrix_shape(x.shape, self.rows, UsageError)
        except UsageError as e:
            raise ctx.error(UsageError, self.codec_id, str(e)) from None
        w = x.reshape(m, n)
        if w.size:
            svd = np.linalg.svd(w, full_matrices=False)
        else:
            svd = np.zeros((m, 0)), np.zeros(0), np.zeros((0, n))
        return m, n, name, svd

    def _factors(self, m: int, n: int, name: str, svd, ctx: Context) -> np.ndarray:
        u, s, vt = svd
        r = self.rank
        if r > min(m, n):
            raise ctx.error(UsageError, self.codec_id, f"rank {r} exceeds min({m}, {n}); use a rank <= {min(m, n)}")
        rs = np.sqrt(s[:r])
        a = u[:, :r] * rs[None, :]
        b = rs[:, None] * vt[:r]
        return np.concatenate([a.reshape(-1), b.reshape(-1)]).astype(work_name(name))

    def decode(self, arr: np.ndarray, spec: ArraySpec, ctx: Context) -> np.ndarray:
        y = check_input(arr, self.resolve(spec), ctx, self.codec_id)
        if y.size and not np.isfinite(y).all():
            i = int(np.flatnonzero(~np.isfinite(y))[0])
            raise ctx.error(CorruptError, self.codec_id, f"factor element {i} is {y[i]!r}, not finite")
        m, n = _matrix_shape(tuple(spec.shape), self.rows)
        r = self.rank
        a = y[: m * r].reshape(m, r)
        b = y[m * r:].reshape(r, n)
        with np.errstate(over="ignore", invalid="ignore"):
            w = a @ b if r else np.zeros((m, n))
        return finish(w, spec, ctx, self.codec_id)
