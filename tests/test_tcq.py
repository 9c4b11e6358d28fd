"""The ``tcq`` codec: decoding rule, encoder against reference, RD optimality, bounds, pipelines."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nncodec import dtypes
from nncodec.codecs.base import ArraySpec, Context
from nncodec.codecs.cabac import Cabac
from nncodec.codecs.scalar import Scalar
from nncodec.entropy.contexts import cost_from_counts, rate_model, row_width
from nncodec.codecs.tcq import Tcq


def pipeline(step, *, states):
    from nncodec.pipeline import Pipeline

    return Pipeline([Tcq(step, states=states), Cabac(states)])
from nncodec.errors import CorruptError, UsageError
from nncodec.kernels import cabac as kc
from nncodec.kernels import tcq as kt
from reference import tcq as ref

from helpers import assert_same

CTX = Context(name="layer.weight")
FLOATS = ["float64", "float32", "float16", "bfloat16"]


def weights(rng, shape, scale=0.05):
    return rng.standard_normal(shape) * scale


@st.composite
def float_arrays(draw, max_side=10):
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=max_side))
    elems = st.floats(-3.0, 3.0, allow_nan=False, allow_infinity=False, width=32)
    return draw(hnp.arrays(np.float32, shape, elements=elems))


steps = st.sampled_from([0.01, 0.05, 0.1, 0.37, 1.0])
lams = st.sampled_from([0.0, 0.05, 0.15, 0.5, 2.0])


# ----------------------------------------------------------------- decoding rule


def test_decoding_test_vector():
    # spec/codecs/tcq.md, test vector 1 (8 states)
    lv = np.array([1, 2, -1, 0, 3, -2, 1, 1], np.int32)
    want = [0.5, 1.0, -0.25, 0.0, 1.25, -0.75, 0.5, 0.5]
    y = Tcq(0.25, states=8).decode(lv, ArraySpec("float64", (8,)), CTX)
    assert y.tolist() == want
    np.testing.assert_array_equal(ref.dequantize(lv, 8, 0.25), want)
    # 4 states: quantizer = state >> 1
    y4 = Tcq(0.25, states=4).decode(lv, ArraySpec("float64", (8,)), CTX)
    np.testing.assert_array_equal(y4, ref.dequantize(lv, 4, 0.25))
    assert y4.tolist() == [0.5, 0.75, -0.5, 0.0, 1.5, -0.75, 0.5, 0.5]


@settings(max_examples=80, deadline=None)
@given(lv=hnp.arrays(np.int32, st.integers(0, 60), elements=st.integers(-(2**31 - 1), 2**31 - 1)),
       states=st.sampled_from([4, 8]), step=steps)
def test_dequantize_matches_reference(lv, states, step):
    table, quant = kc.STATE_TABLES[states]
    out = np.empty(lv.size)
    kt.dequantize(lv, table, quant, step, out)
    np.testing.assert_array_equal(out, ref.dequantize(lv, states, step))


# ----------------------------------------------------------------- encoder


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=float_arrays(), states=st.sampled_from([4, 8]), step=steps, lam=lams)
def test_encoder_matches_reference(x, states, step, lam):
    got = Tcq(step, states=states, lam=lam).encode(x, CTX)
    want = ref.encode(x, step, states, lam, x.shape).reshape(x.shape)
    np.testing.assert_array_equal(got, want)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=float_arrays(), states=st.sampled_from([4, 8]), step=steps)
def test_greedy_matches_reference(x, states, step):
    table, quant = kc.STATE_TABLES[states]
    t = x.astype(np.float64).reshape(-1) / step
    g = np.empty(t.size, np.int32)
    kt.greedy(t, table, quant, g)
    np.testing.assert_array_equal(g, ref.greedy(t, states))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=float_arrays(), states=st.sampled_from([4, 8]), step=steps, lam=lams)
def test_viterbi_never_worse_than_rounding(x, states, step, lam):
    """Under one static bit model the Viterbi path costs no more than the trellis rounding."""
    t = x.astype(np.float64).reshape(-1) / step
    table, quant = kc.STATE_TABLES[states]
    g = ref.greedy(t, states)
    cost = rate_model(g, x.shape, states)
    width = row_width(x.shape)
    v = np.empty(t.size, np.int32)
    # with the rounding itself as the "above" levels the model the search uses is exact for g,
    # and for the path found it differs only in the above context; compare exactly anyway
    kt.viterbi(t, width, table, quant, 16, cost, lam, g, v)
    dg, bg = ref.path_cost(t, g, width, states, 16, cost)
    if width >= t.size:  # no row above: the search's model is the exact model
        dv, bv = ref.path_cost(t, v, width, states, 16, cost)
        assert dv + lam * bv <= dg + lam * bg + 1e-9 * (1 + dg + lam * bg)
    # the encoder's final choice is never worse under its own final model
    q = Tcq(step, states=states, lam=lam)
    out, cost_total = q.quantize(x, CTX)
    out = out.reshape(-1)
    assert np.array_equal(out, q.encode(x, CTX).reshape(-1))
    if t.size:
        c = cost  # the encoder's model: fitted to the trellis rounding
        do, bo = kt.path_cost(t, out, width, table, quant, 16, c, lam)
        dg2, bg2 = kt.path_cost(t, g, width, table, quant, 16, c, lam)
        assert do + lam * bo <= dg2 + lam * bg2
        assert cost_total == do + lam * bo


def test_viterbi_beats_rounding_on_gaussian():
    rng = np.random.default_rng(2)
    x = weights(rng, (64, 300))
    for states in (4, 8):
        q = Tcq(0.01, states=states, lam=0.15)
        lv = q.encode(x, CTX)
        t = x.reshape(-1) / 0.01
        g = ref.greedy(t, states)
        cost = rate_model(lv, x.shape, states)
        table, quant = kc.STATE_TABLES[states]
        dv, bv = kt.path_cost(t, lv.reshape(-1), x.shape[1], table, quant, 16, cost, 0.15)
        dg, bg = kt.path_cost(t, g, x.shape[1], table, quant, 16, cost, 0.15)
        assert dv + 0.15 * bv < 0.95 * (dg + 0.15 * bg)


def test_lambda_zero_minimises_error():
    rng = np.random.default_rng(4)
    x = weights(rng, (20, 50))
    y = Tcq(0.01, lam=0.0).decode(Tcq(0.01, lam=0.0).encode(x, CTX), ArraySpec.of(x), CTX)
    yg = ref.dequantize(ref.greedy(x.reshape(-1) / 0.01, 8), 8, 0.01).reshape(x.shape)
    assert np.sum((x - y) ** 2) < 0.8 * np.sum((x - yg) ** 2)


# ----------------------------------------------------------------- bounds and dtypes


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=float_arrays(), states=st.sampled_from([4, 8]), step=steps, lam=lams,
       dtype=st.sampled_from(FLOATS))
def test_error_bound(x, states, step, lam, dtype):
    x = x.astype(dtypes.to_numpy(dtype))
    q = Tcq(step, states=states, lam=lam)
    lv = q.encode(x, CTX)
    assert lv.dtype == np.int32 and lv.shape == x.shape
    y = q.decode(lv, ArraySpec.of(x), CTX)
    assert dtypes.from_numpy(y.dtype) == dtype and y.shape == x.shape
    xf = x.astype(np.float64)
    yf = y.astype(np.float64)
    ulp = {"float64": 2.0**-52, "float32": 2.0**-23, "float16": 2.0**-10, "bfloat16": 2.0**-7}[dtype]
    slack = (np.abs(xf) + 2 * step) * ulp + (6e-8 if dtype in ("float16", "bfloat16") else 0.0)
    assert np.all(np.abs(xf - yf) <= 2 * step * (1 + 1e-12) + slack)


def test_decode_dtypes_match_scalar_rounding():
    rng = np.random.default_rng(8)
    lv = rng.integers(-50, 50, (7, 9)).astype(np.int32)
    for dt in FLOATS:
        spec = ArraySpec(dt, lv.shape)
        y = Tcq(0.0123).decode(lv, spec, CTX)
        work = ref.dequantize(lv.reshape(-1), 8, 0.0123)
        from nncodec.dtypes import round_float as to_dtype

        assert_same(y, to_dtype(work, dt).reshape(lv.shape))


def test_decode_rejects():
    q = Tcq(1e308)
    with pytest.raises(CorruptError, match="not finite"):
        q.decode(np.array([3], np.int32), ArraySpec("float64", (1,)), CTX)
    with pytest.raises(CorruptError, match="not finite"):
        Tcq(1e38).decode(np.array([30], np.int32), ArraySpec("float32", (1,)), CTX)
    with pytest.raises(CorruptError):
        Tcq(1.0).decode(np.array([1.0]), ArraySpec("float32", (1,)), CTX)
    with pytest.raises(CorruptError, match="-2\\*\\*31"):
        Tcq(1.0).decode(np.array([-(2**31)], np.int32), ArraySpec("float64", (1,)), CTX)


def test_encode_rejects():
    with pytest.raises(UsageError, match="finite"):
        Tcq(0.1).encode(np.array([0.0, np.nan], np.float32), CTX)
    with pytest.raises(UsageError, match="larger step"):
        Tcq(1e-6).encode(np.array([1e4], np.float64), CTX)
    with pytest.raises(Exception):
        Tcq(0.1).encode(np.array([1, 2], np.int32), CTX)
    for bad in (0.0, -1.0, float("inf"), True):
        with pytest.raises(UsageError):
            Tcq(bad)
    with pytest.raises(UsageError):
        Tcq(0.1, states=2)
    with pytest.raises(UsageError):
        Tcq(0.1, lam=-1)


def test_largest_levels_fit():
    x = np.array([2.0**32 - 8, -(2.0**32 - 8), 3.0], np.float64)
    q = Tcq(1.0, lam=0.0)
    lv = q.encode(x, CTX)
    assert np.abs(lv.astype(np.int64)).max() <= 2**31 - 1
    y = q.decode(lv, ArraySpec.of(x), CTX)
    assert np.all(np.abs(y - x) <= 2.0)


# ----------------------------------------------------------------- configuration


def test_config_roundtrip():
    for q in (Tcq(0.01), Tcq(0.3, states=4, lam=0.0), Tcq(2, lam=1)):
        cfg = q.get_config()
        assert set(cfg) == {"step", "states", "lambda"}
        assert Tcq.from_config(cfg) == q


@pytest.mark.parametrize("bad", [
    {},
    {"states": 8, "lambda": 0.1},
    {"step": 0, "states": 8, "lambda": 0.1},
    {"step": 0.1, "states": 3, "lambda": 0.1},
    {"step": 0.1, "states": True, "lambda": 0.1},
    {"step": 0.1, "states": 8},
    {"step": 0.1, "states": 8, "lambda": -1},
    {"step": 0.1, "states": 8, "lambda": "x"},
    {"step": 0.1, "states": 8, "lambda": 0.1, "row_scales": []},
])
def test_bad_config(bad):
    with pytest.raises(CorruptError):
        Tcq.from_config(bad)


# ----------------------------------------------------------------- pipelines and files


def _register():
    from nncodec.codecs import codec_class, register_codec
    from nncodec.errors import UnsupportedError

    for cls in (Tcq, Cabac):
        try:
            codec_class(cls.codec_id)
        except UnsupportedError:
            register_codec(cls)


@pytest.mark.parametrize("states", [4, 8])
def test_pipeline_roundtrip_and_file(states):
    import nncodec
    from nncodec.pipeline import Pipeline

    _register()
    rng = np.random.default_rng(6)
    x = weights(rng, (16, 8, 3, 3)).astype(np.float32)
    p = pipeline(0.01, states=states)
    payload = p.encode(x, CTX)
    assert p == Pipeline.from_json(p.to_json())
    y = p.decode(memoryview(payload), ArraySpec.of(x), CTX)
    lv = p.stages[0].encode(x, CTX)
    assert_same(y, p.stages[0].decode(lv, ArraySpec.of(x), CTX))
    buf = io.BytesIO()
    with nncodec.Writer(buf) as w:
        w.add_encoded("w", "float32", x.shape, p, payload)
        w.add("v", x, pipeline=pipeline(0.02, states=states))
    back = nncodec.decode_bytes(buf.getvalue())
    assert_same(back["w"], y)
    assert np.max(np.abs(back["v"] - x)) <= 0.04 + 1e-7


def test_tcq_beats_scalar_at_equal_rate():
    """About +1 dB at equal rate on Gaussian weights (static rate model for both)."""
    rng = np.random.default_rng(12)
    x = weights(rng, (128, 256))
    sig = float(np.sum(x**2))

    def snr(y):
        return 10 * np.log10(sig / float(np.sum((x - y) ** 2)))

    s = Scalar(0.02)
    ls = s.encode(x, CTX)
    rs = 8 * len(Cabac(1).encode(ls, CTX)) / x.size
    q = Tcq(0.02 * 0.55)
    lt = q.encode(x, CTX)
    rt = 8 * len(Cabac(8).encode(lt, CTX)) / x.size
    gain = snr(q.decode(lt, ArraySpec.of(x), CTX)) - snr(s.decode(ls, ArraySpec.of(x), CTX))
    # convert the rate difference at 6.02 dB per bit
    assert gain + 6.02 * (rs - rt) > 0.6


def test_conformance():
    from conformance import check_codec

    check_codec(Tcq(0.05), np.random.default_rng(0).standard_normal((6, 10)).astype(np.float32), exact=False,
                bad_configs=[{"step": 0.1}, {"step": 0.1, "states": 3, "lambda": 0.3}])


# ----------------------------------------------------------------- fast kernels


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(states=st.sampled_from([4, 8]), lam=st.sampled_from([0.0, 0.5, 1.0, 3.0]), width=st.sampled_from([1, 3, 7]),
       halves=hnp.arrays(np.int64, st.integers(1, 60), elements=st.integers(-80, 80)),
       flat=st.booleans())
def test_viterbi_ties_and_large_levels_match_reference(states, lam, width, halves, flat):
    """Half-integer weights put ties everywhere (flat costs make the rate ties too) and levels past
    the greater-than bins take the Exp-Golomb path: the table-driven trellis picks what the
    reference picks."""
    table, quant = kc.STATE_TABLES[states]
    t = halves.astype(np.float64) / 2
    gt = 3
    g = np.empty(t.size, np.int32)
    kt.greedy(t, table, quant, g)
    cost = np.ones((kc.n_contexts(gt), 2)) if flat else rate_model(g, (t.size,), states, gt)
    v = np.empty(t.size, np.int32)
    kt.viterbi(t, width, table, quant, gt, cost, lam, g, v)
    np.testing.assert_array_equal(v, ref.viterbi(t, width, states, gt, cost, lam, g))
    d, b = kt.path_cost(t, v, width, table, quant, gt, cost, lam)
    assert (d, b) == ref.path_cost(t, v, width, states, gt, cost)


def test_level_table_matches_level_bits():
    rng = np.random.default_rng(3)
    for states in (4, 8):
        table, quant = kc.STATE_TABLES[states]
        for gt in (1, 4, 16):
            cost = rng.uniform(0.01, 9.0, (kc.n_contexts(gt), 2))
            tab, hi = kt.level_table(states, quant, gt, cost)
            for _ in range(300):
                s = int(rng.integers(states))
                p1, p2, ab = (int(v) for v in rng.integers(-5, 6, 3))
                x = kt._ctx(s, p1, p2, ab)
                for k in (0, 1, -1, gt, -gt, gt + 1, -(gt + 7), 1000):
                    c = abs(k)
                    got = tab[x, int(k < 0), c] if c <= gt else kt._eg_bits(hi[x, int(k < 0)], c, gt, cost)
                    assert got == kc.level_bits(k, s, quant[s], p1, p2, ab, gt, cost)


def test_scale_checks_like_numpy():
    x = np.array([0.5, -2.0, 3.0, -3.0, 1.0], np.float32)
    t = Tcq(0.5).scaled(x, CTX)
    np.testing.assert_array_equal(t, x.astype(np.float64) / 0.5)
    assert Tcq(0.5).scaled(np.zeros(0, np.float32), CTX).shape == (0,)
    for bad, where in (([1.0, np.nan, np.inf], "element 1 is"), ([1.0, 2.0, -np.inf], "element 2 is")):
        with pytest.raises(UsageError, match=where):
            Tcq(0.5).scaled(np.array(bad), CTX)
    with pytest.raises(UsageError, match="element 1 = .* needs a level beyond int32"):
        Tcq(1e-300).scaled(np.array([1.0, -1e10, 1e10]), CTX)
