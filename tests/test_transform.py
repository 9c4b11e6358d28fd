"""The transform stages: dct and lowrank (spec/codecs/dct.md, spec/codecs/lowrank.md)."""

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nncodec import dtypes
from nncodec.codecs import ArraySpec, Context, get_codec, register_codec
from nncodec.codecs.raw import Raw
from nncodec.codecs.dct import DCT, block_frequencies, dct_matrix, forward, inverse, scan_order
from nncodec.codecs.lowrank import LowRank, choose_rank, singular_values
from nncodec.errors import CorruptError, UnsupportedError, UsageError
from nncodec.pipeline import Pipeline

CTX = Context(name="layer.weight")
FLOATS = ["float64", "float32", "float16", "bfloat16"]


@pytest.fixture(autouse=True, scope="module")
def _registered():
    for cls in (DCT, LowRank):
        register_codec(cls)


def _arr(x, dt):
    return np.asarray(x).astype(dtypes.to_numpy(dt))


def _roundtrip(codec, a):
    spec = ArraySpec.of(a)
    codec, enc = codec.fit_encode(a, CTX)  # a data-dependent stage is fitted first (a new codec)
    assert ArraySpec.of(enc) == codec.resolve(spec)
    dec = codec.decode(enc, spec, CTX)
    assert ArraySpec.of(dec) == spec
    return enc, dec


# ------------------------------------------------------------------ dct: the matrix


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 8, 16, 31, 64])
def test_dct_matrix_is_orthonormal(n):
    d = dct_matrix(n)
    np.testing.assert_allclose(d @ d.T, np.eye(n), atol=1e-14)
    np.testing.assert_allclose(d.T @ d, np.eye(n), atol=1e-14)
    # the formula of spec/codecs/dct.md, entry by entry
    for k in range(n):
        a = math.sqrt((1.0 if k == 0 else 2.0) / n)
        for j in range(n):
            assert abs(d[k, j] - a * math.cos(math.pi * (2 * j + 1) * k / (2 * n))) < 1e-15
    assert not d.flags.writeable


def test_dct_matrix_matches_dct_ii_definition():
    # D x equals the orthonormal DCT-II computed as a sum, for a random vector
    rng = np.random.default_rng(1)
    x = rng.standard_normal(12)
    n = x.size
    ref = [sum(x[j] * math.cos(math.pi * (2 * j + 1) * k / (2 * n)) for j in range(n)) for k in range(n)]
    ref = np.array(ref) * np.sqrt(2.0 / n)
    ref[0] /= math.sqrt(2.0)
    np.testing.assert_allclose(dct_matrix(n) @ x, ref, atol=1e-12)


def test_dct_matrix_rejects_bad_sizes():
    for bad in (0, -1, 1025, 2.0, True, "8"):
        with pytest.raises(UsageError):
            dct_matrix(bad)


# ------------------------------------------------------------------ dct: scans and frequencies


def test_zigzag_is_jpeg_order_for_8x8():
    jpeg = [0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27,
            20, 13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58,
            59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63]
    assert scan_order(8, 8, "zigzag").tolist() == jpeg


@pytest.mark.parametrize("bh,bw", [(1, 1), (1, 5), (5, 1), (2, 3), (3, 2), (4, 7), (8, 8), (3, 3)])
def test_zigzag_rectangular_is_a_permutation_by_diagonals(bh, bw):
    p = scan_order(bh, bw, "zigzag")
    assert sorted(p.tolist()) == list(range(bh * bw))
    u, v = p // bw, p % bw
    s = u + v
    assert (np.diff(s) >= 0).all()  # diagonals in order
    for d in range(bh + bw - 1):
        us = u[s == d]
        want = sorted(us.tolist(), reverse=(d % 2 == 0))  # even diagonals go up (u decreasing)
        assert us.tolist() == want
    assert scan_order(bh, bw, "natural").tolist() == list(range(bh * bw))


def test_spec_example_2x2():
    # spec/codecs/dct.md test vector 2
    enc = DCT(block=(2, 2)).encode(np.array([[1.0, 2.0], [3.0, 4.0]]), CTX)
    np.testing.assert_allclose(enc, [[5.0, -1.0, -2.0, 0.0]], atol=1e-14)
    one = DCT(block=(1, 1)).encode(np.arange(6.0).reshape(2, 3), CTX)
    assert one.shape == (6, 1) and one.reshape(-1).tolist() == list(range(6))


