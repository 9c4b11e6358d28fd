"""The quantizer stages: scalar, lattice, kmeans, prune (spec/codecs/*.md)."""

import itertools
import json

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nncodec import dither, dtypes
from nncodec.codecs import ArraySpec, Context, get_codec, register_codec
from nncodec.codecs.kmeans import KMeans, linear_init
from nncodec.codecs.lattice import Lattice
from nncodec.codecs.prune import Prune, global_threshold, sparsity_threshold
from nncodec.codecs.scalar import Scalar
from nncodec.codecs.raw import Raw
from nncodec.errors import CorruptError, UnsupportedError, UsageError
from nncodec.kernels import quant as kq
from nncodec.pipeline import Pipeline
from reference import quant as ref

CTX = Context(name="layer.weight")
FLOATS = ["float64", "float32", "float16", "bfloat16"]
EPS = {"float64": 2.0**-52, "float32": 2.0**-23, "float16": 2.0**-10, "bfloat16": 2.0**-7}
TINY = {"float64": 5e-324, "float32": 1.5e-45, "float16": 6e-8, "bfloat16": 1e-40}


@pytest.fixture(autouse=True, scope="module")
def _registered():
    for cls in (Scalar, Lattice, KMeans, Prune):
        register_codec(cls)


def _arr(x, dt):
    return np.asarray(x).astype(dtypes.to_numpy(dt))


def _f64(a):
    return np.asarray(a).astype(np.float64)


def _round_tol(dt, v):
    """Worst error of rounding float64 ``v`` to ``dt`` by the stages' rule."""
    v = np.abs(_f64(v))
    tol = EPS[dt] / 2 * v + TINY[dt]
    if dt in ("float16", "bfloat16"):
        tol = tol + EPS["float32"] / 2 * v
    return tol


def _roundtrip(codec, a):
    spec = ArraySpec.of(a)
    codec, q = codec.fit_encode(a, CTX)  # a data-dependent stage is fitted first (a new codec)
    assert ArraySpec.of(q) == codec.resolve(spec)
    r = codec.decode(q, spec, CTX)
    assert ArraySpec.of(r) == spec
    return q, r


finite32 = st.floats(-1e4, 1e4, width=32, allow_subnormal=True)
finite64 = st.floats(-1e6, 1e6, allow_subnormal=True)
steps = st.floats(1e-3, 50.0)
u64 = st.integers(0, 2**64 - 1)


def arrays(elements=finite32, dtype=np.float32, max_side=40):
    return hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=max_side),
                      elements=elements)


# ================================================================== scalar


@settings(max_examples=60, deadline=None)
@given(x=arrays(), step=steps, dt=st.sampled_from(FLOATS), dith=st.booleans(), seed=u64, stream=u64)
def test_scalar_error_bound(x, step, dt, dith, seed, stream):
    a = _arr(x, dt)
    c = Scalar(step, dither=dith, seed=seed if dith else 0, stream=stream if dith else 0)
    q, r = _roundtrip(c, a)
    err = np.abs(_f64(r) - _f64(a))
    assert (err <= step / 2 * (1 + 1e-12) + np.abs(_f64(a)) * 2.0**-50 + _round_tol(dt, r)).all()


@settings(max_examples=80, deadline=None)
@given(x=st.one_of(arrays(finite64, np.float64), arrays(finite32, np.float32)),
       step=st.one_of(steps, st.floats(1e-30, 1e-3)), dith=st.booleans(), key=u64,
       lam=st.floats(0.0, 4.0))
def test_scalar_kernels_match_reference(x, step, dith, key, lam):
    flat = x.reshape(-1)
    k = np.uint64(key)
    out = np.empty(flat.size, np.int32)
    got = kq.scalar_encode(flat, step, dith, k, out)
    want = ref.scalar_encode(flat, step, dith, key)
    assert got[:2] == want[:2]
    if got[0] == 0:
        assert got[2] == want[2] and np.array_equal(out, want[3])
        for dt in (np.float32, np.float64):
            w = np.empty(flat.size, dt)
            bad = kq.scalar_decode(out, step, dith, k, w)
            wr, badr = ref.scalar_decode(out, step, dith, key, dt)
            assert bad == badr and np.array_equal(w.view(f"u{w.itemsize}"), wr.view(f"u{w.itemsize}"))
    out2 = np.empty(flat.size, np.int32)
    got = kq.scalar_encode_rd(flat, step, dith, k, lam, out2)
    want = ref.scalar_encode_rd(flat, step, dith, key, lam)
    assert got[:2] == want[:2]
    if got[0] == 0:
        assert got[2] == want[2] and np.array_equal(out2, want[3])


@settings(max_examples=40, deadline=None)
@given(q=arrays(st.integers(-(2**31), 2**31 - 1), np.int32), step=st.floats(1e-300, 1e300),
       dith=st.booleans(), key=u64)
def test_scalar_decode_matches_reference_any_levels(q, step, dith, key):
    """Any int32 level decodes identically (or fails at the same element) in both versions."""
    flat = q.reshape(-1)
    for dt in (np.float32, np.float64):
        w = np.empty(flat.size, dt)
        bad = kq.scalar_decode(flat, step, dith, np.uint64(key), w)
        wr, badr = ref.scalar_decode(flat, step, dith, key, dt)
        assert bad == badr
        if bad < 0:
            assert np.array_equal(w.view(f"u{w.itemsize}"), wr.view(f"u{w.itemsize}"))


def test_scalar_plain_levels_and_ties():
    a = np.array([0.0, -0.0, 0.25, 0.5, 0.75, 1.5, 2.5, -0.5, -1.5, 1e3], np.float64)
    q = Scalar(0.5).encode(a, CTX)
    # x / step then round half to even
    assert q.tolist() == [0, 0, 0, 1, 2, 3, 5, -1, -3, 2000]
    q = Scalar(1.0).encode(a, CTX)
    assert q.tolist() == [0, 0, 0, 0, 1, 2, 2, 0, -2, 1000]


