"""The ``3lc`` stage: byte layout against the hand-checked vectors of spec/codecs/3lc.md, round trips, bad input."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from nncodec.codecs import ArraySpec, Context, register_codec
from nncodec.codecs.threelc import ThreeLC, pack, ternarize, unpack
from nncodec.errors import CorruptError, UnsupportedError, UsageError
from nncodec.pipeline import Pipeline

register_codec(ThreeLC)
CTX = Context(name="t")


def _enc(x, s=1.0) -> bytes:
    return ThreeLC(s).encode(np.asarray(x), CTX)


def _dec(data, dtype, shape, s=1.0):
    return ThreeLC(s).decode(memoryview(bytes(data)), ArraySpec(dtype, tuple(shape)), CTX)


# ------------------------------------------------------------ spec vectors


@pytest.mark.parametrize("levels, body", [
    ([1, -1, 0, 0, 1], [176]),
    ([1], [202]),
    ([-1] * 5, [0]),
    ([1] * 5, [242]),
    ([1, -1, 0, 0, 1] + [0] * 10 + [-1] * 5 + [1], [176, 243, 0, 202]),
])
def test_group_bytes(levels, body):
    assert list(pack(np.array(levels))) == body
    assert unpack(bytes(body), len(levels)).tolist() == levels


@pytest.mark.parametrize("r, body", [
    (1, [121]), (2, [243]), (13, [254]), (14, [255]), (15, [255, 121]), (16, [255, 243]),
    (28, [255, 255]), (30, [255, 255, 243]),
])
def test_zero_runs(r, body):
    assert list(pack(np.zeros(5 * r, np.int8))) == body
    assert not unpack(bytes(body), 5 * r).any()


def test_digit_order_is_most_significant_first():
    # element j of a group has weight 3**(4-j)
    for j in range(5):
        q = np.zeros(5, np.int8)
        q[j] = 1
        assert pack(q)[0] == 121 + 3 ** (4 - j)


def test_payload_vectors():
    x = np.array([0.5, -2.0, 0.9, 1.1, 0.0], np.float32)
    assert _enc(x).hex() == "0000004061"
    assert _dec(bytes.fromhex("0000004061"), "float32", (5,)).tolist() == [0, -2, 0, 2, 0]
    assert _enc(x, 1.5).hex() == "000040405e"
    assert ThreeLC(1.5).to_json() == {"name": "3lc", "configuration": {"sparsity": 1.5}}
    assert ThreeLC().to_json() == {"name": "3lc"}


# ------------------------------------------------------------ round trips


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("n", [0, 1, 4, 5, 6, 69, 70, 71, 1000])
def test_round_trip_matches_ternarize(dtype, n):
    from nncodec import dtypes

    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * rng.choice([0.01, 1.0], n)).astype(dtypes.to_numpy(dtype))
    for s in (1.0, 2.0):
        data = _enc(x, s)
        m, q = ternarize(x.astype(np.float64), s)
        assert struct.unpack("<f", data[:4])[0] == np.float32(m)
        y = _dec(data, dtype, (n,))
        assert y.dtype == x.dtype and y.shape == x.shape
        want = (q.astype(np.float64) * m).astype(np.float32).astype(dtypes.to_numpy(dtype))
        np.testing.assert_array_equal(y.astype(np.float64), want.astype(np.float64))
        if n and s == 1.0:  # |x - x^| <= M/2, and the largest element is exact
            assert np.abs(x.astype(np.float64) - y.astype(np.float64)).max() <= m / 2 * (1 + 2**-7) + 1e-30


def test_shapes_and_pipeline():
    x = np.random.default_rng(1).standard_normal((3, 7, 2)).astype(np.float32)
    p = Pipeline.from_json([{"name": "3lc", "configuration": {"sparsity": 2}}])
    data = p.encode(x, CTX)
    y = p.decode(memoryview(data), ArraySpec("float32", (3, 7, 2)), CTX)
    assert y.shape == x.shape and set(np.unique(np.abs(y))) <= {0.0, float(np.float32(2 * np.abs(x).max()))}


def test_all_zero_is_tiny():
    data = _enc(np.zeros(70_000, np.float32))
    assert data == b"\0\0\0\0" + b"\xff" * 1000
    assert not _dec(data, "float32", (70_000,)).any()


def test_sparsity_zeroes_more():
    x = np.random.default_rng(2).standard_normal(10_000)
    nz = [np.count_nonzero(ternarize(x, s)[1]) for s in (1.0, 1.3, 1.6, 2.5)]
    assert x.size > nz[0] > nz[1] > nz[2] >= 1 and nz[3] == 0  # s = 2.5: M/2 > max|x|


# ------------------------------------------------------------ bad input


@pytest.mark.parametrize("data, n, match", [
    (b"\0\0\0", 5, "no room for M"),
    (b"\0\0\xc0\x7f\x79", 5, "finite"),  # NaN
    (b"\0\0\0\x80\x79", 5, "sign bit"),  # -0.0
    (b"\0\0\x80\xbf\x79", 5, "sign bit"),  # -1.0
    (b"\0\0\x80\x3f", 5, "truncated"),  # no body
    (b"\0\0\x80\x3f\x79\x79", 5, "groups"),  # one byte too many
    (b"\0\0\x80\x3f\xf3", 5, "groups"),  # a run of 2 for 1 group
    (b"\0\0\x80\x3f\xca\x00", 6, "padding"),  # group 2 = 0: padding digits 0
    (b"\0\0\x80\x3f\x00", 1, "padding"),
])
def test_corrupt_payloads(data, n, match):
    with pytest.raises(CorruptError, match=match):
        _dec(data, "float32", (n,))


def test_overflow_and_dtypes():
    with pytest.raises(CorruptError, match="not finite in float16"):
        _dec(struct.pack("<f", 1e6) + pack(np.array([1])), "float16", (1,))
    with pytest.raises(CorruptError, match="not int32"):
        _dec(b"\0\0\0\0", "int32", (0,))
    with pytest.raises(UnsupportedError):
        _enc(np.arange(5))
    with pytest.raises(UsageError, match="finite"):
        _enc(np.array([1.0, np.inf]))
    with pytest.raises(UsageError, match="float32"):
        _enc(np.array([1e300]))
    with pytest.raises(UsageError, match="not finite in float16"):
        _enc(np.array([60000.0], np.float16), 2.0)


@pytest.mark.parametrize("cfg", [{"sparsity": 0.5}, {"sparsity": "2"}, {"sparsity": True}, {"sparsity": 1e7},
                                 {"s": 2}, {"sparsity": float("nan")}])
def test_bad_config(cfg):
    with pytest.raises(CorruptError):
        ThreeLC.from_config(cfg)


def test_conformance():
    from conformance import check_codec

    check_codec(ThreeLC(1.5), np.random.default_rng(0).standard_normal(40).astype(np.float32), exact=False,
                bad_configs=[{"sparsity": 0.5}, {"x": 1}])
