"""The ``huffman`` level coder: round trips, escapes, rate near entropy, damage detection."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import nncodec
from nncodec.codecs import ArraySpec, Context
from nncodec.codecs.huffman import HuffmanLevels

INTS = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
C = Context(name="t")


def rt(a):
    h = HuffmanLevels()
    data = h.encode(a, C)
    out = h.decode(memoryview(data), ArraySpec(a.dtype.name, a.shape), C)
    assert out.dtype == a.dtype and out.shape == a.shape
    np.testing.assert_array_equal(out, a)
    return data


@settings(max_examples=150)
@given(st.sampled_from(INTS).flatmap(lambda d: hnp.arrays(d, hnp.array_shapes(min_dims=0, max_dims=3, max_side=40))))
def test_roundtrip_arbitrary(a):
    rt(a)


@pytest.mark.parametrize("dt", INTS)
def test_extremes_and_escapes(dt):
    info = np.iinfo(dt)
    a = np.array([0, 1, info.max, info.min, 254 % (info.max + 1), 255 % (info.max + 1), 7] * 5, dt)
    rt(a)
    rt(np.array(info.max, dt))
    rt(np.zeros((0, 3), dt))


def test_rate_close_to_entropy():
    rng = np.random.default_rng(0)
    a = rng.laplace(0, 4, 200_000).round().astype(np.int32)
    _, counts = np.unique(a, return_counts=True)
    p = counts / a.size
    h = -(p * np.log2(p)).sum()
    bits = 8 * len(rt(a)) / a.size
    assert h <= bits <= h + 0.05, (h, bits)  # Huffman costs at most a little over the entropy here


def test_corruption_is_detected():
    rng = np.random.default_rng(1)
    a = rng.laplace(0, 50, 300).round().astype(np.int16)
    data = rt(a)
    spec = ArraySpec("int16", a.shape)
    h = HuffmanLevels()
    for n in range(len(data)):
        with pytest.raises(nncodec.CorruptError):
            h.decode(memoryview(data[:n]), spec, C)
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x41
        try:
            out = h.decode(memoryview(bytes(bad)), spec, C)
        except nncodec.CorruptError:
            continue
        assert out.shape == a.shape and out.dtype == a.dtype
    # a z-value that does not fit the dtype
    big = HuffmanLevels().encode(np.array([70000], np.int32), C)
    with pytest.raises(nncodec.CorruptError, match="out of range"):
        h.decode(memoryview(big), ArraySpec("int16", (1,)), C)
    with pytest.raises(nncodec.CorruptError, match="integer"):
        h.decode(memoryview(big), ArraySpec("float32", (1,)), C)


def test_fast_preset_uses_it(tmp_path):
    from nncodec.io import Checkpoint, write_checkpoint

    p = tmp_path / "m.npz"
    write_checkpoint(p, Checkpoint(tensors={"w": np.random.default_rng(2).standard_normal((64, 64)).astype(np.float32)}), "npz")
    infos = nncodec.encode_file(p, tmp_path / "m.nnc", preset="fast")
    assert infos[0].pipeline.describe() == "scalar|huffman"


def test_conformance():
    from conformance import check_codec

    check_codec(HuffmanLevels(), np.array([0, 1, -1, 300, 2, 0], np.int32), bad_configs=[{"x": 1}])