def test_scalar_dither_is_subtracted():
    """With dither, levels follow rint((w + u) / step) and reconstruct as q*step - u."""
    a = np.linspace(-3, 3, 1001)
    c = Scalar(0.25, dither=True, seed=42, stream=9)
    q, r = _roundtrip(c, a)
    u = (dither.uniform(42, 9, 0, a.size) - 0.5) * 0.25
    assert ((u >= -0.125) & (u < 0.125)).all()
    assert np.array_equal(q, np.rint((a + u) / 0.25).astype(np.int32))
    assert np.array_equal(r, q * 0.25 - u)


def test_scalar_dither_unbiased_and_uncorrelated():
    n, step = 400_000, 0.1
    rng = np.random.default_rng(1)
    # weights far below the step: plain rounding maps all to 0, an error of exactly -w
    w = (0.3 * step + 0.05 * step * rng.standard_normal(n)).astype(np.float32)
    plain = Scalar(step)
    _, r = _roundtrip(plain, w)
    assert abs((_f64(r) - _f64(w)).mean()) > 0.2 * step
    c = Scalar(step, dither=True, seed=123, stream=dither.stream_for_name("w"))
    _, r = _roundtrip(c, w)
    e = _f64(r) - _f64(w)
    sigma = step / np.sqrt(12)  # the error is uniform on [-step/2, step/2]
    assert abs(e.mean()) < 6 * sigma / np.sqrt(n)
    assert abs(e.var() - sigma**2) < 0.02 * sigma**2
    assert abs(np.corrcoef(e, w)[0, 1]) < 6 / np.sqrt(n)
    # and on weights at the step's scale
    w2 = (step * rng.standard_normal(n)).astype(np.float32)
    _, r2 = _roundtrip(c, w2)
    e2 = _f64(r2) - _f64(w2)
    assert abs(e2.mean()) < 6 * sigma / np.sqrt(n)
    assert abs(np.corrcoef(e2, w2)[0, 1]) < 6 / np.sqrt(n)


def test_same_seed_same_levels_other_seed_other_levels():
    w = np.random.default_rng(2).standard_normal(5000).astype(np.float32)
    a = Scalar(0.01, dither=True, seed=5, stream=6).encode(w, CTX)
    b = Scalar(0.01, dither=True, seed=5, stream=6).encode(w.copy(), CTX)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, Scalar(0.01, dither=True, seed=5, stream=7).encode(w, CTX))
    assert not np.array_equal(a, Scalar(0.01, dither=True, seed=4, stream=6).encode(w, CTX))


@settings(max_examples=60, deadline=None)
@given(x=arrays(st.floats(-100, 100, width=32)), step=steps, lam=st.floats(0.0, 3.0), dith=st.booleans())
def test_rd_never_costs_more_than_rounding(x, step, lam, dith):
    flat = x.reshape(-1)
    c = Scalar(step, dither=dith, seed=1 if dith else 0, rd_lambda=lam)
    k_rd = c.encode(flat, CTX).astype(np.float64)
    k0 = Scalar(step, dither=dith, seed=1 if dith else 0).encode(flat, CTX).astype(np.float64)
    t = ref._scalar_t(flat, step, dith, dither.key(1, 0) if dith else 0)
    j_rd, j0 = ref.rd_cost(t, k_rd, lam), ref.rd_cost(t, k0, lam)
    assert (j_rd <= j0).all()
    assert j_rd.sum() <= j0.sum()
    # only the three candidates are ever chosen
    assert ((k_rd == k0) | (k_rd == k0 - np.sign(k0)) | (k_rd == 0)).all()
    if lam == 0.0:
        assert np.array_equal(k_rd, k0)


def test_rd_trades_distortion_for_rate():
    w = np.random.default_rng(3).laplace(0, 1, 100_000)
    step = 0.5
    costs = []
    for lam in (0.0, 0.05, 0.2, 1.0):
        k = Scalar(step, rd_lambda=lam).encode(w, CTX).astype(np.float64)
        costs.append(((w / step - k) ** 2).mean())
        rate = ref.eg_bits(np.abs(k)).mean()
        costs[-1] = (costs[-1], rate, (k == 0).mean())
    # more lambda: more distortion, fewer model bits, more zeros
    for (d1, r1, z1), (d2, r2, z2) in zip(costs, costs[1:]):
        assert d2 >= d1 and r2 <= r1 and z2 >= z1
    assert costs[-1][1] < costs[0][1]


def test_eg_bits_model():
    a = np.array([0, 1, 2, 3, 6, 7, 2**31 - 1], np.float64)
    assert ref.eg_bits(a).tolist() == [1, 4, 4, 6, 6, 8, 64]
    mags = sorted({0, 2**31 - 1} | {v for p in range(32) for v in (2**p - 2, 2**p - 1, 2**p) if 0 <= v < 2**31})
    assert [kq._eg_bits(float(v)) for v in mags] == ref.eg_bits(np.array(mags, np.float64)).tolist()


def test_scalar_level_overflow_names_tensor_and_fix():
    with pytest.raises(UsageError, match=r"layer\.weight.*larger step"):
        Scalar(1e-9).encode(np.array([1.0, 1e3], np.float32), CTX)
    with pytest.raises(UsageError, match=r"layer\.weight.*larger step"):
        Scalar(1e-9, rd_lambda=0.5).encode(np.array([1e3], np.float32), CTX)
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(UsageError, match="finite"):
            Scalar(0.1).encode(np.array([0.0, bad], np.float32), CTX)
        with pytest.raises(UsageError, match="finite"):
            Scalar(0.1, rd_lambda=1.0).encode(np.array([0.0, bad], np.float32), CTX)