def test_spec_example_3x2_zigzag():
    # spec/codecs/dct.md test vector: a 3x2 block in zigzag order
    assert scan_order(3, 2, "zigzag").tolist() == [0, 1, 2, 4, 3, 5]


def test_block_frequencies_and_frequency_index():
    u, v = block_frequencies(4, 4, "zigzag")
    assert (u + v).tolist() == sorted((u + v).tolist())
    codec = DCT(block=(4, 4), scan="zigzag")
    spec = ArraySpec("float32", (10, 9))
    f = codec.frequency_index(spec)
    assert f.shape == codec.resolve(spec).shape
    assert f[0].tolist() == (u + v).tolist() and (f[5] == f[0]).all()
    # the DC coefficient carries the block mean: a constant matrix has energy only at frequency 0
    enc = codec.encode(np.ones((8, 8), np.float32), CTX)
    freq = codec.frequency_index(ArraySpec("float32", (8, 8)))
    assert np.abs(enc[freq > 0]).max() < 1e-6 and np.allclose(enc[freq == 0], 4.0)


# ------------------------------------------------------------------ dct: transform properties


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3), st.integers(1, 19), st.integers(1, 19), st.integers(1, 9), st.integers(1, 9),
       st.sampled_from(["natural", "zigzag"]), st.integers(0, 2**31))
def test_dct_parseval_and_inverse(lead, r, c, bh, bw, scan, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((lead, r, c))
    y = forward(x, bh, bw, scan)
    tr, tc = -(-r // bh), -(-c // bw)
    assert y.shape == (lead * tr * tc, bh * bw)
    # orthonormal: the norm is kept (zero padding adds nothing)
    assert abs(np.linalg.norm(y) - np.linalg.norm(x)) <= 1e-12 * max(1.0, np.linalg.norm(x))
    back = inverse(y, lead, r, c, bh, bw, scan)
    np.testing.assert_allclose(back, x, atol=1e-12)
    # Parseval for errors: a perturbation of the coefficients maps to a perturbation of equal norm
    # in the padded tiles; cropping can only remove some of it
    e = rng.standard_normal(y.shape) * 1e-3
    d = inverse(y + e, lead, r, c, bh, bw, scan) - x
    assert np.linalg.norm(d) <= np.linalg.norm(e) * (1 + 1e-9)
    if r % bh == 0 and c % bw == 0:
        assert abs(np.linalg.norm(d) - np.linalg.norm(e)) <= 1e-9 * np.linalg.norm(e)


def test_dct_of_one_tile_is_the_2d_dct():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 7))
    y = forward(x[None], 5, 7).reshape(5, 7)
    np.testing.assert_allclose(y, dct_matrix(5) @ x @ dct_matrix(7).T, atol=1e-13)


def test_dct_tiling_and_zero_padding():
    # a 5x6 matrix in 4x4 tiles: 2x2 tiles, the edge tiles padded with zeros
    x = np.arange(30, dtype=np.float64).reshape(5, 6) + 1
    codec = DCT(block=(4, 4))
    enc = codec.encode(x, CTX)
    assert enc.shape == (4, 16) and enc.dtype == np.float64
    pad = np.zeros((8, 8))
    pad[:5, :6] = x
    d = dct_matrix(4)
    for ti in range(2):
        for tj in range(2):
            tile = pad[4 * ti:4 * ti + 4, 4 * tj:4 * tj + 4]
            np.testing.assert_allclose(enc[ti * 2 + tj], (d @ tile @ d.T).reshape(-1), atol=1e-12)
    np.testing.assert_allclose(codec.decode(enc, ArraySpec.of(x), CTX), x, atol=1e-12)


def test_dct_conv_kernels_block_null():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    codec = DCT(block=None, scan="zigzag")
    spec = ArraySpec.of(w)
    assert codec.resolve(spec) == ArraySpec("float32", (24, 9))
    assert codec.block_shape(spec) == (3, 3)
    enc, dec = _roundtrip(codec, w)
    d = dct_matrix(3)
    k = w[2, 1].astype(np.float64)
    np.testing.assert_allclose(enc[2 * 4 + 1], (d @ k @ d.T).reshape(-1)[scan_order(3, 3, "zigzag")], atol=1e-6)
    np.testing.assert_allclose(dec, w, atol=1e-6)
    # a block given explicitly tiles the last two axes of every kernel the same way
    assert DCT(block=(3, 3)).resolve(spec) == ArraySpec("float32", (24, 9))
    assert DCT(block=(2, 2)).resolve(spec) == ArraySpec("float32", (6 * 4 * 4, 4))


