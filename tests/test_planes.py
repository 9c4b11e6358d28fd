"""The ``planes`` codec: bit-exact round trips, modes, configuration, damaged payloads."""

from __future__ import annotations

import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from helpers import assert_same, sample
from nncodec import dtypes
from nncodec.codecs import get_codec
from nncodec.entropy import blockhuffman as hf
from nncodec.entropy.varint import read_varint, write_varint
from nncodec.codecs import planes as P
from nncodec.codecs.base import ArraySpec, Context
from nncodec.codecs.planes import Planes
from nncodec.errors import CorruptError, LimitError, UsageError
from nncodec.format.constants import DEFAULT_LIMITS
from nncodec.pipeline import Pipeline
from reference import blockhuffman as ref

CTX = Context(name="w")


def roundtrip(arr, codec=None, check_ref=True):
    arr = np.asarray(arr)
    stored, name = dtypes.as_stored(arr)
    codec = codec or Planes.for_dtype(name)
    payload = codec.encode(arr, CTX)
    assert isinstance(payload, bytes)
    spec = ArraySpec(name, tuple(arr.shape))
    out = codec.decode(memoryview(payload), spec, CTX)
    assert_same(out, stored)
    assert out.flags.writeable and out.flags.c_contiguous
    if check_ref:
        assert ref.decode_planes(payload, dtypes.itemsize(name), stored.size, codec.transform) == stored.tobytes()
    return payload


def modes(payload: bytes, w: int, n: int) -> list[int]:
    """The mode byte of every plane of a planes-layout payload."""
    assert payload[0] == P.LAYOUT_PLANES
    buf = hf.as_u8(payload)
    pos, out = 1, []
    for _ in range(w):
        m = payload[pos]
        out.append(m)
        pos += 1
        if m == P.MODE_RAW:
            pos += n
        elif m == P.MODE_CONST:
            pos += 1
        else:
            ln, pos = read_varint(buf, pos, len(payload), "t", max_len=hf.VARINT_MAX_LEN)
            pos += ln
    assert pos == len(payload)
    return out


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("dtype", dtypes.DTYPE_NAMES)
@pytest.mark.parametrize("shape", [(), (0,), (3, 0), (1,), (2,), (3,), (37, 5), (20000,)])
def test_roundtrip_every_dtype(dtype, shape):
    roundtrip(sample(dtype, shape), check_ref=np.prod(shape) <= 200)


@pytest.mark.parametrize("dtype", dtypes.DTYPE_NAMES)
@pytest.mark.parametrize("transform", P.TRANSFORMS)
def test_roundtrip_every_transform(dtype, transform):
    roundtrip(sample(dtype, (50, 3), seed=3), Planes(transform, 1))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int16", "float64", "uint32"])
def test_non_contiguous_and_big_endian_inputs(dtype):
    a = sample(dtype, (60, 40), seed=1)
    roundtrip(a[::2, 1::3])
    roundtrip(a.T)
    if dtypes.itemsize(dtype) > 1 and dtype != "bfloat16":
        roundtrip(a.astype(a.dtype.newbyteorder(">")))


def test_special_float_bits_preserved():
    bits32 = np.array([0x7FC00000, 0x7F800001, 0xFFC00123, 0x7FBFFFFF, 0x80000000, 0x00000000,
                       0x7F800000, 0xFF800000, 0x00000001, 0x807FFFFF] * 50, np.uint32)
    roundtrip(bits32.view(np.float32))
    roundtrip((bits32 >> 16).astype(np.uint16).view(ml_dtypes.bfloat16))
    roundtrip(bits32.astype(np.uint64).__lshift__(32).view(np.float64))
    roundtrip(np.array([0x7E00, 0xFC01, 0x8000, 0x7C00] * 100, np.uint16).view(np.float16))
    roundtrip(np.arange(256, dtype=np.uint8).view(ml_dtypes.float8_e4m3fn))
    roundtrip(np.arange(256, dtype=np.uint8).view(ml_dtypes.float8_e5m2))


def test_all_equal_uses_const_planes():
    a = np.full((100, 30), -0.125, np.float32)
    payload = roundtrip(a)
    assert len(payload) == 1 + 4 * 2
    assert modes(payload, 4, a.size) == [P.MODE_CONST] * 4


def test_zeros_bool_and_int():
    assert len(roundtrip(np.zeros(1000, bool))) == 3
    assert len(roundtrip(np.zeros(1000, np.int64))) == 1 + 8 * 2