def test_scalar_step_too_large_for_dtype():
    a = np.array([65504.0], np.float16)
    with pytest.raises(UsageError, match="too large for float16"):
        Scalar(40000.0).encode(a, CTX)
    with pytest.raises(CorruptError, match="not finite in float16"):
        Scalar(40000.0).decode(np.array([2], np.int32), ArraySpec("float16", (1,)), CTX)
    with pytest.raises(CorruptError, match="not finite in float32"):
        Scalar(1e38).decode(np.array([0, 5], np.int32), ArraySpec("float32", (2,)), CTX)
    with pytest.raises(CorruptError, match="not finite in float64"):
        Scalar(1e300).decode(np.array([2**31 - 1], np.int32), ArraySpec("float64", (1,)), CTX)


def test_scalar_decode_checks_its_input():
    c = Scalar(0.1)
    spec = ArraySpec("float32", (2, 3))
    for bad in (np.zeros((3, 2), np.int32), np.zeros((2, 3), np.int64), np.zeros(6, np.int32)):
        with pytest.raises(CorruptError, match="levels are"):
            c.decode(bad, spec, CTX)
    with pytest.raises(UnsupportedError):
        c.resolve(ArraySpec("int8", (2,)))
    with pytest.raises(UnsupportedError):
        c.encode(np.zeros(3, np.int16), CTX)


@pytest.mark.parametrize("dt", FLOATS)
@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2), (1,), (5, 7)])
def test_scalar_shapes(dt, shape):
    a = _arr(np.arange(int(np.prod(shape))).reshape(shape) * 0.37 - 1, dt)
    for c in (Scalar(0.1), Scalar(0.1, dither=True, seed=1, stream=2), Scalar(0.1, rd_lambda=0.3)):
        q, r = _roundtrip(c, a)
        assert q.shape == shape and r.shape == shape


def test_scalar_noncontiguous_and_big_endian():
    base = np.random.default_rng(4).standard_normal((20, 30))
    for a in (base[:, ::3], base.T, base.astype(">f4"), base.astype(">f8")[::2]):
        c = Scalar(0.05, dither=True, seed=8)
        q, r = _roundtrip(c, a)
        assert np.array_equal(q, c.encode(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("=")), CTX))


# ================================================================== lattice


def _min_vectors(name):
    """The minimal vectors (all Voronoi-relevant) of D4 / E8, norm 2."""
    n = 4 if name == "D4" else 8
    vs = []
    for i, j in itertools.combinations(range(n), 2):
        for si, sj in itertools.product((1, -1), repeat=2):
            v = np.zeros(n)
            v[i], v[j] = si, sj
            vs.append(v)
    if name == "E8":
        for signs in itertools.product((0.5, -0.5), repeat=8):
            if sum(s < 0 for s in signs) % 2 == 0:
                vs.append(np.array(signs))
    vs = np.array(vs)
    assert len(vs) == (24 if n == 4 else 240)
    return vs


def _points(name, q):
    """Levels as lattice points (E8 levels hold coordinates times two)."""
    return q.astype(np.float64) / (2.0 if name == "E8" else 1.0)


def _in_voronoi(e, mins, tol=1e-9):
    # e is in the Voronoi cell of 0 iff e.m <= |m|^2 / 2 for every relevant vector m
    return (e @ mins.T <= 1.0 + tol).all(axis=1)


def _brute_nearest_dist(name, y):
    n = y.size
    best = np.inf
    offs = np.array(list(itertools.product((-1, 0, 1), repeat=n)), np.float64)
    for shift in ((0.0,) if name == "D4" else (0.0, 0.5)):
        cand = np.rint(y - shift) + offs
        cand = cand[cand.sum(axis=1) % 2 == 0] + shift
        best = min(best, ((cand - y) ** 2).sum(axis=1).min())
    return best


@pytest.mark.parametrize("name", ["D4", "E8"])
def test_lattice_nearest_point(name):
    rng = np.random.default_rng(5)
    n = 4 if name == "D4" else 8
    y = rng.uniform(-20, 20, (4000, n))
    # also points on and near the ties: half-integers and integers
    y[:500] = np.round(y[:500] * 2) / 2
    y[500:1000] = np.round(y[500:1000]) + rng.choice([-1e-12, 0, 1e-12], (500, n))
    c = Lattice(name, 1.0)
    q = c.encode(y, CTX)
    assert q.shape == (4000, n)
    assert ref.lattice_valid_rows(0 if name == "D4" else 1, q).all()
    k = _points(name, q)
    e = y - k
    assert _in_voronoi(e, _min_vectors(name)).all()
    for i in range(0, 4000, 97):
        d = ((y[i] - k[i]) ** 2).sum()
        assert d <= _brute_nearest_dist(name, y[i]) + 1e-12