@pytest.mark.parametrize("dt", FLOATS)
def test_dct_roundtrip_every_dtype(dt):
    rng = np.random.default_rng(5)
    x = _arr(rng.standard_normal((13, 21)) * 0.05, dt)
    enc, dec = _roundtrip(DCT(block=(8, 8), scan="zigzag"), x)
    assert enc.dtype == (np.float64 if dt == "float64" else np.float32)
    ref = x.astype(np.float64)
    tol = {"float64": 1e-15, "float32": 1e-8, "float16": 1e-4, "bfloat16": 1e-3}[dt]
    np.testing.assert_allclose(dec.astype(np.float64), ref, atol=tol)
    if dt in ("float16", "bfloat16"):  # the error is far below half an ulp: exact after rounding
        assert (dec.astype(np.float64) == ref).all()


def test_dct_decode_rounds_to_nearest_even_via_float32():
    # coefficients whose inverse is exactly a float64 value between two float32 values
    spec = ArraySpec("float32", (1, 1))
    codec = DCT(block=(1, 1))
    v = 1.0 + 2.0**-24  # halfway between 1 and the next float32: ties to even -> 1.0
    out = codec.decode(np.array([[v]], dtype=np.float32).astype(np.float32), spec, CTX)
    assert out[0, 0] == np.float32(1.0)
    spec64 = ArraySpec("float64", (1, 1))
    assert codec.decode(np.array([[v]]), spec64, CTX)[0, 0] == v


def test_dct_empty_and_edge_shapes():
    codec = DCT(block=(4, 4))
    for shape in [(0, 5), (5, 0), (2, 0, 3), (1, 1), (4, 4), (3, 17)]:
        x = np.ones(shape, np.float32)
        enc, dec = _roundtrip(codec, x)
        np.testing.assert_allclose(dec, x, atol=1e-6)
    assert DCT(block=None).resolve(ArraySpec("float32", (0, 5))) == ArraySpec("float32", (0, 5))


def test_dct_rejects_bad_inputs():
    codec = DCT()
    with pytest.raises(CorruptError):
        codec.resolve(ArraySpec("float32", (10,)))
    with pytest.raises(UnsupportedError):
        codec.resolve(ArraySpec("int32", (4, 4)))
    with pytest.raises(UsageError):
        codec.encode(np.ones(10, np.float32), CTX)
    with pytest.raises(UsageError):
        codec.encode(np.array([[1.0, np.nan]], np.float32), CTX)
    with pytest.raises(UsageError):
        DCT(block=None).encode(np.ones((2, 2000), np.float32), CTX)
    with pytest.raises(CorruptError):
        DCT(block=None).resolve(ArraySpec("float32", (2, 2000)))
    spec = ArraySpec("float32", (8, 8))
    with pytest.raises(CorruptError):  # wrong shape
        codec.decode(np.zeros((2, 64), np.float32), spec, CTX)
    with pytest.raises(CorruptError):  # wrong dtype
        codec.decode(np.zeros((1, 64), np.float64), spec, CTX)
    bad = np.zeros((1, 64), np.float32)
    bad[0, 3] = np.inf
    with pytest.raises(CorruptError):
        codec.decode(bad, spec, CTX)
    with pytest.raises(CorruptError):  # decodes beyond float16
        codec.decode(np.full((1, 64), 1e6, np.float32), ArraySpec("float16", (8, 8)), CTX)


def test_dct_config_roundtrip_and_validation():
    for codec in (DCT(), DCT(block=(4, 2), scan="zigzag"), DCT(block=None)):
        obj = json.loads(json.dumps(codec.to_json()))
        assert get_codec(obj) == codec
    good = {"block": [8, 8], "scan": "natural"}
    assert DCT.from_config(good) == DCT()
    for bad in [{}, {"scan": "natural"}, {"block": [8, 8]}, {"block": [8], "scan": "natural"},
                {"block": [0, 8], "scan": "natural"}, {"block": [8, 1025], "scan": "natural"},
                {"block": [8.0, 8], "scan": "natural"}, {"block": [True, 8], "scan": "natural"},
                {"block": 8, "scan": "natural"}, {"block": [8, 8], "scan": "hilbert"},
                {"block": [8, 8], "scan": "natural", "extra": 1}]:
        with pytest.raises(CorruptError):
            DCT.from_config(bad)
    for bad in [dict(block=(0, 8)), dict(block=(8,)), dict(scan="x"), dict(block="8x8")]:
        with pytest.raises(UsageError):
            DCT(**bad)


