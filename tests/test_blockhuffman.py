"""Canonical Huffman coder: kernels against the reference, round trips, damaged input."""

from __future__ import annotations

import heapq

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nncodec.entropy import blockhuffman as hf
from nncodec.entropy.varint import read_varint, write_varint
from nncodec.errors import CorruptError
from reference import blockhuffman as ref

SETTINGS = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])


def _kraft(lens) -> int:
    return sum(1 << (hf.MAX_LEN - int(x)) for x in lens if x)


def _huffman_cost(counts) -> tuple[int, int]:
    """Total bits and depth of an unrestricted Huffman code (heap construction)."""
    h = [(int(c), 0) for c in counts if c]
    if len(h) < 2:
        return 0, 0
    heapq.heapify(h)
    cost = 0
    while len(h) > 1:
        (a, da), (b, db) = heapq.heappop(h), heapq.heappop(h)
        cost += a + b
        heapq.heappush(h, (a + b, max(da, db) + 1))
    return cost, h[0][1]


def _sample(kind: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        return rng.integers(0, 256, n).astype(np.uint8)
    if kind == "skewed":
        return np.minimum(rng.geometric(0.3, n), 255).astype(np.uint8)
    if kind == "two":
        return rng.choice(np.array([7, 200], np.uint8), n)
    if kind == "exponent":
        x = (rng.standard_normal(n) * 0.02).astype(np.float32).view(np.uint32)
        return ((x << 1 | x >> 31) >> 24).astype(np.uint8)
    if kind == "zipf":  # deep codes: forces the length limit
        return (np.minimum(rng.zipf(1.3, n), 256) - 1).astype(np.uint8)
    raise ValueError(kind)


KINDS = ["uniform", "skewed", "two", "exponent", "zipf"]


# ----------------------------------------------------------------- code lengths


@SETTINGS
@given(st.lists(st.integers(0, 10**9), min_size=256, max_size=256))
def test_code_lengths_match_reference_and_limit(counts):
    counts = np.array(counts, np.int64)
    lens = hf.code_lengths(counts)
    np.testing.assert_array_equal(lens, ref.package_merge(counts))
    assert lens.max(initial=0) <= hf.MAX_LEN
    assert np.array_equal(lens > 0, counts > 0)
    used = np.count_nonzero(counts)
    if used >= 2:
        assert _kraft(lens) == 1 << hf.MAX_LEN


def test_code_lengths_deep_distribution_is_limited_and_optimal():
    counts = np.zeros(256, np.int64)
    counts[:40] = [2 ** min(i, 40) for i in range(40)]  # Fibonacci-like skew: unlimited depth 39
    lens = hf.code_lengths(counts)
    assert lens.max() == hf.MAX_LEN
    assert _kraft(lens) == 1 << hf.MAX_LEN
    np.testing.assert_array_equal(lens, ref.package_merge(counts))


@pytest.mark.parametrize("seed", range(8))
def test_code_lengths_equal_huffman_cost_when_not_limited(seed):
    rng = np.random.default_rng(seed)
    counts = rng.integers(1 + 100 * (seed % 2), 1000, 256)
    counts[rng.random(256) < 0.3] = 0
    lens = hf.code_lengths(counts).astype(np.int64)
    cost, depth = _huffman_cost(counts)
    if depth <= hf.MAX_LEN:
        assert int((lens * counts).sum()) == cost
    else:
        assert int((lens * counts).sum()) >= cost


def test_single_and_no_symbol():
    c = np.zeros(256, np.int64)
    assert not hf.code_lengths(c).any()
    c[42] = 5
    lens = hf.code_lengths(c)
    assert lens[42] == 1 and np.count_nonzero(lens) == 1


def test_canonical_codes_match_reference():
    rng = np.random.default_rng(1)
    for _ in range(20):
        counts = rng.integers(0, 50, 256) * (rng.random(256) < 0.5)
        if np.count_nonzero(counts) < 2:
            continue
        lens = hf.code_lengths(counts)
        codes = hf.canonical_codes(lens)
        want = ref.canonical_codes(lens)
        for s, (code, ln) in want.items():
            assert int(codes[s]) == code and int(lens[s]) == ln


# --------------------------------------------------------------- tables, varints


def test_table_bytes_round_trip_and_reference():
    rng = np.random.default_rng(2)
    for _ in range(30):
        counts = rng.integers(0, 100, 256) * (rng.random(256) < rng.random())
        if not counts.any():
            continue
        lens = hf.code_lengths(counts)
        tb = hf.table_bytes(lens)
        assert tb == ref.table_bytes(lens)
        assert len(tb) == hf.table_size(lens)
        got, pos = hf.parse_table(hf.as_u8(tb + b"xyz"), 0, len(tb) + 3, "t")
        assert pos == len(tb)
        np.testing.assert_array_equal(got, lens)


@pytest.mark.parametrize(
    "table, why",
    [
        (b"\x05\x04", "first symbol"),
        (b"\x00", "ends inside"),
        (b"\x00\x02\x11", "ends inside"),
        (b"\x00\x01\x1d", "length 13"),
        (b"\x00\x02\x11\x10", "padding nibble"),
        (b"\x00\x02\x11\x00", "unused first or last"),
        (b"\x00\x02\x10\x01", "unused first or last"),
        (b"\x00\x01\x21", "Kraft"),  # 2 + 1: incomplete
        (b"\x00\x02\x11\x01", "Kraft"),  # 1 + 1 + 1: oversubscribed
        (b"\x07\x07\x02", "lone symbol"),
        (b"\x00\x01\xc0", "unused first or last"),
    ],
)
def test_bad_tables_raise(table, why):
    with pytest.raises(CorruptError, match=why.split()[0]):
        hf.parse_table(hf.as_u8(table), 0, len(table), "t")


@given(st.integers(0, 2**63 - 1))
def test_varint_round_trip(v):
    b = write_varint(v)
    assert b == ref.varint(v)
    assert read_varint(hf.as_u8(b), 0, len(b), "t", max_len=hf.VARINT_MAX_LEN) == (v, len(b))


@pytest.mark.parametrize("data", [b"\x80\x00", b"\x81\x80\x00", b"\x80", b"\xff" * 9 + b"\x01", b""])
def test_varint_rejects_non_minimal_truncated_or_long(data):
    with pytest.raises(CorruptError):
        read_varint(hf.as_u8(data), 0, len(data), "t", max_len=hf.VARINT_MAX_LEN)


# ------------------------------------------------------------------ kernels


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [1, 2, 3, 5, 17, 64, 1000, 4099])
def test_block_matches_reference_bytes(kind, n):
    data = _sample(kind, n, n)
    block = hf.encode_block(data)
    assert block == ref.encode_block(data)
    plan = hf.plan_block(data)
    assert len(block) == plan.size
    assert ref.decode_block(block, n) == data.tobytes()
    np.testing.assert_array_equal(hf.decode_block(block, n, "t"), data)