def test_tiny_tensors_are_stored_with_one_byte_overhead():
    for a in (np.float32(3.5), np.array([1.0, -2.0], np.float32), np.array([7], np.uint8), np.array(True)):
        payload = roundtrip(a)
        assert payload[0] == P.LAYOUT_STORED and len(payload) == 1 + a.nbytes


def test_random_bytes_are_stored():
    a = np.random.default_rng(0).integers(0, 2**32, 50000, dtype=np.uint32)
    payload = roundtrip(a, check_ref=False)
    assert payload[0] == P.LAYOUT_STORED and len(payload) == 1 + a.nbytes


def test_empty_tensor_payload_is_empty():
    assert roundtrip(np.zeros((0, 7), np.float32)) == b""


@settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(hnp.arrays(st.sampled_from([np.float32, np.float16, np.int16, np.uint8, np.float64, np.int8]),
                  hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=12)))
def test_hypothesis_arrays(arr):
    roundtrip(arr)


# ------------------------------------------------------------------ modes and ratio


def test_gaussian_float32_compresses():
    a = (np.random.default_rng(0).standard_normal(200_000) * 0.02).astype(np.float32)
    payload = roundtrip(a, check_ref=False)
    assert len(payload) < 0.9 * a.nbytes
    assert modes(payload, 4, a.size)[0] == P.MODE_HUFFMAN


def test_bfloat16_gaussian_compresses():
    a = (np.random.default_rng(0).standard_normal(200_000) * 0.02).astype(ml_dtypes.bfloat16)
    payload = roundtrip(a, check_ref=False)
    assert len(payload) < 0.7 * a.nbytes


def test_context_mode_on_float64():
    a = np.random.default_rng(1).standard_normal(30000) * 0.02
    payload = roundtrip(a, check_ref=False)
    assert modes(payload, 8, a.size)[:2] == [P.MODE_HUFFMAN, P.MODE_CONTEXT]
    small = a[:3000]  # small enough to check against the reference decoder
    P_min = P.CONTEXT_MIN_N
    try:
        P.CONTEXT_MIN_N = 1000
        payload = roundtrip(small, check_ref=True)
        assert P.MODE_CONTEXT in modes(payload, 8, small.size)
    finally:
        P.CONTEXT_MIN_N = P_min


def test_zstd_mode_for_repetitive_planes():
    a = np.tile(np.arange(251, dtype=np.uint8), 400)
    payload = roundtrip(a, check_ref=False)
    assert modes(payload, 1, a.size) == [P.MODE_ZSTD]
    assert len(payload) < 0.05 * a.nbytes
    small = np.tile(np.arange(200, dtype=np.uint16) * 3, 20)
    payload = roundtrip(small)
    assert P.MODE_ZSTD in modes(payload, 2, small.size)


def test_encoding_is_deterministic():
    a = sample("float32", (300, 70), seed=5)
    c = Planes.for_dtype("float32")
    assert c.encode(a, CTX) == c.encode(a.copy(), CTX) == Planes.for_dtype("float32").encode(a, CTX)


# ------------------------------------------------------------------ configuration


def test_config_round_trip_and_defaults():
    assert Planes.for_dtype("float32").get_config() == {"transform": "rotl1", "level": 3}
    assert Planes.for_dtype("bfloat16").transform == "rotl1"
    assert Planes.for_dtype("int8").transform == "zigzag"
    assert Planes.for_dtype("uint16").transform == "none"
    assert Planes.for_dtype("bool").transform == "none"
    c = get_codec({"name": "planes", "configuration": {"transform": "zigzag", "level": 9}})
    assert c == Planes("zigzag", 9)
    assert get_codec(c.to_json()) == c


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"transform": "rotl1"},
        {"level": 3},
        {"transform": "rotl2", "level": 3},
        {"transform": "rotl1", "level": 23},
        {"transform": "rotl1", "level": True},
        {"transform": "rotl1", "level": 3.0},
        {"transform": "rotl1", "level": 3, "extra": 1},
    ],
)
def test_bad_config_raises(config):
    with pytest.raises(CorruptError):
        Planes.from_config(config)


def test_bad_constructor_arguments():
    with pytest.raises(UsageError):
        Planes("nope")
    with pytest.raises(UsageError):
        Planes("rotl1", 99)