def test_dct_in_a_pipeline():
    rng = np.random.default_rng(6)
    w = rng.standard_normal((16, 24)).astype(np.float32)
    p = Pipeline([DCT(block=(8, 8), scan="zigzag"), Raw()])
    spec = ArraySpec.of(w)
    data = p.encode(w, CTX)
    back = Pipeline.from_json(json.loads(json.dumps(p.to_json()))).decode(memoryview(data), spec, CTX)
    np.testing.assert_allclose(back, w, atol=1e-6)


def test_dct_with_a_quantizer_error_maps_back_unchanged():
    from nncodec.codecs import scalar as quantize
    rng = np.random.default_rng(7)
    w = rng.standard_normal((32, 32))
    dct = DCT(block=(8, 8))
    q = quantize.Scalar(0.1)
    spec = ArraySpec.of(w)
    c = dct.encode(w, CTX)
    cq = q.decode(q.encode(c, CTX), ArraySpec.of(c), CTX)
    back = dct.decode(cq, spec, CTX)
    assert abs(np.linalg.norm(back - w) - np.linalg.norm(cq - c)) < 1e-10


# ------------------------------------------------------------------ lowrank


@pytest.mark.parametrize("shape,rows", [((20, 12), 1), ((12, 20), 1), ((8, 3, 3, 3), 1), ((4, 6, 8), 2)])
@pytest.mark.parametrize("rank", [0, 1, 3, 7])
def test_lowrank_error_is_discarded_energy(shape, rows, rank):
    rng = np.random.default_rng(rank)
    w = rng.standard_normal(shape)
    codec = LowRank(rank=rank, rows=rows)
    enc, dec = _roundtrip(codec, w)
    m = math.prod(shape[:rows])
    n = math.prod(shape[rows:])
    assert enc.shape == (rank * (m + n),) and enc.dtype == np.float64
    s = singular_values(w, rows)
    err = float(((dec - w) ** 2).sum())
    assert abs(err - float((s[rank:] ** 2).sum())) <= 1e-9 * float((s**2).sum())


def test_lowrank_factor_layout():
    rng = np.random.default_rng(8)
    w = rng.standard_normal((9, 5))
    enc = LowRank(rank=3).encode(w, CTX)
    a = enc[:27].reshape(9, 3)
    b = enc[27:].reshape(3, 5)
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    # A = U diag(sqrt s), B = diag(sqrt s) V^T, up to the sign of each component
    for i in range(3):
        sign = np.sign(a[:, i] @ u[:, i])
        np.testing.assert_allclose(a[:, i], sign * u[:, i] * np.sqrt(s[i]), atol=1e-12)
        np.testing.assert_allclose(b[i], sign * vt[i] * np.sqrt(s[i]), atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(a, axis=0), np.linalg.norm(b, axis=1), atol=1e-12)


def test_lowrank_float32_and_half_types():
    rng = np.random.default_rng(9)
    low = (rng.standard_normal((40, 4)) @ rng.standard_normal((4, 30))).astype(np.float32)
    for dt in ("float32", "float16", "bfloat16"):
        x = low.astype(dtypes.to_numpy(dt))
        enc, dec = _roundtrip(LowRank(rank=4), x)
        assert enc.dtype == np.float32
        rel = np.linalg.norm(dec.astype(np.float64) - x.astype(np.float64)) / np.linalg.norm(x.astype(np.float64))
        assert rel < {"float32": 1e-6, "float16": 1e-3, "bfloat16": 1e-2}[dt]


def test_choose_rank_energy_and_rd_slope():
    rng = np.random.default_rng(10)
    u, _ = np.linalg.qr(rng.standard_normal((30, 30)))
    v, _ = np.linalg.qr(rng.standard_normal((20, 20)))
    s = np.array([10.0, 5, 3, 1, 0.5] + [0.0] * 15)
    w = u[:, :20] @ np.diag(s) @ v.T
    e = s**2
    total = e.sum()
    for energy in (0.0, 0.5, 0.7, 0.9, 0.99, 0.999, 1.0):
        r = choose_rank(w, energy=energy)
        want = 0 if energy == 0 else int(np.argmax(np.cumsum(e) >= energy * total * (1 - 1e-12))) + 1
        assert r == want, (energy, r, want)
    assert choose_rank(w, energy=1.0) == 5
    # rd_slope: keep component i iff s_i^2 > lam (m + n)
    e = singular_values(w) ** 2
    for lam in (1e-6, 0.01, 0.1, 1.0, 3.0):
        r = choose_rank(w, rd_slope=lam)
        assert r == int((e > lam * 50).sum())
        cost = [(e[k:].sum() + lam * k * 50) for k in range(21)]
        assert cost[r] <= min(cost) + 1e-9
    assert choose_rank(w, rd_slope=1e-6) == 5 and choose_rank(w, rd_slope=100.0) == 0
    assert choose_rank(np.zeros((4, 5)), energy=0.9) == 0
    with pytest.raises(UsageError):
        choose_rank(w)
    with pytest.raises(UsageError):
        choose_rank(w, energy=0.5, rd_slope=1.0)
    with pytest.raises(UsageError):
        choose_rank(w, energy=1.5)
    with pytest.raises(UsageError):
        choose_rank(w, rd_slope=-1)


