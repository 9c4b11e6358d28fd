"""Plain-NumPy versions of the kernels in :mod:`nncodec.kernels.quant`.

Each function does the same float64 operations in the same order as its kernel,
so results agree bit for bit; the tests compare them on generated inputs. They
are also the shortest statement of each algorithm next to the spec pages
(spec/codecs/scalar.md, lattice.md, kmeans.md, prune.md; spec/dither.md).
Sums whose order matters are written as explicit left-to-right loops, never
``np.sum`` (which adds pairwise).
"""

from __future__ import annotations

import numpy as np

from nncodec.dither import uniform_numpy

LEVEL_MAX = 2147483647.0
D4, E8 = 0, 1

G_D4 = np.array(
    [[2, 0, 0, 0],
     [1, 1, 0, 0],
     [0, 1, 1, 0],
     [0, 0, 1, 1]], dtype=np.float64)
G_E8 = np.array(
    [[2, 0, 0, 0, 0, 0, 0, 0],
     [-1, 1, 0, 0, 0, 0, 0, 0],
     [0, -1, 1, 0, 0, 0, 0, 0],
     [0, 0, -1, 1, 0, 0, 0, 0],
     [0, 0, 0, -1, 1, 0, 0, 0],
     [0, 0, 0, 0, -1, 1, 0, 0],
     [0, 0, 0, 0, 0, -1, 1, 0],
     [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]], dtype=np.float64)


def _first(mask) -> int:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if hits.size else -1


# ------------------------------------------------------------------ scalar


def scalar_dither(n: int, step: float, key: int) -> np.ndarray:
    """u[i] = (r[i] - 0.5) * step."""
    return (uniform_numpy(key, 0, n) - 0.5) * step


def _scalar_t(x, step, dithered, key):
    x = np.asarray(x).astype(np.float64)
    if dithered:
        return (x + scalar_dither(x.size, step, key)) / step
    return x / step


def scalar_encode(x, step, dithered, key):
    """Return ``(status, index, max_level, levels)`` as the kernel does (levels valid when status is 0)."""
    with np.errstate(invalid="ignore", over="ignore"):
        xf = np.asarray(x).astype(np.float64)
        q = np.rint(_scalar_t(x, step, dithered, key))
    ok = np.abs(q) <= LEVEL_MAX
    if not ok.all():
        i = _first(~ok)
        return (1 if not np.isfinite(xf[i]) else 2), i, 0.0, None
    m = float(np.abs(q).max()) if q.size else 0.0
    return 0, -1, m, q.astype(np.int32)


def eg_bits(a: np.ndarray) -> np.ndarray:
    """Bits of level magnitudes ``a`` under the RD model: 1 for 0, else 2*floor(log2(a+1)) + 2."""
    a = np.asarray(a, dtype=np.float64)
    e = np.frexp(a + 1.0)[1] - 1  # floor(log2(a + 1)), exact for integers below 2**53
    return np.where(a == 0.0, 1.0, (2 * e + 2).astype(np.float64))


def rd_cost(t, k, lam):
    """The RD cost ``(t - k)**2 + lam * bits(k)`` the encoder minimizes."""
    d = np.asarray(t, dtype=np.float64) - np.asarray(k, dtype=np.float64)
    return d * d + lam * eg_bits(np.abs(k))


def scalar_encode_rd(x, step, dithered, key, lam):
    with np.errstate(invalid="ignore", over="ignore"):
        xf = np.asarray(x).astype(np.float64)
        t = _scalar_t(x, step, dithered, key)
        k0 = np.rint(t)
    ok = np.abs(k0) <= LEVEL_MAX
    if not ok.all():
        i = _first(~ok)
        return (1 if not np.isfinite(xf[i]) else 2), i, 0.0, None
    best = k0.copy()
    jbest = rd_cost(t, k0, lam)
    k1 = np.where(k0 > 0.0, k0 - 1.0, k0 + 1.0)
    has1 = k0 != 0.0
    j1 = rd_cost(t, k1, lam)
    take = has1 & (j1 < jbest)
    best[take] = k1[take]
    jbest[take] = j1[take]
    has0 = has1 & (k1 != 0.0)
    j0 = t * t + lam
    take = has0 & (j0 < jbest)
    best[take] = 0.0
    m = float(np.abs(best).max()) if best.size else 0.0
    return 0, -1, m, best.astype(np.int32)


def scalar_decode(q, step, dithered, key, out_dtype):
    """Return ``(values, bad_index)``; values in ``out_dtype`` (float32 or float64)."""
    with np.errstate(over="ignore", invalid="ignore"):
        v = np.asarray(q).astype(np.float64) * step
        if dithered:
            v = v - scalar_dither(v.size, step, key)
        out = v.astype(out_dtype)
    return out, _first(~np.isfinite(out))


# ------------------------------------------------------------------ lattice


def nearest_dn(y: np.ndarray) -> np.ndarray:
    """Nearest D_n points to the rows of ``y`` (tie rules of spec/codecs/lattice.md)."""
    f = np.rint(y)
    s = f.astype(np.int64).sum(axis=1)
    e = np.abs(y - f)
    j = np.argmax(e, axis=1)  # the first largest
    rows = np.flatnonzero(s & 1)
    jj = j[rows]
    down = (y[rows, jj] - f[rows, jj]) < 0.0
    f[rows, jj] += np.where(down, -1.0, 1.0)
    return f