@pytest.mark.parametrize("name", ["D4", "E8"])
@pytest.mark.parametrize("dith", [False, True])
def test_lattice_error_in_voronoi_cell(name, dith):
    rng = np.random.default_rng(6)
    step = 0.07
    w = rng.standard_normal((123, 45)).astype(np.float32)  # 5535 elements, not a multiple of 8
    c = Lattice(name, step, dither=dith, seed=77, stream=1)
    q, r = _roundtrip(c, w)
    n = c.dim
    e = (_f64(r) - _f64(w)).reshape(-1)
    pad = (-e.size) % n
    # the padded tail vector: its missing coordinates hold 0 - (decoded padding), which we do not see;
    # check the full vectors only
    full = e[: e.size - (e.size % n)].reshape(-1, n) / step
    assert _in_voronoi(full, _min_vectors(name), tol=1e-5).all()
    assert q.shape == ((w.size + pad) // n, n)


@pytest.mark.parametrize("name,moment", [("D4", 0.0766 * 2**0.5), ("E8", 0.0717)])
def test_lattice_dither_unbiased(name, moment):
    """Dithered error is uniform over the Voronoi cell: zero mean, the lattice's second moment."""
    rng = np.random.default_rng(7)
    step = 0.2
    w = (0.3 * step * rng.standard_normal(400_000)).astype(np.float64)
    c = Lattice(name, step, dither=True, seed=9, stream=10)
    _, r = _roundtrip(c, w)
    e = (r - w) / step
    sigma = np.sqrt(moment)
    assert abs(e.mean()) < 6 * sigma / np.sqrt(e.size)
    assert abs((e**2).mean() - moment) < 0.03 * moment
    assert abs(np.corrcoef(e, w)[0, 1]) < 6 / np.sqrt(e.size)
    # without dither these small weights all go to 0: biased and correlated
    _, r0 = _roundtrip(Lattice(name, step), w)
    assert np.corrcoef(r0 - w, w)[0, 1] < -0.2


lattice_inputs = st.one_of(arrays(finite64, np.float64, 20), arrays(finite32, np.float32, 20))


@settings(max_examples=80, deadline=None)
@given(x=lattice_inputs, name=st.sampled_from(["D4", "E8"]), step=st.one_of(steps, st.floats(1e-30, 1e-3)),
       dith=st.booleans(), key=u64)
def test_lattice_kernels_match_reference(x, name, step, dith, key):
    kind = 0 if name == "D4" else 1
    g = kq._G_D4 if kind == 0 else kq._G_E8
    assert np.array_equal(g, ref.G_D4 if kind == 0 else ref.G_E8)
    flat = x.reshape(-1)
    dim = g.shape[0]
    out = np.empty((-(-flat.size // dim), dim), np.int32)
    got = kq.lattice_encode(flat, kind, g, step, dith, np.uint64(key), out)
    want = ref.lattice_encode(flat, kind, step, dith, key)
    assert got == want[:2]
    if got[0] == 0:
        assert np.array_equal(out, want[2])
        for dt in (np.float32, np.float64):
            w = np.empty(flat.size, dt)
            st_ = kq.lattice_decode(out, kind, g, step, dith, np.uint64(key), w)
            wr = ref.lattice_decode(out, kind, step, dith, key, flat.size, dt)
            assert st_ == wr[:2]
            if st_[0] == 0:
                assert np.array_equal(w.view(f"u{w.itemsize}"), wr[2].view(f"u{w.itemsize}"))


@settings(max_examples=60, deadline=None)
@given(k=hnp.arrays(np.int32, st.tuples(st.integers(0, 20), st.sampled_from([4, 8])),
                    elements=st.integers(-6, 6)), dith=st.booleans(), cut=st.integers(0, 7))
def test_lattice_decode_any_levels_matches_reference(k, dith, cut):
    kind = 0 if k.shape[1] == 4 else 1
    g = kq._G_D4 if kind == 0 else kq._G_E8
    n = max(0, k.size - min(cut, k.shape[1] - 1))
    w = np.empty(n)
    got = kq.lattice_decode(k, kind, g, 0.5, dith, np.uint64(3), w)
    want = ref.lattice_decode(k, kind, 0.5, dith, 3, n, np.float64)
    assert got == want[:2]
    if got[0] == 0:
        assert np.array_equal(w, want[2])


def test_lattice_decode_rejects_non_points():
    spec = ArraySpec("float32", (8,))
    d4 = Lattice("D4", 0.1)
    d4.decode(np.array([[1, 1, 0, 0], [2, 0, 0, 0]], np.int32), spec, CTX)
    with pytest.raises(CorruptError, match=r"vector 1 .* not a point of D4"):
        d4.decode(np.array([[1, 1, 0, 0], [1, 0, 0, 0]], np.int32), spec, CTX)
    e8 = Lattice("E8", 0.1)
    spec = ArraySpec("float64", (8,))
    e8.decode(np.array([[1, 1, 1, 1, 1, 1, 1, 1]], np.int32), spec, CTX)  # (1/2,...,1/2)
    e8.decode(np.array([[2, 2, 0, 0, 0, 0, 0, 0]], np.int32), spec, CTX)  # (1,1,0,...)
    for bad in ([1, 1, 1, 1, 1, 1, 1, -1 + 4], [2, 0, 0, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0],
                [1, 1, 1, 1, 1, 1, 1, 3]):
        with pytest.raises(CorruptError, match="not a point of E8"):
            e8.decode(np.array([bad], np.int32), spec, CTX)
    with pytest.raises(CorruptError, match="levels are"):
        e8.decode(np.zeros((1, 4), np.int32), spec, CTX)


def test_lattice_padding_and_shapes():
    for name, dim in (("D4", 4), ("E8", 8)):
        for shape in [(), (0,), (1,), (3, 3), (dim,), (2, dim + 1)]:
            a = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape) * 0.3
            c = Lattice(name, 0.25, dither=True, seed=1)
            q, r = _roundtrip(c, a)
            assert q.shape == (-(-a.size // dim), dim)
    # padding coordinates are zeros: a tail vector (x, 0, 0, 0) quantizes like its zero-padded copy
    a = np.array([0.9, 0.2, 1.3, 0.0, 0.0, 0.0, 0.0], np.float64)
    assert np.array_equal(Lattice("E8", 0.5).encode(a, CTX), Lattice("E8", 0.5).encode(np.append(a, 0.0), CTX))


def test_lattice_overflow_and_nonfinite():
    with pytest.raises(UsageError, match=r"layer\.weight.*larger step"):
        Lattice("E8", 1e-9).encode(np.array([1.0, 1e3], np.float32), CTX)
    with pytest.raises(UsageError, match="finite"):
        Lattice("D4", 0.1).encode(np.array([0.0, np.nan], np.float32), CTX)


# ================================================================== kmeans


def test_kmeans_deterministic_and_nearest():
    w = np.random.default_rng(8).standard_normal(20_000).astype(np.float32)
    a, qa = KMeans(16).fit_encode(w, CTX)
    b, qb = KMeans(16).fit_encode(w.copy(), CTX)
    assert np.array_equal(qa, qb) and a.get_config() == b.get_config()
    c = np.array(a.get_config()["centroids"])
    assert c.size == 16 and (np.diff(c) > 0).all()
    assert np.array_equal(c.astype(np.float32).astype(np.float64), c)  # representable in the dtype
    r = a.decode(qa, ArraySpec.of(w), CTX)
    assert np.array_equal(r, c[qa].astype(np.float32))
    # every weight went to a nearest centroid
    d = np.abs(_f64(w)[:, None] - c[None, :])
    assert (d[np.arange(w.size), qa] <= d.min(axis=1) + 1e-12).all()


@pytest.mark.parametrize("dist", ["normal", "laplace", "uniform", "bimodal"])
def test_kmeans_mse_monotone_in_k(dist):
    rng = np.random.default_rng(9)
    n = 30_000
    w = {"normal": rng.standard_normal(n), "laplace": rng.laplace(0, 1, n),
         "uniform": rng.uniform(-1, 1, n),
         "bimodal": np.concatenate([rng.normal(-2, 0.3, n // 2), rng.normal(1, 0.5, n - n // 2)])}[dist]
    w = w.astype(np.float32)
    last = np.inf
    for k in (1, 2, 4, 8, 16, 32, 64, 128):
        c = KMeans(k, iterations=60)
        _, r = _roundtrip(c, w)
        mse = ((_f64(r) - _f64(w)) ** 2).mean()
        assert mse <= last
        last = mse


def test_kmeans_importance():
    w = np.array([0.0, 1.0, 2.0, 10.0], np.float64)
    h = np.array([1.0, 1.0, 1.0, 5.0])
    c = KMeans(1, importance=h).fit(w, CTX)
    assert c.get_config()["centroids"] == [(0 + 1 + 2 + 50) / 8]
    # weights with more importance get smaller errors
    rng = np.random.default_rng(10)
    w = rng.standard_normal(5000)
    h = np.where(np.abs(w) > 1.5, 100.0, 1.0)
    e_plain = np.abs(_roundtrip(KMeans(4), w)[1] - w)
    e_imp = np.abs(_roundtrip(KMeans(4, importance=h), w)[1] - w)
    big = np.abs(w) > 1.5
    assert e_imp[big].mean() < e_plain[big].mean()
    with pytest.raises(UsageError, match="importance"):
        KMeans(4, importance=np.ones(3)).fit(w, CTX)
    with pytest.raises(UsageError, match="importance"):
        KMeans(4, importance=-np.ones(w.shape)).fit(w, CTX)


@settings(max_examples=80, deadline=None)
@given(x=hnp.arrays(np.float64, st.integers(1, 200), elements=st.floats(-100, 100)),
       h=st.one_of(st.none(), hnp.arrays(np.float64, 200, elements=st.sampled_from([0.0, 0.5, 1.0, 3.0]))),
       k=st.integers(1, 20), iters=st.integers(0, 40))
def test_kmeans_kernels_match_reference(x, h, k, iters):
    xs = np.sort(x)
    hs = np.ones_like(xs) if h is None else h[: xs.size].copy()
    c0 = linear_init(xs[0], xs[-1], k)
    assert (np.diff(c0) >= 0).all()
    c = c0.copy()
    its = kq.kmeans_lloyd(xs, hs, c, iters)
    cr, itsr = ref.kmeans_lloyd(xs, hs, c0, iters)
    assert its == itsr and np.array_equal(c, cr)
    assert (np.diff(c) >= 0).all()
    mids = 0.5 * c[:-1] + 0.5 * c[1:]
    out = np.empty(x.size, np.int32)
    kq.assign_sorted(x, mids, out)
    assert np.array_equal(out, ref.assign_sorted(x, mids))


@settings(max_examples=40, deadline=None)
@given(idx=hnp.arrays(np.int32, st.integers(0, 50), elements=st.integers(-3, 12)),
       table=hnp.arrays(np.uint16, st.integers(1, 10)))
def test_gather_matches_reference(idx, table):
    out = np.empty(idx.size, np.uint16)
    bad = kq.gather(idx, table, out)
    want, badr = ref.gather(idx, table)
    assert bad == badr
    if bad < 0:
        assert np.array_equal(out, want)


@pytest.mark.parametrize("dt", FLOATS)
def test_kmeans_dtypes_and_shapes(dt):
    for shape in [(), (0,), (1,), (4, 5, 6)]:
        a = _arr(np.random.default_rng(11).standard_normal(shape), dt)
        c = KMeans(8).fit(a, CTX)
        q, r = _roundtrip(c, a)
        cents = _arr(c.get_config()["centroids"], dt)
        assert set(_f64(r).reshape(-1).tolist()) <= set(_f64(cents).tolist())
    # a constant tensor needs one centroid
    c = KMeans(8).fit(_arr(np.full(10, 0.5), dt), CTX)
    assert c.get_config() == {"centroids": [0.5]}


def test_kmeans_fixed_codebook_and_decode_checks():
    c = KMeans(centroids=[-1.0, 0.0, 2.5])
    q = c.encode(np.array([-3.0, -0.5, 0.1, 1.25, 1.26, 9.0]), CTX)
    assert q.tolist() == [0, 0, 1, 1, 2, 2]  # ties go to the lower centroid
    spec = ArraySpec("float32", (2,))
    with pytest.raises(CorruptError, match="outside"):
        c.decode(np.array([0, 3], np.int32), spec, CTX)
    with pytest.raises(CorruptError, match="outside"):
        c.decode(np.array([-1, 0], np.int32), spec, CTX)
    with pytest.raises(CorruptError, match="not finite in float16"):
        KMeans(centroids=[0.0, 1e6]).decode(np.array([0, 1], np.int32), ArraySpec("float16", (2,)), CTX)
    with pytest.raises(UsageError):
        KMeans(centroids=[1.0, 1.0])
    with pytest.raises(UsageError):
        KMeans()
    with pytest.raises(UsageError):
        KMeans(4).get_config()
    with pytest.raises(UsageError, match="finite"):
        KMeans(4).fit(np.array([1.0, np.nan]), CTX)
    with pytest.raises(UsageError, match="fit"):
        KMeans(4).encode(np.array([1.0, 2.0]), CTX)  # not fitted: no centroids to encode with


def test_kmeans_refits_each_tensor():
    c = KMeans(2)
    first = c.fit(np.array([0.0, 1.0]), CTX).get_config()
    assert c.fit(np.array([10.0, 20.0]), CTX).get_config() == {"centroids": [10.0, 20.0]} != first
    assert not c.fitted and c == KMeans(2)  # fitting returns new codecs, never changes this one


# ================================================================== prune


@pytest.mark.parametrize("dt", FLOATS + ["float8_e4m3fn"])
def test_prune_threshold(dt):
    a = _arr([0.5, -0.1, 0.2, -0.0, -2.0, 0.05, 1.0], dt)
    p = Prune(threshold=float(_f64(a)[2])).fit(a, CTX)  # 0.2 as the dtype holds it
    q, r = _roundtrip(p, a)
    assert r is q
    assert _f64(q).tolist() == _f64(_arr([0.5, 0, 0.2, 0, -2.0, 0, 1.0], dt)).tolist()
    assert not np.signbit(_f64(q)[[1, 3, 5]]).any()  # zeros are +0
    assert p.get_config() == {"threshold": float(_f64(a)[2]), "sparsity": 3 / 7}


@settings(max_examples=60, deadline=None)
@given(x=arrays(st.floats(-10, 10, width=32), max_side=30), s=st.floats(0.0, 1.0))
def test_prune_sparsity_target(x, s):
    p, out = Prune(sparsity=s).fit_encode(x, CTX)
    n = x.size
    zeros_out = int((out == 0).sum())
    cut = (out == 0) & (x != 0)
    assert zeros_out >= min(n, int(np.floor(s * n)))
    # pruned magnitudes are never above kept ones
    if cut.any() and (out != 0).any():
        assert np.abs(x[cut]).max() <= np.abs(x[out != 0]).min()
    assert ((out == x) | (out == 0)).all()
    assert p.get_config()["sparsity"] == (zeros_out / n if n else 0.0)
    assert (np.abs(_f64(x[out != 0])) >= p.get_config()["threshold"]).all()


def test_global_threshold():
    rng = np.random.default_rng(12)
    ts = {"a": rng.standard_normal((30, 40)).astype(np.float32),
          "b": 0.1 * rng.standard_normal(500).astype(np.float16),
          "c": rng.standard_normal(77).astype(ml_dtypes.bfloat16)}
    t = global_threshold(ts, 0.6)
    outs = {k: Prune(threshold=t).encode(v, CTX) for k, v in ts.items()}
    total = sum(v.size for v in ts.values())
    zeros = sum(int((_f64(o) == 0).sum()) for o in outs.values())
    assert zeros >= int(0.6 * total)
    kept = np.concatenate([np.abs(_f64(o))[_f64(o) != 0] for o in outs.values()])
    cut = np.concatenate([np.abs(_f64(v))[(_f64(o) == 0)] for v, o in zip(ts.values(), outs.values())])
    assert cut.max() <= kept.min()
    assert global_threshold([], 0.5) == 0.0
    assert sparsity_threshold(np.array([3.0, 1.0, 2.0]), 0.0) == 0.0
    assert sparsity_threshold(np.array([3.0, 1.0, 2.0]), 0.34) == np.nextafter(1.0, 2.0)
    assert sparsity_threshold(np.array([3.0, 1.0, 2.0]), 0.67) == np.nextafter(2.0, 3.0)


@pytest.mark.parametrize("dt", ["float32", "float64", "float16"])
def test_prune_kernel_matches_reference(dt):
    x = _arr(np.random.default_rng(13).standard_normal(1000) * np.r_[np.zeros(100), np.ones(900)], dt)
    x[5] = -0.0
    mag = x if dt != "float16" else x.astype(np.float32)
    uv = dtypes.uint_view(dt)
    for t in (0.0, 0.3, 5.0):
        out = np.empty(x.size, uv)
        z = kq.prune_apply(mag, x.view(uv), t, out)
        want, zr = ref.prune_apply(mag, x.view(uv), t)
        assert z == zr and np.array_equal(out, want)


def test_prune_then_scalar_pipeline():
    rng = np.random.default_rng(14)
    w = rng.standard_normal((64, 32)).astype(np.float32)
    pipe, payload = Pipeline([Prune(sparsity=0.5), Scalar(0.02), Raw()]).fit_encode(w, CTX)
    stored = Pipeline.from_json(json.loads(json.dumps(pipe.to_json())))
    assert stored.stages[0].get_config()["sparsity"] >= 0.5
    r = stored.decode(payload, ArraySpec.of(w), CTX)
    pruned = np.abs(_f64(w)) < stored.stages[0].threshold
    assert (r[pruned] == 0).all()
    err = np.abs(_f64(r[~pruned]) - _f64(w[~pruned]))
    assert (err <= 0.01 * (1 + 1e-12) + _round_tol("float32", r[~pruned])).all()


def test_prune_rejects():
    with pytest.raises(UsageError):
        Prune()
    with pytest.raises(UsageError):
        Prune(threshold=1.0, sparsity=0.5)
    with pytest.raises(UsageError):
        Prune(sparsity=1.5)
    with pytest.raises(UsageError):
        Prune(sparsity=0.5).get_config()
    with pytest.raises(UnsupportedError):
        Prune(threshold=1.0).encode(np.arange(4), CTX)
    with pytest.raises(UsageError, match="NaN"):
        Prune(sparsity=0.5).fit_encode(np.array([1.0, np.nan, 2.0, 3.0]), CTX)
    with pytest.raises(UsageError, match="fit_encode"):
        Prune(sparsity=0.5).encode(np.array([1.0, 2.0]), CTX)  # a target, not yet a threshold
    with pytest.raises(CorruptError):
        Prune(threshold=1.0).decode(np.zeros(3, np.float32), ArraySpec("float32", (4,)), CTX)


# ================================================================== configuration


ROUNDTRIP = [
    Scalar(0.1), Scalar(2.0**-20 * 3), Scalar(1e-300, dither=True, seed=2**64 - 1, stream=12345),
    Scalar(0.013, rd_lambda=0.25), Scalar(0.5, dither=True, seed=0, stream=0, rd_lambda=1e-3),
    Lattice("D4", 0.1), Lattice("E8", 1 / 3, dither=True, seed=7, stream=2**63),
    KMeans(centroids=[-0.1, 0.0, 1 / 3, 7e30]), Prune(threshold=0.0), Prune(threshold=np.nextafter(0.1, 1)),
]


@pytest.mark.parametrize("codec", ROUNDTRIP, ids=repr)
def test_config_roundtrip(codec):
    cfg = codec.get_config()
    again = type(codec).from_config(json.loads(json.dumps(cfg)))
    assert again == codec and again.get_config() == cfg
    assert get_codec(json.loads(json.dumps(codec.to_json()))) == codec


def test_config_roundtrip_after_fit():
    for c in (KMeans(5), Prune(sparsity=0.3)):
        c = c.fit(np.random.default_rng(15).standard_normal(100) / 3, CTX)
        again = type(c).from_config(json.loads(json.dumps(c.get_config())))
        assert again.get_config() == c.get_config()


BAD = [
    ("scalar", {}), ("scalar", {"step": 0}), ("scalar", {"step": -1.0}), ("scalar", {"step": "1"}),
    ("scalar", {"step": True}), ("scalar", {"step": float("inf")}), ("scalar", {"step": float("nan")}),
    ("scalar", {"step": 10**400}), ("scalar", {"step": 1.0, "dither": 1}),
    ("scalar", {"step": 1.0, "dither": True}), ("scalar", {"step": 1.0, "dither": True, "seed": 1}),
    ("scalar", {"step": 1.0, "dither": True, "seed": -1, "stream": 0}),
    ("scalar", {"step": 1.0, "dither": True, "seed": 2**64, "stream": 0}),
    ("scalar", {"step": 1.0, "dither": True, "seed": 1.0, "stream": 0}),
    ("scalar", {"step": 1.0, "seed": 1}), ("scalar", {"step": 1.0, "dither": False, "stream": 0}),
    ("scalar", {"step": 1.0, "rd_lambda": -0.5}), ("scalar", {"step": 1.0, "rd_lambda": None}),
    ("scalar", {"step": 1.0, "levels": 3}),
    ("lattice", {"step": 1.0}), ("lattice", {"lattice": "A2", "step": 1.0}), ("lattice", {"lattice": "E8"}),
    ("lattice", {"lattice": "e8", "step": 1.0}), ("lattice", {"lattice": "E8", "step": 1.0, "dither": True}),
    ("lattice", {"lattice": "D4", "step": 1.0, "rd_lambda": 0.1}),
    ("kmeans", {}), ("kmeans", {"centroids": []}), ("kmeans", {"centroids": 1.0}),
    ("kmeans", {"centroids": [1.0, 1.0]}), ("kmeans", {"centroids": [2.0, 1.0]}),
    ("kmeans", {"centroids": [0.0, "1"]}), ("kmeans", {"centroids": [True]}),
    ("kmeans", {"centroids": [float("nan")]}), ("kmeans", {"centroids": [0.0], "k": 1}),
    ("kmeans", {"centroids": list(range(65537))}),
    ("prune", {}), ("prune", {"threshold": -1.0}), ("prune", {"threshold": "0"}),
    ("prune", {"threshold": 1.0, "sparsity": 1.5}), ("prune", {"threshold": 1.0, "sparsity": -0.1}),
    ("prune", {"threshold": 1.0, "target": 0.5}),
]


@pytest.mark.parametrize("name,cfg", BAD, ids=lambda v: repr(v)[:60])
def test_bad_config_raises_corrupt(name, cfg):
    with pytest.raises(CorruptError, match=name):
        get_codec({"name": name, "configuration": cfg})


# ================================================================== pipeline


@pytest.mark.parametrize("dt", FLOATS)
@pytest.mark.parametrize("dith", [False, True])
def test_pipeline_scalar_raw(dt, dith):
    w = _arr(np.random.default_rng(16).standard_normal((37, 19)), dt)
    step = 0.03
    pipe = Pipeline([Scalar(step, dither=dith, seed=11 if dith else 0, stream=dither.stream_for_name("x")
                            if dith else 0), Raw()])
    payload = pipe.encode(w, CTX)
    assert len(payload) == w.size * 4
    back = Pipeline.from_json(json.loads(json.dumps(pipe.to_json())))
    assert back == pipe
    r = back.decode(payload, ArraySpec.of(w), CTX)
    assert r.dtype == w.dtype and r.shape == w.shape
    err = np.abs(_f64(r) - _f64(w))
    assert (err <= step / 2 * (1 + 1e-12) + _round_tol(dt, r)).all()


@pytest.mark.parametrize("stage", [Lattice("E8", 0.05, dither=True, seed=3), KMeans(12)], ids=repr)
def test_pipeline_lattice_kmeans_raw(stage):
    w = np.random.default_rng(17).standard_normal((10, 13)).astype(np.float32)
    pipe, payload = Pipeline([stage, Raw()]).fit_encode(w, CTX)
    back = Pipeline.from_json(json.loads(json.dumps(pipe.to_json())))
    r = back.decode(payload, ArraySpec.of(w), CTX)
    stage = stage.fit(w, CTX)
    assert np.array_equal(r, stage.decode(stage.encode(w, CTX), ArraySpec.of(w), CTX))


# ================================================================== spec test vectors


def _bits32(a):
    return [int(v) for v in np.asarray(a, np.float32).view(np.uint32)]


def test_spec_vectors_scalar():
    x = np.array([0, 0.25, 0.5, 0.75, 1.5, 2.5, -0.5, -1.5, 1000], np.float32)
    c = get_codec({"name": "scalar", "configuration": {"step": 0.5}})
    q, r = _roundtrip(c, x)
    assert q.tolist() == [0, 0, 1, 2, 3, 5, -1, -3, 2000]
    assert r.tolist() == [0, 0, 0.5, 1, 1.5, 2.5, -0.5, -1.5, 1000]

    x = np.array([0.1, -0.3, 1.0, 0.0, 0.125, -2.7], np.float32)
    c = get_codec({"name": "scalar", "configuration": {"step": 0.25, "dither": True, "seed": 1, "stream": 2}})
    u = (dither.uniform(1, 2, 0, 6) - 0.5) * 0.25
    assert u.tolist() == [-0.06210692740883922, 0.11185756958998239, -0.022934892493249176,
                          -0.11291221150847092, 0.014230297480536225, -0.0976486026692816]
    q, r = _roundtrip(c, x)
    assert q.tolist() == [0, -1, 4, 0, 1, -11]
    assert _bits32(r) == [0x3D7E63D5, 0xBEB94565, 0x3F82EF88, 0x3DE73E84, 0x3E716D9D, 0xC029C020]
    rb = c.decode(q, ArraySpec("bfloat16", (6,)), CTX)
    assert rb.view(np.uint16).tolist() == [0x3D7E, 0xBEB9, 0x3F83, 0x3DE7, 0x3E71, 0xC02A]

    x = np.array([0.3, -1.2, 0.7, 2.05, 0.5], np.float32)
    assert Scalar(0.1).encode(x, CTX).tolist() == [3, -12, 7, 20, 5]
    assert get_codec({"name": "scalar", "configuration": {"step": 0.1, "rd_lambda": 0.5}}).encode(
        x, CTX).tolist() == [3, -12, 6, 20, 5]


def test_spec_vectors_lattice():
    x = np.array([0.6, 0.6, 0.2, -0.1, 1.4, 0, 0, 0, 0.5, 0.5, 0.5, 0.5])
    assert Lattice("D4", 1.0).encode(x, CTX).tolist() == [[1, 1, 0, 0], [2, 0, 0, 0], [0, 0, 0, 0]]
    x = np.array([0.4, 0.45, 0.5, 0.6, 0.4, 0.5, 0.55, 0.45, 0.9, 1.1, 0.1, -0.2, 0, 0, 0, 0.05, 0.3])
    assert Lattice("E8", 1.0).encode(x, CTX).tolist() == [[1] * 8, [2, 2, 0, 0, 0, 0, 0, 0], [0] * 8]
    key = dither.key(1, 2)
    assert ref.lattice_dither(0, 1, 1.0, key).tolist() == [[
        0.4505748590892158, 0.35569070838693273, 0.45661158399311963, 0.048351153966116334]]
    assert ref.lattice_dither(1, 1, 1.0, key).tolist() == [[
        0.34295127072843984, 0.3264068166920093, 0.14714624441997004, 0.27866693240305457,
        0.2347525689583545, -0.1947774927745331, -0.12134298118442705, -0.21276303164091687]]
    x = np.array([0.1, -0.2, 0.3, -0.4, 0.5, -0.6, 0.7, -0.8, 0.9], np.float32)
    cfg = {"step": 0.25, "dither": True, "seed": 1, "stream": 2}
    q, r = _roundtrip(get_codec({"name": "lattice", "configuration": {"lattice": "E8", **cfg}}), x)
    assert q.tolist() == [[1, -1, 3, -3, 3, -5, 5, -7], [8, 0, 0, 0, 0, 0, 0, 0]]
    assert _bits32(r) == [0x3D20D162, 0xBE538F66, 0x3EAD2A50, 0xBEE3AB5C, 0x3EA1F3A1, 0xBF1388C4,
                          0x3F27C415, 0xBF526217, 0x3F7A382D]
    q, r = _roundtrip(get_codec({"name": "lattice", "configuration": {"lattice": "D4", **cfg}}), x)
    assert q.tolist() == [[1, 0, 2, -1], [2, -2, 3, -3], [4, 0, 0, 0]]
    assert _bits32(r) == [0x3E0CA720, 0xBDB61D18, 0x3EC58DC0, 0xBE86305F, 0x3EE36C9C, 0xBF0CDA54,
                          0x3F5561FE, 0xBF64C42E, 0x3F5AA964]


def test_spec_vectors_kmeans_prune():
    c = get_codec({"name": "kmeans", "configuration": {"centroids": [-1.0, 0.0, 2.5]}})
    q = c.encode(np.array([-3, -0.5, 0.1, 1.25, 1.26, 9]), CTX)
    assert q.tolist() == [0, 0, 1, 1, 2, 2]
    r = c.decode(q, ArraySpec("float32", (6,)), CTX)
    assert r.dtype == np.float32 and r.tolist() == [-1, -1, 0, 0, 2.5, 2.5]
    p = get_codec({"name": "prune", "configuration": {"threshold": 0.2}})
    x = np.array([0.5, -0.1, 0.2, -0.0, -2.0, 0.05, 1.0], np.float32)
    out = p.encode(x, CTX)
    assert _bits32(out) == _bits32([0.5, 0, 0.2, 0, -2.0, 0, 1.0])
    p, out2 = p.fit_encode(x, CTX)  # the fitted codec records the fraction of zeros
    assert _bits32(out2) == _bits32(out)
    assert p.get_config() == {"threshold": 0.2, "sparsity": 3 / 7}