@pytest.mark.parametrize("kind", KINDS)
def test_single_and_multi_symbol_decoders_agree(kind, monkeypatch):
    data = _sample(kind, 20011, 3)
    block = hf.encode_block(data)
    for limit in (0.0, 100.0):  # always multi, never multi
        monkeypatch.setattr(hf, "MULTI_MIN", limit)
        np.testing.assert_array_equal(hf.decode_block(block, len(data), "t"), data)


@pytest.mark.parametrize("kind", KINDS)
def test_multi_table_matches_reference(kind):
    data = _sample(kind, 5000, 1)
    single = hf.decode_table(hf.code_lengths(np.bincount(data, minlength=256)))
    got, mean = hf.multi_table(single)
    want, want_mean = ref.multi_table(single)
    np.testing.assert_array_equal(got, want)
    assert mean == pytest.approx(want_mean)
    # every window decodes at least one symbol; symbols and lengths agree with the single table
    assert ((got >> np.uint64(40)) >= 1).all()
    np.testing.assert_array_equal(got & np.uint64(255), single >> 4)


def test_histograms_match_reference():
    rng = np.random.default_rng(4)
    for n in (0, 1, 3, 10, 1001):
        data = rng.integers(0, 256, n).astype(np.uint8)
        ctx = rng.integers(0, 4, n).astype(np.uint8)
        b = hf.segment_bounds(n)
        assert list(b) == ref.segment_bounds(n)
        np.testing.assert_array_equal(hf.kernels().histogram4(data, b), ref.histogram4(data, b))
        np.testing.assert_array_equal(hf.kernels().context_histogram4(data, ctx, b),
                                      ref.context_histogram4(data, ctx, b))


def test_one_symbol_block_has_empty_streams():
    data = np.full(1000, 9, np.uint8)
    block = hf.encode_block(data)
    assert block == bytes((9, 9, 1, 0, 0, 0))
    np.testing.assert_array_equal(hf.decode_block(block, 1000, "t"), data)
    assert ref.decode_block(block, 1000) == data.tobytes()
    with pytest.raises(CorruptError, match="empty bitstreams"):
        hf.decode_block(block + b"\x00", 1000, "t")


@SETTINGS
@given(st.lists(st.integers(0, 255), min_size=1, max_size=3000), st.integers(0, 255))
def test_symbol_streams_round_trip(symbols, bias):
    data = np.array(symbols, np.uint8)
    data[::3] = bias  # some skew
    block = hf.encode_block(data)
    np.testing.assert_array_equal(hf.decode_block(block, len(data), "t"), data)
    assert block == ref.encode_block(data)


# ------------------------------------------------------------------ context


def _ctx_data(n, seed):
    rng = np.random.default_rng(seed)
    ctx = rng.integers(3, 9, n).astype(np.uint8)
    data = (ctx.astype(np.int64) * 20 + rng.geometric(0.4, n)).clip(0, 255).astype(np.uint8)
    return data, ctx


