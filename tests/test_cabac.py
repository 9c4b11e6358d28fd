"""The ``cabac`` codec: round trips, kernel against reference, damage, configuration, rate."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nncodec.codecs.ans import Ans
from nncodec.entropy.stats import empirical_entropy_bits
from nncodec.entropy.varint import write_varint as put_varint
from nncodec.codecs.base import ArraySpec, Context
from nncodec.codecs.cabac import Cabac
from nncodec.entropy.contexts import model_bits, rate_model, row_width
from nncodec.errors import CorruptError, UsageError
from nncodec.kernels import cabac as kc
from reference import cabac as ref

CTX = Context(name="layer.weight")
STATES = [1, 4, 8]


def roundtrip(codec, x):
    data = codec.encode(x, CTX)
    y = codec.decode(memoryview(data), ArraySpec.of(x), CTX)
    assert y.dtype == np.int32 and y.shape == x.shape
    np.testing.assert_array_equal(x, y)
    return data


def laplace_levels(rng, shape, scale):
    return np.round(rng.laplace(0, scale, shape)).astype(np.int32)


@st.composite
def level_arrays(draw, max_side=24):
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=max_side))
    kind = draw(st.sampled_from(["small", "wide", "extreme", "sparse"]))
    if kind == "small":
        elems = st.integers(-6, 6)
    elif kind == "wide":
        elems = st.integers(-5000, 5000)
    elif kind == "extreme":
        elems = st.one_of(st.integers(-(2**31 - 1), 2**31 - 1), st.sampled_from([-(2**31 - 1), 2**31 - 1, 0]))
    else:
        elems = st.one_of(st.just(0), st.just(0), st.just(0), st.integers(-40, 40))
    return draw(hnp.arrays(np.int32, shape, elements=elems))


configs = st.tuples(st.sampled_from(STATES), st.integers(1, 32), st.integers(1, 10), st.integers(1, 10))


# ----------------------------------------------------------------- round trips


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=level_arrays(), cfg=configs)
def test_roundtrip_hypothesis(x, cfg):
    s, gt, ra, rb = cfg
    roundtrip(Cabac(s, gt=gt, rate_fast=ra, rate_slow=rb), x)


@pytest.mark.parametrize("states", STATES)
def test_roundtrip_large(states):
    rng = np.random.default_rng(1)
    x = laplace_levels(rng, (64, 33, 3, 3), 3.0)
    x[0, 0, 0, 0] = 2**31 - 1
    x[1, 0, 0, 0] = -(2**31 - 1)
    roundtrip(Cabac(states), x)


def test_empty_and_scalar():
    for shape in [(0,), (3, 0), (0, 4, 5), ()]:
        x = np.zeros(shape, np.int32)
        data = roundtrip(Cabac(8), x)
        if x.size == 0:
            assert data == b"\x00"


# ------------------------------------------------------- kernel == reference


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=level_arrays(max_side=8), cfg=configs)
def test_kernel_matches_reference(x, cfg):
    s, gt, ra, rb = cfg
    data = Cabac(s, gt=gt, rate_fast=ra, rate_slow=rb).encode(x, CTX)
    n = put_varint(x.size)
    assert data[: len(n)] == n
    if x.size == 0:
        assert data == n
        return
    stream = ref.encode(x, x.shape, s, gt, ra, rb)
    assert data[len(n):] == stream
    np.testing.assert_array_equal(ref.decode(stream, x.shape, s, gt, ra, rb), x)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=level_arrays(max_side=8), cfg=configs)
def test_counts_and_costs_match_reference(x, cfg):
    s, gt, _, _ = cfg
    table, quant = kc.STATE_TABLES[s]
    lv = np.ascontiguousarray(x.reshape(-1))
    counts = np.zeros((kc.n_contexts(gt), 2), np.int64)
    byp = kc.count_bins(lv, row_width(x.shape), table, quant, gt, counts)
    rcounts, rbyp = ref.count_bins(x, x.shape, s, gt)
    np.testing.assert_array_equal(counts, rcounts)
    assert byp == rbyp
    cost = rate_model(x, x.shape, s, gt)
    total = kc.path_bits(lv, row_width(x.shape), table, quant, gt, cost)
    rtotal = 0.0
    for k, st_, q, p1, p2, ab in ref.contexts_of([int(v) for v in lv], row_width(x.shape), s, gt):
        rtotal += ref.level_bits(k, st_, q, p1, p2, ab, gt, cost)
    assert total == rtotal


def test_row_width():
    assert row_width((5, 3, 2)) == 6
    assert row_width((7,)) == 7
    assert row_width(()) == 1
    assert row_width((0, 4)) == 1
    assert row_width((4, 0)) == 1


# ------------------------------------------------------------- damage


def _damaged_payloads(data, rng, flips=60):
    for cut in range(0, len(data)):
        yield data[:cut]
    yield data + b"\x00"
    yield data + b"\x17\x00"
    b = bytearray(data)
    for _ in range(flips):
        c = bytearray(b)
        i = int(rng.integers(0, len(c)))
        c[i] ^= 1 << int(rng.integers(0, 8))
        yield bytes(c)


@pytest.mark.parametrize("states", STATES)
def test_damaged_payloads_raise(states):
    rng = np.random.default_rng(7)
    x = laplace_levels(rng, (12, 20), 2.5)
    codec = Cabac(states)
    data = codec.encode(x, CTX)
    spec = ArraySpec.of(x)
    undetected = 0
    for bad in _damaged_payloads(data, rng):
        try:
            y = codec.decode(memoryview(bad), spec, CTX)
        except CorruptError:
            continue
        assert y.shape == x.shape and y.dtype == np.int32  # decoded something: must still be well formed
        undetected += 1
    # truncations and appended bytes are always caught; a bit flip that survives the final
    # check must have decoded different levels of the right shape (the odds are about 2**-32)
    assert undetected == 0


def test_truncation_always_detected_large():
    rng = np.random.default_rng(3)
    x = laplace_levels(rng, (50, 40), 4.0)
    codec = Cabac(8)
    data = codec.encode(x, CTX)
    for cut in list(range(0, 12)) + list(range(len(data) - 12, len(data))):
        with pytest.raises(CorruptError):
            codec.decode(memoryview(data[:cut]), ArraySpec.of(x), CTX)


def test_garbage_never_hangs():
    rng = np.random.default_rng(11)
    spec = ArraySpec("int32", (30, 30))
    for _ in range(200):
        n = int(rng.integers(0, 64))
        body = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        for data in (put_varint(900) + body, put_varint(900) + b"\x00" + body):
            with pytest.raises(CorruptError):
                Cabac(8).decode(memoryview(data), spec, CTX)


def test_count_mismatch():
    x = np.arange(12, dtype=np.int32).reshape(3, 4)
    data = Cabac(1).encode(x, CTX)
    with pytest.raises(CorruptError, match="13"):
        Cabac(1).decode(memoryview(data), ArraySpec("int32", (13,)), CTX)
    with pytest.raises(CorruptError, match="element count"):
        Cabac(1).decode(memoryview(b""), ArraySpec("int32", (3,)), CTX)
    with pytest.raises(CorruptError):
        Cabac(1).decode(memoryview(b"\x00\x00"), ArraySpec("int32", (0,)), CTX)
    with pytest.raises(CorruptError):
        Cabac(1).decode(memoryview(data), ArraySpec("int64", (3, 4)), CTX)


def test_encoder_rejects_bad_input():
    with pytest.raises(UsageError, match="int32"):
        Cabac(1).encode(np.zeros(3, np.int64), CTX)
    with pytest.raises(UsageError, match="2\\*\\*31"):
        Cabac(1).encode(np.array([0, -(2**31)], np.int32), CTX)


# ------------------------------------------------------------- configuration


def test_config_roundtrip():
    for c in (Cabac(), Cabac(8, gt=3, rate_fast=2, rate_slow=9), Cabac(4)):
        cfg = c.get_config()
        assert set(cfg) == {"states", "gt", "rate_fast", "rate_slow"}
        assert Cabac.from_config(cfg) == c


@pytest.mark.parametrize("bad", [
    {},
    {"states": 8, "gt": 16, "rate_fast": 5},
    {"states": 2, "gt": 16, "rate_fast": 5, "rate_slow": 8},
    {"states": True, "gt": 16, "rate_fast": 5, "rate_slow": 8},
    {"states": 8, "gt": 0, "rate_fast": 5, "rate_slow": 8},
    {"states": 8, "gt": 33, "rate_fast": 5, "rate_slow": 8},
    {"states": 8, "gt": 16.0, "rate_fast": 5, "rate_slow": 8},
    {"states": 8, "gt": 16, "rate_fast": 0, "rate_slow": 8},
    {"states": 8, "gt": 16, "rate_fast": 5, "rate_slow": 11},
    {"states": 8, "gt": 16, "rate_fast": 5, "rate_slow": 8, "extra": 1},
])
def test_bad_config(bad):
    with pytest.raises(CorruptError):
        Cabac.from_config(bad)


def test_bad_arguments():
    for kw in ({"states": 3}, {"gt": 0}, {"rate_fast": 11}, {"rate_slow": True}):
        with pytest.raises(UsageError):
            Cabac(**kw)


# ------------------------------------------------------------- rate


def test_rate_close_to_entropy_and_model():
    rng = np.random.default_rng(5)
    x = laplace_levels(rng, (200, 256), 3.0)
    data = Cabac(1).encode(x, CTX)
    bits = 8 * len(data)
    h = empirical_entropy_bits(x) * x.size
    assert bits < 1.01 * h
    assert bits < 8 * len(Ans().encode(x, CTX)) * 1.01
    assert abs(bits - model_bits(x, x.shape, 1)) < 0.02 * bits


def test_context_gain_on_correlated_rows():
    # rows with a shared magnitude profile: the level above predicts the magnitude
    rng = np.random.default_rng(9)
    prof = rng.choice([0.2, 6.0], 300)
    x = np.round(rng.laplace(0, 1, (100, 300)) * prof).astype(np.int32)
    bits = 8 * len(Cabac(1).encode(x, CTX))
    assert bits < 0.99 * empirical_entropy_bits(x) * x.size


@pytest.mark.parametrize("levels,cfg,hexdata", [
    ([0, 1, -1, 2, 0, 0, 5, -3], (1, 16, 5, 8), "080066a2f7cc000000"),
    ([[3, 0, -1], [2, 0, -1]], (8, 16, 5, 8), "0600b3a920000000"),
    ([40, -17, 0, 1], (4, 2, 4, 7), "0400bf8db58f000000"),
])
def test_spec_vectors(levels, cfg, hexdata):
    """The examples of spec/codecs/cabac.md section 9."""
    x = np.array(levels, np.int32)
    s, gt, ra, rb = cfg
    codec = Cabac(s, gt=gt, rate_fast=ra, rate_slow=rb)
    assert codec.encode(x, CTX).hex() == hexdata
    assert ref.encode(x, x.shape, s, gt, ra, rb).hex() == hexdata[2:]
    np.testing.assert_array_equal(codec.decode(memoryview(bytes.fromhex(hexdata)), ArraySpec.of(x), CTX), x)


def test_conformance():
    from conformance import check_codec

    check_codec(Cabac(1), np.array([[0, 1, -3], [2, 0, 0]], np.int32),
                bad_configs=[{"states": 2, "gt": 16, "rate_fast": 5, "rate_slow": 8}, {"states": 1}])
