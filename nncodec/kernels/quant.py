"""Numba kernels of the quantizer stages and of the dither generator.

Only compiled kernels live here; :mod:`nncodec.codecs.scalar`, `lattice`, `kmeans`, `prune` and
:mod:`nncodec.dither` check every argument before calling one. The kernels
trust their arguments completely:

* output arrays have the lengths and shapes the docstrings state;
* lattice kernels get ``x`` of length ``n`` and ``out`` of shape
  ``(ceil(n / dim), dim)`` (encode) or the reverse (decode);
* ``kmeans_lloyd`` gets ``xs`` sorted ascending, ``hs`` of the same length,
  non-negative, and ``c`` sorted ascending with at least one entry;
* ``assign_sorted`` gets ``mids`` sorted ascending.

Every floating-point operation is float64, in the order the spec pages give
(spec/dither.md, spec/codecs/scalar.md, spec/codecs/lattice.md,
spec/codecs/kmeans.md, spec/codecs/prune.md); no fast-math, so no operation is
fused or reordered. tests/reference/quant.py holds a plain-NumPy
version of every kernel, and the tests require identical results.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import configure

configure()  # the cache folder, before the first @njit below

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_ONE = np.uint64(1)
_TWO_M53 = 1.0 / 9007199254740992.0  # 2**-53

#: largest level magnitude an int32 array holds (levels are symmetric)
LEVEL_MAX = 2147483647.0

D4, E8 = 0, 1

# generator matrices (rows are basis vectors), in plain coordinates
_G_D4 = np.array(
    [[2, 0, 0, 0],
     [1, 1, 0, 0],
     [0, 1, 1, 0],
     [0, 0, 1, 1]], dtype=np.float64)
_G_E8 = np.array(
    [[2, 0, 0, 0, 0, 0, 0, 0],
     [-1, 1, 0, 0, 0, 0, 0, 0],
     [0, -1, 1, 0, 0, 0, 0, 0],
     [0, 0, -1, 1, 0, 0, 0, 0],
     [0, 0, 0, -1, 1, 0, 0, 0],
     [0, 0, 0, 0, -1, 1, 0, 0],
     [0, 0, 0, 0, 0, -1, 1, 0],
     [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]], dtype=np.float64)


# ------------------------------------------------------------------ dither


@njit(cache=True, nogil=True, inline="always")
def _mix64(z):
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@njit(cache=True, nogil=True, inline="always")
def _u01(key, index):
    """The dither value of element ``index`` (uint64) under ``key``: a double in [0, 1)."""
    z = _mix64(key + (index + _ONE) * _GAMMA)
    return np.float64(z >> _S11) * _TWO_M53


@njit(cache=True, nogil=True)
def dither_bits(key, start, out):
    """``out[i]`` = the 64-bit output for element ``start + i`` (``out`` uint64)."""
    for i in range(out.shape[0]):
        out[i] = _mix64(key + (start + np.uint64(i) + _ONE) * _GAMMA)


@njit(cache=True, nogil=True)
def dither_u01(key, start, out):
    """``out[i]`` = the [0, 1) double for element ``start + i`` (``out`` float64)."""
    for i in range(out.shape[0]):
        out[i] = _u01(key, start + np.uint64(i))


# ------------------------------------------------------------------ scalar


@njit(cache=True, nogil=True)
def scalar_encode(x, step, dithered, key, out):
    """Levels ``out[i] = rint((x[i] + u[i]) / step)`` (int32).

    Returns ``(status, index, max_level)``: status 0 = ok, 1 = ``x[index]`` is
    not finite, 2 = the level of ``x[index]`` does not fit int32.
    """
    n = x.shape[0]
    bad = False
    m = 0.0
    for i in range(n):
        xi = np.float64(x[i])
        if dithered:
            u = (_u01(key, np.uint64(i)) - 0.5) * step
            y = (xi + u) / step
        else:
            y = xi / step
        q = np.rint(y)
        a = abs(q)
        ok = a <= LEVEL_MAX
        if not ok:
            bad = True
            q = 0.0
            a = 0.0
        if a > m:
            m = a
        out[i] = np.int32(q)
    if bad:
        return _scalar_first_bad(x, step, dithered, key)
    return 0, -1, m


@njit(cache=True, nogil=True)
def _scalar_first_bad(x, step, dithered, key):
    for i in range(x.shape[0]):
        xi = np.float64(x[i])
        if not np.isfinite(xi):
            return 1, i, 0.0
        if dithered:
            u = (_u01(key, np.uint64(i)) - 0.5) * step
            y = (xi + u) / step
        else:
            y = xi / step
        if not abs(np.rint(y)) <= LEVEL_MAX:
            return 2, i, 0.0
    return 0, -1, 0.0


@njit(cache=True, nogil=True, inline="always")
def _eg_bits(a):
    """Bits of level magnitude ``a`` (a float holding an integer) under the RD model."""
    if a == 0.0:
        return 1.0
    v = np.int64(a) + 1  # at most 2**31: floor(log2(v)) in five halving steps
    e = 0
    if v >= 65536:
        v >>= 16
        e += 16
    if v >= 256:
        v >>= 8
        e += 8
    if v >= 16:
        v >>= 4
        e += 4
    if v >= 4:
        v >>= 2
        e += 2
    if v >= 2:
        e += 1
    return np.float64(2 * e + 2)


@njit(cache=True, nogil=True)
def scalar_encode_rd(x, step, dithered, key, lam, out):
    """Rate-distortion rounding: like :func:`scalar_encode`, choosing per element
    among ``k0 = rint(t)``, ``k0 - sign(k0)`` and ``0`` the one of least
    ``(t - k)**2 + lam * bits(k)`` (first of equals in that order)."""
    n = x.shape[0]
    m = 0.0
    for i in range(n):
        xi = np.float64(x[i])
        if dithered:
            u = (_u01(key, np.uint64(i)) - 0.5) * step
            t = (xi + u) / step
        else:
            t = xi / step
        k0 = np.rint(t)
        if not abs(k0) <= LEVEL_MAX:
            if not np.isfinite(xi):
                return 1, i, 0.0
            return 2, i, 0.0
        best = k0
        d = t - k0
        jbest = d * d + lam * _eg_bits(abs(k0))
        if k0 != 0.0:
            k1 = k0 - 1.0 if k0 > 0.0 else k0 + 1.0
            d = t - k1
            j1 = d * d + lam * _eg_bits(abs(k1))
            if j1 < jbest:
                jbest = j1
                best = k1
            if k1 != 0.0:
                j0 = t * t + lam
                if j0 < jbest:
                    jbest = j0
                    best = 0.0
        a = abs(best)
        if a > m:
            m = a
        out[i] = np.int32(best)
    return 0, -1, m


@njit(cache=True, nogil=True)
def scalar_decode(q, step, dithered, key, out):
    """``out[i] = q[i] * step - u[i]`` rounded to ``out``'s dtype (float32 or float64).

    Returns the first index whose value is not finite in ``out``'s dtype, or -1.
    """
    n = q.shape[0]
    bad = False
    for i in range(n):
        v = np.float64(q[i]) * step
        if dithered:
            v = v - (_u01(key, np.uint64(i)) - 0.5) * step
        out[i] = v
        if not np.isfinite(out[i]):
            bad = True
    if bad:
        for i in range(n):
            if not np.isfinite(out[i]):
                return i
    return -1


# ------------------------------------------------------------------ lattice


@njit(cache=True, nogil=True, inline="always")
def _nearest_dn(y, f):
    """Nearest point of D_n to ``y`` into ``f`` (Conway & Sloane, with our tie rules)."""
    n = y.shape[0]
    s = np.int64(0)
    jmax = 0
    emax = -1.0
    for j in range(n):
        r = np.rint(y[j])
        f[j] = r
        s += np.int64(r)
        e = abs(y[j] - r)
        if e > emax:
            emax = e
            jmax = j
    if s & 1:
        if y[jmax] - f[jmax] < 0.0:
            f[jmax] -= 1.0
        else:
            f[jmax] += 1.0


@njit(cache=True, nogil=True, inline="always")
def _nearest(kind, y, k, a, b, yh):
    """Nearest lattice point to ``y``: D4 coordinates, or E8 coordinates times two, into ``k``."""
    if kind == D4:
        _nearest_dn(y, k)
        return
    _nearest_dn(y, a)
    for j in range(8):
        yh[j] = y[j] - 0.5
    _nearest_dn(yh, b)
    da = 0.0
    db = 0.0
    for j in range(8):
        e = y[j] - a[j]
        da += e * e
    for j in range(8):
        e = yh[j] - b[j]
        db += e * e
    if da <= db:
        for j in range(8):
            k[j] = 2.0 * a[j]
    else:
        for j in range(8):
            k[j] = 2.0 * b[j] + 1.0


@njit(cache=True, nogil=True, inline="always")
def _lattice_dither(kind, g, key, base, step, r, v, k, a, b, yh, u):
    """Dither of the vector whose first element has flat index ``base``, into ``u``."""
    dim = g.shape[0]
    for j in range(dim):
        r[j] = _u01(key, base + np.uint64(j))
    for i in range(dim):
        acc = 0.0
        for j in range(dim):
            acc += r[j] * g[j, i]
        v[i] = acc
    _nearest(kind, v, k, a, b, yh)
    for i in range(dim):
        if kind == D4:
            d = v[i] - k[i]
        else:
            d = v[i] - k[i] * 0.5
        u[i] = d * step


@njit(cache=True, nogil=True)
def lattice_encode(x, kind, g, step, dithered, key, out):
    """Nearest points of ``step * lattice`` to the vectors of ``x`` (zero-padded), into ``out``.

    ``out`` is int32 of shape ``(nvec, dim)``. Returns ``(status, index)``:
    status 0 = ok, 1 = ``x[index]`` is not finite, 2 = a coordinate of the
    vector holding flat index ``index`` does not fit int32.
    """
    n = x.shape[0]
    nvec, dim = out.shape
    y = np.empty(dim)
    k = np.empty(dim)
    a = np.empty(dim)
    b = np.empty(dim)
    yh = np.empty(dim)
    r = np.empty(dim)
    v = np.empty(dim)
    u = np.zeros(dim)
    for p in range(nvec):
        base = p * dim
        if dithered:
            _lattice_dither(kind, g, key, np.uint64(base), step, r, v, k, a, b, yh, u)
        for j in range(dim):
            idx = base + j
            xi = np.float64(x[idx]) if idx < n else 0.0
            if not np.isfinite(xi):
                return 1, idx
            if dithered:
                y[j] = (xi + u[j]) / step
            else:
                y[j] = xi / step
            if not abs(y[j]) <= LEVEL_MAX:
                return 2, idx
        _nearest(kind, y, k, a, b, yh)
        for j in range(dim):
            if not abs(k[j]) <= LEVEL_MAX:
                return 2, base + j
            out[p, j] = np.int32(k[j])
    return 0, -1


# Deliberately shares lattice_encode's per-vector loop shape (dither key, D4/E8 branch) unrolled
# inline: a helper call per vector costs measurably in this loop.
@njit(cache=True, nogil=True)
def lattice_decode(kq, kind, g, step, dithered, key, out):
    """Reconstruct the first ``out.shape[0]`` coordinates from the points ``kq`` (int32, (nvec, dim)).

    Returns ``(status, index)``: 0 = ok, 1 = row ``index`` is not a lattice
    point, 2 = ``out[index]`` is not finite in ``out``'s dtype.
    """
    n = out.shape[0]
    nvec, dim = kq.shape
    k = np.empty(dim)
    a = np.empty(dim)
    b = np.empty(dim)
    yh = np.empty(dim)
    r = np.empty(dim)
    v = np.empty(dim)
    u = np.zeros(dim)
    s = step if kind == D4 else step * 0.5
    for p in range(nvec):
        tot = np.int64(0)
        odd = 0
        for j in range(dim):
            c = np.int64(kq[p, j])
            tot += c
            odd += c & 1
        if kind == D4:
            if tot & 1:
                return 1, p
        elif (odd != 0 and odd != 8) or (tot & 3) != 0:
            return 1, p
        base = p * dim
        if dithered:
            _lattice_dither(kind, g, key, np.uint64(base), step, r, v, k, a, b, yh, u)
        for j in range(dim):
            idx = base + j
            if idx < n:
                w = np.float64(kq[p, j]) * s
                if dithered:
                    w = w - u[j]
                out[idx] = w
                if not np.isfinite(out[idx]):
                    return 2, idx
    return 0, -1


# ------------------------------------------------------------------ k-means


@njit(cache=True, nogil=True)
def kmeans_lloyd(xs, hs, c, iterations):
    """Weighted Lloyd iterations on sorted ``xs`` with weights ``hs``; updates ``c`` in place.

    Element ``x`` belongs to the first cluster ``j`` with ``x <= mid_j``
    (``mid_j = 0.5*c[j] + 0.5*c[j+1]``). A cluster's new centroid is
    ``sum(h*x) / sum(h)`` over its elements, clamped to their range; an
    empty (or zero-weight) cluster keeps its centroid. Stops early when no
    centroid changes. Returns the number of iterations run.
    """
    n = xs.shape[0]
    kk = c.shape[0]
    new = np.empty(kk)
    for it in range(iterations):
        start = 0
        for j in range(kk):
            if j < kk - 1:
                mid = 0.5 * c[j] + 0.5 * c[j + 1]
                lo = start
                hi = n
                while lo < hi:  # first index with xs[index] > mid
                    md = (lo + hi) >> 1
                    if xs[md] <= mid:
                        lo = md + 1
                    else:
                        hi = md
                end = lo
            else:
                end = n
            sw = 0.0
            swx = 0.0
            for i in range(start, end):
                sw += hs[i]
                swx += hs[i] * xs[i]
            if sw > 0.0:
                m = swx / sw
                if m < xs[start]:
                    m = xs[start]
                if m > xs[end - 1]:
                    m = xs[end - 1]
                new[j] = m
            else:
                new[j] = c[j]
            start = end
        same = True
        for j in range(kk):
            if new[j] != c[j]:
                same = False
            c[j] = new[j]
        if same:
            return it + 1
    return iterations


@njit(cache=True, nogil=True)
def assign_sorted(x, mids, out):
    """``out[i]`` = the number of ``mids`` strictly below ``x[i]`` (int32)."""
    m = mids.shape[0]
    for i in range(x.shape[0]):
        xi = np.float64(x[i])
        lo = 0
        hi = m
        while lo < hi:
            md = (lo + hi) >> 1
            if mids[md] < xi:
                lo = md + 1
            else:
                hi = md
        out[i] = lo


@njit(cache=True, nogil=True)
def gather(idx, table, out):
    """``out[i] = table[idx[i]]``; returns the first ``i`` with ``idx[i]`` out of range, or -1."""
    kk = table.shape[0]
    for i in range(idx.shape[0]):
        j = idx[i]
        if j < 0 or j >= kk:
            return i
        out[i] = table[j]
    return -1


# ------------------------------------------------------------------ pruning


@njit(cache=True, nogil=True)
def prune_apply(mag, bits, threshold, out):
    """``out[i] = 0 if |mag[i]| < threshold else bits[i]``; returns the count of zeros in ``out``.

    ``mag`` holds the values (float32 or float64), ``bits`` and ``out`` the same
    values as unsigned words.
    """
    z = 0
    for i in range(mag.shape[0]):
        a = abs(np.float64(mag[i]))
        if a < threshold:
            out[i] = 0
            z += 1
        else:
            out[i] = bits[i]
            if a == 0.0:
                z += 1
    return z