def test_lowrank_fits_rank_per_tensor():
    rng = np.random.default_rng(11)
    w = rng.standard_normal((16, 3)) @ rng.standard_normal((3, 12))
    codec = LowRank(energy=0.999999)
    with pytest.raises(UsageError):
        codec.get_config()
    with pytest.raises(UsageError):  # not fitted: no rank to encode with
        codec.encode(w, CTX)
    codec, enc = codec.fit_encode(w, CTX)
    assert codec.get_config() == {"rank": 3, "rows": 1}
    dec = LowRank.from_config(codec.get_config()).decode(enc, ArraySpec.of(w), CTX)
    np.testing.assert_allclose(dec, w, atol=1e-10)


def test_lowrank_config_roundtrip_and_validation():
    for codec in (LowRank(rank=5), LowRank(rank=0, rows=2)):
        assert get_codec(json.loads(json.dumps(codec.to_json()))) == codec
    for bad in [{}, {"rank": 3}, {"rows": 1}, {"rank": -1, "rows": 1}, {"rank": 2.0, "rows": 1},
                {"rank": 2, "rows": 0}, {"rank": 2, "rows": 32}, {"rank": 2, "rows": 1, "x": 0},
                {"rank": True, "rows": 1}]:
        with pytest.raises(CorruptError):
            LowRank.from_config(bad)
    codec = LowRank(rank=6)
    with pytest.raises(CorruptError):  # rank above min(m, n)
        codec.resolve(ArraySpec("float32", (5, 20)))
    with pytest.raises(CorruptError):
        LowRank(rank=1, rows=2).resolve(ArraySpec("float32", (5, 20)))
    with pytest.raises(CorruptError):
        codec.resolve(ArraySpec("float32", (5,)))
    with pytest.raises(UnsupportedError):
        codec.resolve(ArraySpec("int8", (5, 20)))
    with pytest.raises(UsageError):
        codec.encode(np.ones((5, 20)), CTX)
    with pytest.raises(UsageError):
        LowRank(rank=1).encode(np.array([[np.inf, 1.0]]), CTX)
    spec = ArraySpec("float32", (6, 7))
    with pytest.raises(CorruptError):
        LowRank(rank=2).decode(np.zeros(25, np.float32), spec, CTX)
    bad = np.zeros(26, np.float32)
    bad[3] = np.nan
    with pytest.raises(CorruptError):
        LowRank(rank=2).decode(bad, spec, CTX)
    with pytest.raises(CorruptError):  # overflows float16
        LowRank(rank=2).decode(np.full(26, 1e3, np.float32), ArraySpec("float16", (6, 7)), CTX)


def test_lowrank_empty_tensor():
    x = np.zeros((0, 4), np.float32)
    codec = LowRank(energy=0.9).fit(x, CTX)
    enc, dec = _roundtrip(codec, x)
    assert enc.shape == (0,) and codec.rank == 0


def test_lowrank_spec_examples():
    # spec/codecs/lowrank.md test vectors
    w = np.array([[3.0, 0.0], [0.0, 2.0]])
    enc = LowRank(rank=1).encode(w, CTX)
    r3 = math.sqrt(3.0)
    assert np.allclose(np.abs(enc), [r3, 0, r3, 0], atol=1e-15)
    dec = LowRank(rank=1).decode(enc, ArraySpec.of(w), CTX)
    np.testing.assert_allclose(dec, [[3.0, 0.0], [0.0, 0.0]], atol=1e-15)
    assert LowRank(rank=4).resolve(ArraySpec("float32", (8, 3, 3, 3))) == ArraySpec("float32", (140,))