def _seqsum(cols) -> np.ndarray:
    acc = np.zeros_like(cols[0])
    for c in cols:
        acc = acc + c
    return acc


def nearest(kind: int, y: np.ndarray) -> np.ndarray:
    """Nearest lattice points to the rows of ``y``: D4 coordinates, E8 coordinates times two."""
    if kind == D4:
        return nearest_dn(y)
    a = nearest_dn(y)
    yh = y - 0.5
    b = nearest_dn(yh)
    ea = y - a
    eb = yh - b
    da = _seqsum([ea[:, j] * ea[:, j] for j in range(8)])
    db = _seqsum([eb[:, j] * eb[:, j] for j in range(8)])
    return np.where((da <= db)[:, None], 2.0 * a, 2.0 * b + 1.0)


def lattice_dither(kind: int, nvec: int, step: float, key: int) -> np.ndarray:
    """The dither u of shape ``(nvec, dim)`` (weight units)."""
    g = G_D4 if kind == D4 else G_E8
    dim = g.shape[0]
    r = uniform_numpy(key, 0, nvec * dim).reshape(nvec, dim)
    v = np.empty((nvec, dim))
    for i in range(dim):
        v[:, i] = _seqsum([r[:, j] * g[j, i] for j in range(dim)])
    k = nearest(kind, v)
    d = v - k if kind == D4 else v - k * 0.5
    return d * step


def lattice_encode(x, kind, step, dithered, key):
    """Return ``(status, index, points)`` as the kernel does."""
    dim = 4 if kind == D4 else 8
    xf = np.asarray(x).astype(np.float64)
    n = xf.size
    nvec = -(-n // dim)
    xp = np.zeros(nvec * dim)
    xp[:n] = xf
    xp = xp.reshape(nvec, dim)
    with np.errstate(invalid="ignore", over="ignore"):
        if dithered:
            y = (xp + lattice_dither(kind, nvec, step, key)) / step
        else:
            y = xp / step
        bad_in = ~np.isfinite(xp) | ~(np.abs(y) <= LEVEL_MAX)
        yy = np.where(bad_in, 0.0, y)
        k = nearest(kind, yy)
    bad_out = ~(np.abs(k) <= LEVEL_MAX)
    rows_in = bad_in.any(axis=1)
    rows_out = bad_out.any(axis=1)
    p = _first(rows_in | rows_out)
    if p >= 0:
        if rows_in[p]:
            j = _first(bad_in[p])
            return (1 if not np.isfinite(xp[p, j]) else 2), p * dim + j, None
        return 2, p * dim + _first(bad_out[p]), None
    return 0, -1, k.astype(np.int32)


def lattice_valid_rows(kind: int, kq: np.ndarray) -> np.ndarray:
    """Whether each row of ``kq`` is a point of the lattice (E8 rows hold doubled coordinates)."""
    k = kq.astype(np.int64)
    s = k.sum(axis=1)
    if kind == D4:
        return (s & 1) == 0
    odd = (k & 1).sum(axis=1)
    return ((odd == 0) | (odd == 8)) & ((s & 3) == 0)


def lattice_decode(kq, kind, step, dithered, key, n, out_dtype):
    """Return ``(status, index, values)`` as the kernel does."""
    nvec, dim = kq.shape
    s = step if kind == D4 else step * 0.5
    with np.errstate(over="ignore", invalid="ignore"):
        w = kq.astype(np.float64) * s
        if dithered:
            w = w - lattice_dither(kind, nvec, step, key)
        out = w.reshape(-1)[:n].astype(out_dtype)
    p1 = _first(~lattice_valid_rows(kind, kq))
    i2 = _first(~np.isfinite(out))
    if p1 >= 0 and (i2 < 0 or p1 <= i2 // dim):
        return 1, p1, None
    if i2 >= 0:
        return 2, i2, None
    return 0, -1, out


# ------------------------------------------------------------------ k-means


def _ordered_sum(v: np.ndarray) -> float:
    return float(np.cumsum(np.concatenate([[0.0], v]))[-1])


def kmeans_lloyd(xs, hs, c, iterations):
    """Return ``(centroids, iterations_run)``; see the kernel's docstring."""
    c = np.array(c, dtype=np.float64)
    kk = c.size
    n = xs.size
    for it in range(iterations):
        mids = 0.5 * c[:-1] + 0.5 * c[1:]
        ends = np.concatenate([np.searchsorted(xs, mids, side="right"), [n]])
        new = c.copy()
        start = 0
        for j in range(kk):
            end = int(ends[j])
            sw = _ordered_sum(hs[start:end])
            swx = _ordered_sum(hs[start:end] * xs[start:end])
            if sw > 0.0:
                new[j] = min(max(swx / sw, xs[start]), xs[end - 1])
            start = end
        same = bool((new == c).all())
        c = new
        if same:
            return c, it + 1
    return c, iterations


def assign_sorted(x, mids):
    return np.searchsorted(mids, np.asarray(x).astype(np.float64), side="left").astype(np.int32)


def gather(idx, table):
    bad = _first((idx < 0) | (idx >= table.size))
    if bad >= 0:
        return None, bad
    return table[idx], -1


# ------------------------------------------------------------------ pruning


def prune_apply(mag, bits, threshold):
    a = np.abs(np.asarray(mag).astype(np.float64))
    cut = a < threshold
    out = np.where(cut, bits.dtype.type(0), bits)
    return out, int(np.count_nonzero(cut | (a == 0.0)))