def test_pipeline():
    a = sample("float16", (64, 33))
    pipe = Pipeline.from_json([Planes.for_dtype("float16").to_json()])
    payload = pipe.encode(a, CTX)
    assert_same(pipe.decode(payload, ArraySpec.of(a), Context(name="w")), a)


def test_import_compiles_nothing():
    code = "import sys, nncodec.codecs.planes; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------ damage


def _decode(payload, spec, transform="rotl1"):
    return Planes(transform, 3).decode(memoryview(payload), spec, Context(name="w"))


def _same_verdict(payload, spec, transform="rotl1"):
    """The codec raises CorruptError exactly when the reference decoder rejects; else both agree."""
    try:
        want = ref.decode_planes(payload, dtypes.itemsize(spec.dtype), spec.size, transform)
    except ref.RefError:
        want = None
    except Exception:  # zstandard errors inside the reference
        want = None
    try:
        got = _decode(payload, spec, transform)
        assert ArraySpec.of(got) == spec
        got = got.tobytes()
    except CorruptError as e:
        assert "'w'" in str(e) and "planes" in str(e)
        got = None
    assert got == want


def _damage_payloads():
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(300) * 0.02).astype(np.float32)
    x[::7] = 0.0
    yield x
    yield np.repeat(np.float32([1.5, -2.25, 0.0]), 100)  # const and huffman planes
    d = rng.standard_normal(1200) * 0.1  # float64: a context plane
    yield d


@pytest.mark.parametrize("case", range(3))
def test_truncation_at_every_length(case, monkeypatch):
    monkeypatch.setattr(P, "CONTEXT_MIN_N", 1000)
    a = list(_damage_payloads())[case]
    payload = Planes.for_dtype(dtypes.from_numpy(a.dtype)).encode(a, CTX)
    spec = ArraySpec.of(a)
    for cut in range(len(payload)):
        with pytest.raises(CorruptError):
            _decode(payload[:cut], spec)
    _same_verdict(payload + b"\x00", spec)


@pytest.mark.parametrize("case", range(3))
def test_random_byte_flips(case, monkeypatch):
    monkeypatch.setattr(P, "CONTEXT_MIN_N", 1000)
    a = list(_damage_payloads())[case]
    payload = Planes.for_dtype(dtypes.from_numpy(a.dtype)).encode(a, CTX)
    spec = ArraySpec.of(a)
    rng = np.random.default_rng(case)
    for _ in range(150):
        bad = bytearray(payload)
        for _ in range(rng.integers(1, 3)):
            i = rng.integers(len(bad))
            bad[i] = rng.integers(256) if rng.random() < 0.5 else bad[i] ^ (1 << rng.integers(8))
        _same_verdict(bytes(bad), spec)


def test_payload_errors():
    spec = ArraySpec("float32", (10,))
    for payload, match in [
        (b"", "layout byte is missing"),
        (b"\x02" + bytes(40), "layout byte"),
        (b"\x00" + bytes(39), "stored layout"),
        (b"\x01\x01\x00\x01\x00\x01\x00\x01", "plane 3"),
        (b"\x01\x01\x00\x01\x00\x01\x00\x01\x00\x00", "after the last plane"),
        (b"\x01\x09", "unknown mode"),
        (b"\x01\x03\x01\x00", "context"),
        (b"\x01\x02\x05\x00", "exceeds"),
        (b"\x01\x04\x03abc", "zstd"),
    ]:
        with pytest.raises(CorruptError, match=match):
            _decode(payload, spec)
    with pytest.raises(CorruptError, match="empty tensor"):
        _decode(b"\x00", ArraySpec("float32", (0,)))


def test_bool_bytes_other_than_0_1_raise():
    with pytest.raises(CorruptError, match="bool"):
        _decode(b"\x00\x00\x01\x02", ArraySpec("bool", (3,)), "none")
    with pytest.raises(CorruptError, match="bool"):
        _decode(b"\x01\x01\x05", ArraySpec("bool", (3,)), "none")


def test_element_limit():
    ctx = Context(name="w", limits=DEFAULT_LIMITS.replace(max_elements=10))
    with pytest.raises(LimitError):
        Planes.for_dtype("uint8").decode(b"\x01\x01\x00", ArraySpec("uint8", (11,)), ctx)


def test_conformance():
    from conformance import check_codec

    check_codec(Planes("rotl1", 3), np.linspace(-1, 1, 5000, dtype=np.float32),
                bad_configs=[{"transform": "rot", "level": 3}, {"transform": "none", "level": 99}])
