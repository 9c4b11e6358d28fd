"""The ``ans`` and ``zerorun`` codecs: round trips, reference bytes, rates, damage, configuration."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nncodec.codecs.ans import Ans
from nncodec.codecs.zerorun import ZeroRun
from nncodec.entropy.rans import encode_stream, normalize_freqs
from nncodec.entropy.stats import empirical_entropy_bits
from nncodec.entropy.zvalues import to_z
from reference import ans as ref
from nncodec.codecs.base import ArraySpec, Context
from nncodec.errors import CorruptError, UsageError

from helpers import assert_same

INT_DTYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
CODECS = [Ans, ZeroRun]
REF = {Ans: (ref.encode_ans, ref.decode_ans), ZeroRun: (ref.encode_zerorun, ref.decode_zerorun)}
CTX = Context(name="layer.weight")


def roundtrip(codec, x):
    data = codec.encode(x, CTX)
    y = codec.decode(memoryview(data), ArraySpec.of(x), CTX)
    assert_same(x, y)
    return data


def levels(rng, n, scale, dtype=np.int32):
    return np.round(rng.laplace(0, scale, n)).astype(dtype)


configs = st.tuples(st.integers(10, 16), st.sampled_from([1, 2, 4, 8, 16, 32]))


@st.composite
def int_arrays(draw, max_side=40):
    dtype = draw(st.sampled_from(INT_DTYPES))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=max_side))
    info = np.iinfo(dtype)
    kind = draw(st.sampled_from(["small", "any", "sparse", "const"]))
    if kind == "any":
        elems = st.integers(int(info.min), int(info.max))
    elif kind == "const":
        v = draw(st.integers(int(info.min), int(info.max)))
        elems = st.just(v)
    else:
        lo = max(int(info.min), -4)
        elems = st.integers(lo, 5)
        if kind == "sparse":
            extremes = st.sampled_from([int(info.min), int(info.max)])
            elems = st.one_of(st.just(0), st.just(0), st.just(0), elems, extremes)
    return draw(hnp.arrays(np.dtype(dtype), shape, elements=elems))


# --------------------------------------------------------------- round trips


@pytest.mark.parametrize("cls", CODECS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=int_arrays(), cfg=configs)
def test_roundtrip_hypothesis(cls, x, cfg):
    roundtrip(cls(*cfg), x)


@pytest.mark.parametrize("cls", CODECS)
@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_roundtrip_extremes(cls, dtype):
    info = np.iinfo(dtype)
    rng = np.random.default_rng(3)
    x = levels(rng, 5000, 2.0, np.int64)
    x = np.clip(x, int(info.min), int(info.max)).astype(dtype)
    x[:6] = [info.min, info.max, info.min, info.max, info.min + 1, info.max - 1]
    x[100:200] = info.max
    roundtrip(cls(), x.reshape(50, 100))
    roundtrip(cls(10, 1), x)
    # every value an escape
    roundtrip(cls(), rng.integers(int(info.min), int(info.max), 300, dtype=dtype, endpoint=True))


@pytest.mark.parametrize("cls", CODECS)
@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_empty_scalar_constant(cls, dtype):
    info = np.iinfo(dtype)
    c = cls()
    assert roundtrip(c, np.zeros((0,), dtype)) == b""
    assert roundtrip(c, np.zeros((3, 0, 2), dtype)) == b""
    for v in (0, 1, int(info.max), int(info.min)):
        roundtrip(c, np.array(v, dtype))  # 0-d
        data = roundtrip(c, np.full((1000, 1000), v, dtype))
        assert len(data) <= 24, (v, len(data))


def test_all_zero_costs_a_byte():
    x = np.zeros(10**6, np.int32)
    assert len(roundtrip(Ans(), x)) == 2
    assert len(roundtrip(ZeroRun(), x)) == 1


def test_non_contiguous_and_big_endian_input():
    rng = np.random.default_rng(0)
    x = levels(rng, 4000, 3.0).reshape(40, 100)
    for c in (Ans(), ZeroRun()):
        y = x[:, ::3]
        data = c.encode(y, CTX)
        assert_same(c.decode(memoryview(data), ArraySpec.of(y), CTX), np.ascontiguousarray(y))
        be = x.astype(">i4")
        data = c.encode(be, CTX)
        assert_same(c.decode(memoryview(data), ArraySpec("int32", x.shape), CTX), x)


@pytest.mark.parametrize("cls", CODECS)
def test_rejects_non_integer(cls):
    with pytest.raises(UsageError):
        cls().encode(np.zeros(4, np.float32), CTX)
    with pytest.raises(CorruptError, match="layer.weight"):
        cls().decode(memoryview(b"\x00\x00"), ArraySpec("float32", (4,)), CTX)


# --------------------------------------------------------- reference bytes


@pytest.mark.parametrize("cls", CODECS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=int_arrays(max_side=12), cfg=configs)
def test_same_bytes_as_reference(cls, x, cfg):
    enc, dec = REF[cls]
    data = cls(*cfg).encode(x, CTX)
    assert data == enc(x, *cfg)
    assert_same(dec(data, x.dtype, x.shape, *cfg), x)


@pytest.mark.parametrize("cls", CODECS)
@pytest.mark.parametrize("scale", [0.2, 1.5, 20.0, 300.0])
def test_same_bytes_as_reference_laplace(cls, scale):
    rng = np.random.default_rng(int(scale * 10))
    x = levels(rng, 3000, scale)
    x[x % 5 == 0] = 0
    x[7] = 2**31 - 1
    enc, dec = REF[cls]
    for cfg in [(12, 4), (14, 8), (16, 2)]:
        data = cls(*cfg).encode(x, CTX)
        assert data == enc(x, *cfg)
        assert_same(dec(data, x.dtype, x.shape, *cfg), x)


@settings(max_examples=200, deadline=None)
@given(
    counts=st.lists(st.one_of(st.integers(0, 3), st.integers(0, 10**6)), min_size=1, max_size=300),
    precision=st.integers(10, 16),
)
def test_normalize_matches_reference(counts, precision):
    assume(sum(counts) > 0 and sum(1 for c in counts if c) <= 1 << precision)
    f = normalize_freqs(np.array(counts), precision)
    assert f.tolist() == ref.normalize(counts, precision)
    assert int(f.sum()) == 1 << precision
    assert all((fi >= 1) == (c > 0) for fi, c in zip(f.tolist(), counts))


# ------------------------------------------------------------------- rates


@pytest.mark.parametrize("n", [10**5, 10**6])
@pytest.mark.parametrize("scale", [0.16, 0.3, 1.0, 4.0, 15.0, 60.0])
def test_rate_within_2_percent_of_entropy_laplace(n, scale):
    rng = np.random.default_rng(n + int(scale * 100))
    x = levels(rng, n, scale)
    h = empirical_entropy_bits(x)
    assert 0.25 < h < 8.5
    data = roundtrip(Ans(), x)
    assert len(data) * 8 <= 1.02 * n * h, (len(data) * 8 / n, h)


@pytest.mark.parametrize("p", [0.05, 0.3, 0.7, 0.95])
def test_rate_within_2_percent_of_entropy_geometric(p):
    rng = np.random.default_rng(int(p * 100))
    n = 200_000
    x = (rng.geometric(p, n) - 1) * rng.choice([-1, 1], n)
    x = x.astype(np.int16)
    h = empirical_entropy_bits(x)
    data = roundtrip(Ans(), x)
    assert len(data) * 8 <= 1.02 * n * h, (len(data) * 8 / n, h)


def test_outliers_are_cheap():
    rng = np.random.default_rng(5)
    n = 200_000
    x = levels(rng, n, 2.0)
    idx = rng.choice(n, 20, replace=False)
    x[idx] = rng.integers(-(2**31), 2**31 - 1, 20)
    h = empirical_entropy_bits(x)
    data = roundtrip(Ans(), x)
    assert len(data) * 8 <= 1.02 * n * h


def test_sparse_far_under_one_bit():
    rng = np.random.default_rng(7)
    n = 10**6
    x = levels(rng, n, 3.0)
    x[rng.random(n) < 0.95] = 0
    h = empirical_entropy_bits(x)
    for c in (Ans(), ZeroRun()):
        bits = len(roundtrip(c, x)) * 8 / n
        assert bits < 0.5, (c, bits)
        assert bits <= 1.02 * h, (c, bits, h)


def test_zerorun_wins_on_clustered_zeros():
    """Structured pruning (whole rows zero) is where run lengths beat per-element coding."""
    rng = np.random.default_rng(8)
    x = levels(rng, 1000 * 1000, 3.0).reshape(1000, 1000)
    x[rng.random(1000) < 0.9] = 0
    x[x.any(axis=1)] *= rng.random((int(x.any(axis=1).sum()), 1000)) < 0.5
    a = len(roundtrip(Ans(), x))
    z = len(roundtrip(ZeroRun(), x))
    assert z < 0.8 * a, (z, a)


def test_empirical_entropy_bits():
    assert empirical_entropy_bits(np.zeros(0, np.int32)) == 0.0
    assert empirical_entropy_bits(np.full(10, 7, np.int8)) == 0.0
    assert empirical_entropy_bits(np.array([0, 1, 2, 3] * 5)) == pytest.approx(2.0)
    assert empirical_entropy_bits(np.array([-128, 127, 0, 1], np.int8)) == pytest.approx(2.0)
    assert empirical_entropy_bits(np.array([-(2**63), 2**63 - 1], np.int64)) == pytest.approx(1.0)
    assert empirical_entropy_bits(np.array([0, 2**64 - 1], np.uint64)) == pytest.approx(1.0)
    x = np.array([0] * 3 + [5])
    assert empirical_entropy_bits(x) == pytest.approx(-(0.75 * np.log2(0.75) + 0.25 * np.log2(0.25)))


# ------------------------------------------------------------------ damage


def small_payloads():
    rng = np.random.default_rng(11)
    x = levels(rng, 300, 2.0).reshape(20, 15)
    x[3, 4] = 123456789
    x[:5] = 0
    out = []
    for cls in CODECS:
        for cfg in [(12, 4), (10, 1), (14, 8)]:
            c = cls(*cfg)
            out.append((c, x, c.encode(x, CTX)))
    x8 = np.array([1, 0, 0, -128, 127, 0, 5, 0], np.int8)
    out.append((Ans(), x8, Ans().encode(x8, CTX)))
    out.append((ZeroRun(), x8, ZeroRun().encode(x8, CTX)))
    return out


def check_damaged(codec, spec, data):
    """Either CorruptError naming the tensor, or an array of the right spec agreeing with the reference."""
    dec = REF[type(codec)][1]
    try:
        y = codec.decode(memoryview(bytes(data)), spec, CTX)
    except CorruptError as e:
        assert "layer.weight" in str(e)
        with pytest.raises(ref.RefError):
            dec(bytes(data), spec.dtype, spec.shape, codec.precision, codec.states)
        return False
    assert ArraySpec.of(y) == spec
    assert_same(y, dec(bytes(data), spec.dtype, spec.shape, codec.precision, codec.states))
    return True


@pytest.mark.parametrize("case", range(8))
def test_every_truncation_raises(case):
    codec, x, data = small_payloads()[case]
    spec = ArraySpec.of(x)
    for k in range(len(data)):
        with pytest.raises(CorruptError, match="layer.weight"):
            codec.decode(memoryview(data[:k]), spec, CTX)
    with pytest.raises(CorruptError, match="layer.weight"):
        codec.decode(memoryview(data + b"\x00"), spec, CTX)


@pytest.mark.parametrize("case", range(8))
def test_byte_flips(case):
    codec, x, data = small_payloads()[case]
    spec = ArraySpec.of(x)
    rng = np.random.default_rng(case)
    for _ in range(400):
        d = bytearray(data)
        for _ in range(rng.integers(1, 4)):
            i = int(rng.integers(len(d)))
            d[i] ^= int(rng.integers(1, 256))
        check_damaged(codec, spec, d)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=64), which=st.integers(0, 7), shape=st.sampled_from([(), (1,), (5,), (3, 7), (64,)]))
def test_arbitrary_bytes_never_crash(data, which, shape):
    cls = CODECS[which % 2]
    dtype = INT_DTYPES[which]
    codec = cls(10 + which % 3, (1, 2, 4)[which % 3])
    check_damaged(codec, ArraySpec(dtype, shape), data)


def test_wrong_spec_is_caught():
    x = np.repeat(np.arange(-200, 200, dtype=np.int32), 3)
    data = Ans().encode(x, CTX)
    with pytest.raises(CorruptError):
        Ans().decode(memoryview(data), ArraySpec("int32", (1201,)), CTX)
    with pytest.raises(CorruptError):
        Ans().decode(memoryview(data), ArraySpec("int32", (1199,)), CTX)
    with pytest.raises(CorruptError, match="range of"):
        Ans().decode(memoryview(data), ArraySpec("uint8", (1200,)), CTX)
    big = Ans().encode(np.array([0, 1, 40000] * 10, np.int32), CTX)
    with pytest.raises(CorruptError, match="escape stream"):
        Ans().decode(memoryview(big), ArraySpec("int16", (30,)), CTX)


def stream_header(payload):
    """Offsets of the fields of an rANS stream that starts at 0 (for targeted damage)."""
    buf = bytes(payload)
    pos = 1
    a, pos = ref.read_leb128(buf, pos, len(buf))
    k_at = pos
    tlen, pos = ref.read_leb128(buf, pos + 1, len(buf))
    return a, k_at, tlen, pos


@pytest.mark.parametrize(
    "field,edit,match",
    [
        ("mode", lambda b, h: b.__setitem__(0, 7), "mode byte"),
        ("order", lambda b, h: b.__setitem__(h[1], 21), "table order"),
        ("alphabet", lambda b, h: b.__setitem__(slice(1, 2), b"\xff\x7f"), "alphabet size"),
    ],
)
def test_targeted_field_damage(field, edit, match):
    rng = np.random.default_rng(1)
    x = levels(rng, 2000, 2.0)
    codec = Ans(12, 4)
    data = bytearray(codec.encode(x, CTX))
    assert data[0] == 1
    h = stream_header(data)
    edit(data, h)
    with pytest.raises(CorruptError, match=match):
        codec.decode(memoryview(bytes(data)), ArraySpec.of(x), CTX)


def test_low_initial_state_and_final_state_checked():
    rng = np.random.default_rng(2)
    x = levels(rng, 2000, 2.0)
    codec = Ans(12, 1)
    data = bytearray(codec.encode(x, CTX))
    assert bytes(data) == encode_stream(to_z(x), 12, 1)
    a, k_at, tlen, pos = stream_header(data)
    pos += tlen
    nw, pos = ref.read_leb128(bytes(data), pos, len(data))
    ne, pos = ref.read_leb128(bytes(data), pos, len(data))
    d2 = bytearray(data)
    d2[pos:pos + 4] = (5).to_bytes(4, "little")
    with pytest.raises(CorruptError, match="initial rANS state"):
        codec.decode(memoryview(bytes(d2)), ArraySpec.of(x), CTX)
    d3 = bytearray(data)
    d3[pos] ^= 1  # a different initial state: decodes something, ends in the wrong state
    with pytest.raises(CorruptError):
        codec.decode(memoryview(bytes(d3)), ArraySpec.of(x), CTX)
    assert nw > 0


# ------------------------------------------------------------ configuration


@pytest.mark.parametrize("cls", CODECS)
def test_config_roundtrip(cls):
    for cfg in [(10, 1), (14, 8), (16, 32)]:
        c = cls(*cfg)
        j = c.to_json()
        assert j == {"name": cls.codec_id, "configuration": {"precision": cfg[0], "states": cfg[1]}}
        assert cls.from_config(j["configuration"]) == c
    assert cls() == cls(14, 8)


@pytest.mark.parametrize("cls", CODECS)
@pytest.mark.parametrize(
    "config,field",
    [
        ({}, "precision"),
        ({"precision": 14}, "states"),
        ({"precision": 9, "states": 8}, "precision"),
        ({"precision": 17, "states": 8}, "precision"),
        ({"precision": True, "states": 8}, "precision"),
        ({"precision": 14.0, "states": 8}, "precision"),
        ({"precision": 14, "states": 3}, "states"),
        ({"precision": 14, "states": "8"}, "states"),
        ({"precision": 14, "states": 8, "level": 1}, "level"),
    ],
)
def test_bad_config(cls, config, field):
    with pytest.raises(CorruptError, match=field):
        cls.from_config(config)


def test_bad_constructor_arguments():
    with pytest.raises(UsageError):
        Ans(precision=20)
    with pytest.raises(UsageError):
        ZeroRun(states=5)


def test_conformance():
    from conformance import check_codec

    check_codec(Ans(), np.array([[1, -2, 3], [0, 0, 127]], np.int8),
                bad_configs=[{"precision": 17, "states": 8}, {"precision": 14, "states": 5}, {"x": 1}])