@pytest.mark.parametrize("n", [1, 4, 7, 333, 20000])
def test_context_block_matches_reference(n):
    data, ctx = _ctx_data(n, n)
    plan = hf.plan_context(data, ctx)
    block = hf.encode_context_block(data, ctx, plan)
    assert len(block) == plan.size
    cmap = list(plan.cmap)
    assert block == ref.encode_context_block(data, ctx, plan.first, plan.last, cmap, list(plan.lens))
    assert ref.decode_context_block(block, ctx) == data.tobytes()
    np.testing.assert_array_equal(hf.decode_context_block(block, ctx, "t"), data)


def test_context_beats_plain_when_context_predicts():
    data, ctx = _ctx_data(50000, 1)
    assert hf.plan_context(data, ctx).size < 0.8 * hf.plan_block(data).size


def test_context_block_with_one_symbol_tables():
    ctx = np.repeat(np.arange(4, dtype=np.uint8), 300)
    data = (ctx * 3).astype(np.uint8)
    plan = hf.plan_context(data, ctx)
    block = hf.encode_context_block(data, ctx, plan)
    np.testing.assert_array_equal(hf.decode_context_block(block, ctx, "t"), data)
    assert ref.decode_context_block(block, ctx) == data.tobytes()


def test_context_values_outside_range_raise():
    data, ctx = _ctx_data(500, 2)
    block = hf.encode_context_block(data, ctx)
    bad = ctx.copy()
    bad[17] = 200
    with pytest.raises(CorruptError, match="outside the declared range"):
        hf.decode_context_block(block, bad, "t")


def test_context_map_must_use_every_table():
    data, ctx = _ctx_data(20000, 5)
    block = bytearray(hf.encode_context_block(data, ctx))
    ntab = block[2] + 1
    assert ntab >= 2
    block[3:3 + block[1] - block[0] + 1] = bytes(block[1] - block[0] + 1)  # all contexts -> table 0
    with pytest.raises(CorruptError, match="unused"):
        hf.decode_context_block(bytes(block), ctx, "t")


# ------------------------------------------------------------------ damage


def _same_verdict(fn_fast, fn_ref):
    """Both decoders reject, or both return the same bytes."""
    try:
        want = fn_ref()
    except ref.RefError:
        want = None
    try:
        got = fn_fast()
    except CorruptError:
        got = None
    assert (None if got is None else bytes(got)) == want


@pytest.mark.parametrize("kind", ["skewed", "exponent", "zipf", "uniform"])
def test_damaged_blocks_raise_or_agree_with_reference(kind):
    rng = np.random.default_rng(7)
    data = _sample(kind, 203, 9)
    block = hf.encode_block(data)
    n = len(data)
    for cut in range(len(block)):
        _same_verdict(lambda: hf.decode_block(block[:cut], n, "t"), lambda: ref.decode_block(block[:cut], n))
    for _ in range(300):
        bad = bytearray(block)
        for _ in range(rng.integers(1, 4)):
            bad[rng.integers(len(bad))] ^= 1 << rng.integers(8)
        bad = bytes(bad)
        _same_verdict(lambda: hf.decode_block(bad, n, "t"), lambda: ref.decode_block(bad, n))
    for extra in (b"\x00", b"\x80\x00"):
        _same_verdict(lambda: hf.decode_block(block + extra, n, "t"), lambda: ref.decode_block(block + extra, n))


def test_damaged_context_blocks_raise_or_agree_with_reference():
    rng = np.random.default_rng(8)
    data, ctx = _ctx_data(301, 3)
    block = hf.encode_context_block(data, ctx)
    for cut in range(len(block)):
        _same_verdict(lambda: hf.decode_context_block(block[:cut], ctx, "t"),
                      lambda: ref.decode_context_block(block[:cut], ctx))
    for _ in range(300):
        bad = bytearray(block)
        bad[rng.integers(len(bad))] ^= 1 << rng.integers(8)
        bad = bytes(bad)
        _same_verdict(lambda: hf.decode_context_block(bad, ctx, "t"), lambda: ref.decode_context_block(bad, ctx))


def test_random_garbage_never_crashes():
    rng = np.random.default_rng(11)
    for i in range(500):
        junk = rng.integers(0, 256, rng.integers(0, 64)).astype(np.uint8).tobytes()
        n = int(rng.integers(1, 100))
        _same_verdict(lambda: hf.decode_block(junk, n, "t"), lambda: ref.decode_block(junk, n))


def test_stream_running_past_its_end_is_reported():
    data = _sample("skewed", 4000, 1)
    block = bytearray(hf.encode_block(data))
    lens, pos = hf.parse_table(hf.as_u8(bytes(block)), 0, len(block), "t")
    # shrink stream 0 by one byte, keeping the total: its last symbols then run into stream 1
    s0, p1 = read_varint(hf.as_u8(bytes(block)), pos, len(block), "t", max_len=hf.VARINT_MAX_LEN)
    assert s0 > 200 and len(write_varint(s0 - 1)) == p1 - pos
    block[pos:p1] = write_varint(s0 - 1)
    with pytest.raises(CorruptError, match="bitstream"):
        hf.decode_block(bytes(block), len(data), "t")
