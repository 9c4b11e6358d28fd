"""The counter-based dither generator against spec/dither.md."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nncodec import dither
from nncodec.errors import UsageError

U64 = st.integers(0, 2**64 - 1)

# spec/dither.md section "Test vectors": (seed, stream, key, [(index, bits, u01 as hex float)])
VECTORS = [
    (0, 0, 0x4E96155E5F0A1C3F, [
        (0, 0xFD0C822E52AFCB14, "0x1.fa19045ca55f9p-1"),
        (1, 0x003DBC13FC8879F8, "0x1.ede09fe443c00p-11"),
        (2, 0xB0BA8C5CFB35AC55, "0x1.617518b9f66b5p-1"),
        (1000000, 0x87D5D1145F1561A8, "0x1.0faba228be2acp-1"),
    ]),
    (1, 2, 0x792F878E6B2D03BB, [
        (0, 0x40670AA7B22A56D9, "0x1.019c2a9ec8a94p-2"),
        (1, 0xF28ACA6CCBCB800F, "0x1.e51594d997970p-1"),
        (2, 0x6883C16B37852C6E, "0x1.a20f05acde14ap-2"),
        (1000000, 0x0E2F67D2892AB725, "0x1.c5ecfa5125560p-5"),
    ]),
    (0xFFFFFFFFFFFFFFFF, 0x0123456789ABCDEF, 0x25AA86F0D8C7F406, [
        (0, 0xA7914C2365E6F5C4, "0x1.4f229846cbcdep-1"),
        (1, 0xC909FDD4AC964155, "0x1.9213fba9592c8p-1"),
        (2, 0xF3B48C6301538071, "0x1.e76918c602a70p-1"),
        (1000000, 0xC0BE4DE57BBA4D6F, "0x1.817c9bcaf7749p-1"),
    ]),
]


def _bits_python(seed, stream, i):
    """A third implementation, straight from the spec's pseudocode."""
    m = (1 << 64) - 1

    def mix(z):
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
        return z ^ (z >> 31)

    key = mix(seed ^ mix(stream ^ 0xD1B54A32D192ED03))
    return mix((key + (i + 1) * 0x9E3779B97F4A7C15) & m)


def test_mix64_is_splitmix64():
    # the first two outputs of SplitMix64 seeded with 0 (Vigna's reference splitmix64.c)
    assert dither.mix64(dither.GAMMA) == 0xE220A8397B1DCDAF
    assert dither.mix64(2 * dither.GAMMA) == 0x6E789E6AA1B965F4


@pytest.mark.parametrize("impl", ["numba", "numpy"])
def test_spec_vectors(impl):
    for seed, stream, key, rows in VECTORS:
        assert dither.key(seed, stream) == key
        for i, b, u in rows:
            assert int(dither.bits(seed, stream, i, 1, impl=impl)[0]) == b
            assert _bits_python(seed, stream, i) == b
            got = dither.uniform(seed, stream, i, 1, impl=impl)[0]
            assert got == float.fromhex(u)
            assert got == (b >> 11) * 2.0**-53


def test_stream_for_name_vectors():
    assert dither.stream_for_name("") == 0xCBF29CE484222325
    assert dither.stream_for_name("layer1.weight") == 0x08A959477E9B90A5


@settings(max_examples=60, deadline=None)
@given(seed=U64, stream=U64, start=st.integers(0, 2**40), count=st.integers(0, 300))
def test_numba_equals_numpy(seed, stream, start, count):
    a = dither.bits(seed, stream, start, count, impl="numba")
    b = dither.bits(seed, stream, start, count, impl="numpy")
    assert a.dtype == b.dtype == np.uint64 and np.array_equal(a, b)
    u = dither.uniform(seed, stream, start, count, impl="numba")
    v = dither.uniform(seed, stream, start, count, impl="numpy")
    assert np.array_equal(u, v)
    assert ((u >= 0.0) & (u < 1.0)).all()


@settings(max_examples=20, deadline=None)
@given(seed=U64, stream=U64, start=st.integers(0, 1000), count=st.integers(0, 200))
def test_random_access(seed, stream, start, count):
    """Element i's value does not depend on where a read starts."""
    whole = dither.uniform(seed, stream, 0, start + count)
    assert np.array_equal(dither.uniform(seed, stream, start, count), whole[start:])
    for j in range(0, count, 37):
        assert dither.bits(seed, stream, start + j, 1)[0] == _bits_python(seed, stream, start + j)


def test_uniform_statistics():
    n = 1_000_000
    u = dither.uniform(7, 11, 0, n)
    # mean and variance of U[0,1): 1/2 and 1/12; 6 standard errors
    assert abs(u.mean() - 0.5) < 6 * np.sqrt(1 / 12 / n)
    assert abs(u.var() - 1 / 12) < 6 * np.sqrt(1 / 180 / n)
    counts = np.bincount((u * 64).astype(int), minlength=64)
    chi2 = ((counts - n / 64) ** 2 / (n / 64)).sum()
    assert chi2 < 130  # 63 degrees of freedom; p < 1e-6 above this
    # lag-1 correlation
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 6 / np.sqrt(n)


def test_streams_and_seeds_differ():
    a = dither.bits(5, 0, 0, 64)
    assert not np.array_equal(a, dither.bits(5, 1, 0, 64))
    assert not np.array_equal(a, dither.bits(6, 0, 0, 64))
    assert len({dither.key(s, t) for s in range(20) for t in range(20)}) == 400


@pytest.mark.parametrize("args", [(-1, 0, 0, 1), (2**64, 0, 0, 1), (0, -1, 0, 1), (0, True, 0, 1),
                                  (0, 0, -1, 1), (0, 0, 0, -1), (0, 0, 2**62, 1), (0.5, 0, 0, 1)])
def test_bad_arguments(args):
    with pytest.raises(UsageError):
        dither.uniform(*args)


def test_bad_impl():
    with pytest.raises(UsageError):
        dither.bits(0, 0, 0, 1, impl="c")
