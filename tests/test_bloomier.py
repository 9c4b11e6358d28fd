"""The bloomier stage (spec/codecs/bloomier.md): filter construction, lookup, payload checks."""

import json
import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nncodec import dtypes
from nncodec.codecs import ArraySpec, Context, get_codec, register_codec
from nncodec.codecs.bloomier import (
    HEADER,
    Bloomier,
    PeelingError,
    build_table,
    cluster,
    expected_false_positive_rate,
    inspect,
    lookup,
    measured_false_positive_rate,
    pack_table,
    segment_length,
    table_cells,
    unpack_table,
)
from nncodec.codecs.zstd import Zstd
from nncodec.errors import CorruptError, TruncatedError, UnsupportedError, UsageError
from nncodec.kernels import bloomier as kb
from nncodec.pipeline import Pipeline
from reference import bloomier as ref

CTX = Context(name="fc1.weight")


@pytest.fixture(autouse=True, scope="module")
def _registered():
    register_codec(Bloomier)


def _key(seed):
    """The seed key as np.uint64 (kernels take every 64-bit scalar as np.uint64)."""
    return np.uint64(kb.seed_key(np.uint64(seed)))


def sparse(n, density, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n) * 0.05
    x[rng.random(n) >= density] = 0.0
    return x.astype(dtype)


def expected_values(x, r, name="float32"):
    """What every stored position must decode to: its centroid, rounded to the dtype."""
    flat = np.asarray(x).astype(np.float64).reshape(-1)
    keys = np.flatnonzero(flat != 0)
    c, lab = cluster(flat[keys], r, name)
    return keys, c[lab.astype(np.int64) - 1]


def roundtrip(codec, x):
    spec = ArraySpec.of(x)
    data = codec.encode(x, CTX)
    out = Bloomier.from_config(codec.get_config()).decode(memoryview(data), spec, CTX)
    assert ArraySpec.of(out) == spec
    return data, out


# ------------------------------------------------------------------ hashing: pinned values


def test_hash_test_vectors():
    # spec/codecs/bloomier.md "Test vectors": seed 0, n = 100 keys (s = 52), t = 8
    s = segment_length(100)
    assert s == 52 and table_cells(100) == 156
    k = ref.seed_key(0)
    assert k == ref.mix64(0x243F6A8885A308D3)
    assert ref.mix64(0) == 0
    assert ref.mix64(1) == 0x5692161D100B05E5  # SplitMix64 finalizer of 1
    assert k == 0xE9E0033E3BADAF36
    assert [ref.g(k, 0, i) for i in range(4)] == [0x74D28E025CEAAC29, 0x890710CED7FBC4AF,
                                                  0xFC4729067514681E, 0x3B6F9CEFDB22F673]
    got = [ref.hashes(k, key, s, 8) for key in (0, 1, 12345)]
    assert got == [([23, 79, 155], 115), ([23, 62, 144], 33), ([51, 88, 127], 65)]
    cells = np.empty((3, 3), np.int64)
    masks = np.empty(3, np.uint32)
    kb.hash_keys(np.array([0, 1, 12345], np.uint64), _key(0), s, np.uint64(255), cells, masks)
    assert cells.tolist() == [g[0] for g in got] and masks.tolist() == [g[1] for g in got]


def test_kernel_hashes_equal_reference():
    rng = np.random.default_rng(1)
    keys = np.unique(rng.integers(0, 2**62, 500, dtype=np.int64)).astype(np.uint64)
    for seed in (0, 1, 2**64 - 1, 0x1234567890ABCDEF):
        for t in (2, 9, 17, 32):
            s = segment_length(keys.size)
            cells = np.empty((keys.size, 3), np.int64)
            masks = np.empty(keys.size, np.uint32)
            k = _key(seed)
            assert int(k) == ref.seed_key(seed)
            kb.hash_keys(keys, k, s, np.uint64((1 << t) - 1), cells, masks)
            for i in range(0, keys.size, 7):
                h, mk = ref.hashes(ref.seed_key(seed), int(keys[i]), s, t)
                assert cells[i].tolist() == h and int(masks[i]) == mk
            assert (cells[:, 0] < s).all() and ((cells[:, 1] >= s) & (cells[:, 1] < 2 * s)).all()
            assert ((cells[:, 2] >= 2 * s) & (cells[:, 2] < 3 * s)).all()


def test_mulhi_matches_python():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 2**63, 200, dtype=np.int64).astype(np.uint64) * np.uint64(2) + np.uint64(1)
    for s in (1, 3, 52, 2**32 - 1, 2**32 + 5, 2**42):
        for v in list(a[:50]) + [np.uint64(0), np.uint64(2**64 - 1)]:
            assert int(kb._mulhi(np.uint64(v), np.uint64(s))) == (int(v) * s) >> 64


# ------------------------------------------------------------------ construction: kernels == reference


@pytest.mark.parametrize("n,t,seed", [(0, 8, 0), (1, 2, 0), (5, 4, 3), (300, 8, 0), (1000, 13, 7),
                                      (257, 32, 2**64 - 1)])
def test_kernel_tables_equal_reference(n, t, seed):
    rng = np.random.default_rng(n + t)
    keys = np.sort(rng.choice(50 * n + 10, n, replace=False)).astype(np.uint64)
    vals = rng.integers(0, 1 << t, n, dtype=np.int64).astype(np.uint32)
    table, sd, att = build_table(keys, vals, t, seed)
    rt, rsd, ratt = ref.build([int(v) for v in keys], [int(v) for v in vals], t, seed, 64)
    assert table.tolist() == rt and sd == rsd and att == ratt
    packed = pack_table(table, t)
    assert packed == ref.pack(rt, t)
    assert unpack_table(packed, t, table.size).tolist() == ref.unpack(packed, t, table.size) == rt
    # every key looks up its value; the kernel lookup equals the reference lookup everywhere
    raw = np.empty(n, np.uint32)
    kb.lookup_keys(table, _key(sd), table.size // 3, np.uint64((1 << t) - 1), keys, raw)
    assert raw.tolist() == vals.tolist()
    size = int(keys.max()) + 20 if n else 50
    cent = [0.5 * (j + 1) for j in range(min(n, (1 << min(t - 1, 4)) - 1))]
    got = lookup(table, t, sd, np.array(cent, np.float64), size, np.float64)
    assert got.tolist() == ref.lookup(rt, t, sd, cent, size)


def test_pack_bit_order():
    # cell i occupies stream bits i*t ... i*t + t - 1, least significant bit first
    assert pack_table(np.array([1, 2, 3], np.uint32), 3) == bytes([0b11010001, 0b0])
    assert pack_table(np.array([0x1FF], np.uint32), 9) == bytes([0xFF, 0x01])
    assert pack_table(np.array([0xDEADBEEF, 1], np.uint32), 32) == bytes.fromhex("efbeadde01000000")
    with pytest.raises(CorruptError):
        unpack_table(bytes([0b11010001, 0b10]), 3, 3)  # padding bit set
    with pytest.raises(CorruptError):
        unpack_table(bytes([1]), 3, 3)  # wrong length


# ------------------------------------------------------------------ construction: adversarial keys


def _colliding_pairs(n, seeds, t=8, pool=1 << 16):
    """Pairs of distinct keys with identical (h0, h1, h2) under each seed, for a table sized for n keys."""
    s = segment_length(n)
    cand = np.arange(pool, dtype=np.uint64)
    cells = np.empty((pool, 3), np.int64)
    masks = np.empty(pool, np.uint32)
    used = set()
    pairs = []
    for seed in seeds:
        kb.hash_keys(cand, _key(seed), s, np.uint64((1 << t) - 1), cells, masks)
        code = (cells[:, 0] * s + (cells[:, 1] - s)) * s + (cells[:, 2] - 2 * s)
        order = np.argsort(code, kind="stable")
        same = np.flatnonzero(code[order][1:] == code[order][:-1])
        for j in same:
            a, b = int(order[j]), int(order[j + 1])
            if a not in used and b not in used:
                used.update((a, b))
                pairs.append((a, b))
                break
        else:
            raise AssertionError("no collision found; enlarge the pool")
    return pairs


def test_adversarial_keys_reseed_then_succeed():
    # 40 keys, two of which share all three cells under seed 0: seed 0 must fail, a later one succeed
    n = 40
    (a, b), = _colliding_pairs(n, [0])
    rng = np.random.default_rng(3)
    others = [int(v) for v in rng.choice(np.arange(1 << 17, 1 << 18), n - 2, replace=False)]
    keys = np.array(sorted([a, b] + others), np.uint64)
    vals = (np.arange(n) % 15 + 1).astype(np.uint32)
    table, sd, att = build_table(keys, vals, 8, seed=0)
    assert sd >= 1 and att == sd + 1 and att <= 64
    raw = np.empty(n, np.uint32)
    kb.lookup_keys(table, _key(sd), table.size // 3, np.uint64(255), keys, raw)
    assert (raw == vals).all()
    with pytest.raises(PeelingError, match="1 seeds"):
        build_table(keys, vals, 8, seed=0, max_attempts=1)


def test_adversarial_keys_every_seed_fails_bounded():
    # 64 pairs, pair j colliding under seed j: every one of the 64 allowed seeds fails
    attempts = 64
    n = 2 * attempts
    pairs = _colliding_pairs(n, range(attempts), pool=1 << 15)
    keys = np.array(sorted(k for p in pairs for k in p), np.uint64)
    assert keys.size == n
    vals = np.ones(n, np.uint32)
    with pytest.raises(PeelingError) as e:  # bounded: exactly max_attempts seeds are tried
        build_table(keys, vals, 8, seed=0, max_attempts=attempts)
    assert "64 seeds" in str(e.value) and "max_attempts" in str(e.value)
    # the reference agrees that these seeds fail
    with pytest.raises(ValueError):
        ref.build([int(k) for k in keys], [1] * n, 8, 0, 3)
    # with one more seed it is an ordinary key set
    table, sd, att = build_table(keys, vals, 8, seed=0, max_attempts=attempts + 8)
    assert sd >= attempts


def test_duplicate_and_unsorted_keys_are_refused_at_once():
    with pytest.raises(UsageError, match="repeats"):
        build_table(np.array([1, 5, 5, 9]), np.array([1, 1, 1, 1]), 8)
    with pytest.raises(UsageError, match="out of order"):
        build_table(np.array([1, 9, 5]), np.array([1, 1, 1]), 8)
    for bad in (dict(keys=np.array([-1]), values=np.array([1])), dict(keys=np.array([2**62]), values=np.array([1])),
                dict(keys=np.array([1]), values=np.array([256])), dict(keys=np.array([1.0]), values=np.array([1])),
                dict(keys=np.array([1, 2]), values=np.array([1]))):
        with pytest.raises(UsageError):
            build_table(bad["keys"], bad["values"], 8)
    with pytest.raises(UsageError):
        build_table(np.array([1]), np.array([1]), 8, max_attempts=0)
    with pytest.raises(UsageError):
        build_table(np.array([1]), np.array([1]), 33)


# ------------------------------------------------------------------ the codec: exact values, false positives


@pytest.mark.parametrize("dt", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("r,t", [(1, 2), (2, 5), (4, 8), (6, 16), (8, 32)])
def test_every_stored_value_is_exact(dt, r, t):
    x = sparse(5000, 0.2, seed=r * 31 + t).astype(dtypes.to_numpy(dt))
    codec = Bloomier(r=r, t=t)
    data, out = roundtrip(codec, x)
    keys, want = expected_values(x, r, dt)
    got = out.reshape(-1)[keys].astype(np.float64)
    assert (got == want.astype(dtypes.to_numpy(dt)).astype(np.float64)).all()
    info = inspect(data)
    assert info["n"] == keys.size and info["c"] <= (1 << r) - 1 and info["m"] == table_cells(keys.size)
    assert len(data) == HEADER.size + 4 * info["c"] + -(-info["m"] * t // 8)
    # decoding equals the reference decoder on the payload
    table = unpack_table(memoryview(data)[HEADER.size + 4 * info["c"]:], t, info["m"])
    if dt == "float32":
        cent = np.array(info["centroids"], np.float32).astype(np.float64).tolist()
        assert out.astype(np.float64).tolist() == ref.lookup(table.tolist(), t, info["seed"], cent, x.size)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 3000), st.floats(0.0, 1.0), st.integers(1, 6), st.integers(0, 6), st.integers(0, 2**32))
def test_roundtrip_property(size, density, r, extra, seed):
    t = min(32, r + 1 + extra)
    x = sparse(size, density, seed=seed)
    data, out = roundtrip(Bloomier(r=r, t=t), x)
    keys, want = expected_values(x, r)
    assert (out[keys].astype(np.float64) == want).all()
    c = inspect(data)["c"]
    pruned = np.flatnonzero(x == 0)
    if c:
        cent = np.array(inspect(data)["centroids"], np.float32)
        assert np.isin(out[pruned][out[pruned] != 0], cent).all()  # false positives are centroids


FP_CASES = [(4, 8), (2, 6), (3, 10), (1, 4), (4, 12)]


@pytest.mark.parametrize("r,t", FP_CASES)
def test_false_positive_rate_within_binomial_bounds(r, t):
    x = sparse(300_000, 0.1, seed=11)
    data, out = roundtrip(Bloomier(r=r, t=t), x)
    c = inspect(data)["c"]
    assert c == (1 << r) - 1
    p = expected_false_positive_rate(t, c)
    assert p == ((1 << r) - 1) / 2**t
    pruned = int((x == 0).sum())
    fp = measured_false_positive_rate(x, out) * pruned
    sigma = math.sqrt(pruned * p * (1 - p))
    assert abs(fp - pruned * p) <= 5 * sigma, (fp, pruned * p, sigma)


def test_more_bits_fewer_false_positives_and_bigger_tables():
    x = sparse(100_000, 0.1, seed=12)
    sizes, rates = [], []
    for t in (6, 8, 10, 12):
        data, out = roundtrip(Bloomier(r=3, t=t), x)
        sizes.append(len(data))
        rates.append(measured_false_positive_rate(x, out))
    assert sizes == sorted(sizes) and rates == sorted(rates, reverse=True)


def test_zstd_table_and_pipelines():
    x = sparse(20_000, 0.1, seed=13).reshape(100, 200)
    plain, out1 = roundtrip(Bloomier(r=3, t=8), x)
    packed, out2 = roundtrip(Bloomier(r=3, t=8, zstd=19), x)
    assert inspect(packed)["zstd"] and not inspect(plain)["zstd"]
    assert (out1 == out2).all()
    for p in (Pipeline([Bloomier(r=3, t=8, zstd=3)]), Pipeline([Bloomier(r=2, t=9), Zstd(5)])):
        p2 = Pipeline.from_json(json.loads(json.dumps(p.to_json())))
        data = p.encode(x, CTX)
        back = p2.decode(memoryview(data), ArraySpec.of(x), CTX)
        keys, want = expected_values(x, p.serializer.r)
        assert (back.reshape(-1)[keys] == want).all()


def test_after_a_pruning_stage():
    from nncodec.codecs.prune import Prune

    rng = np.random.default_rng(14)
    w = rng.standard_normal((64, 64)).astype(np.float32)
    p, data = Pipeline([Prune(sparsity=0.9), Bloomier(r=4, t=10)]).fit_encode(w, CTX)
    prune = p.stages[0]
    register_codec(Prune)
    back = Pipeline.from_json(json.loads(json.dumps(p.to_json()))).decode(memoryview(data), ArraySpec.of(w), CTX)
    pruned = prune.decode(prune.encode(w, CTX), ArraySpec.of(w), CTX)
    keys, want = expected_values(pruned, 4)
    assert (back.reshape(-1)[keys] == want).all()


def test_empty_zero_and_dense_tensors():
    codec = Bloomier(r=2, t=6)
    for x in (np.zeros((0, 7), np.float32), np.zeros((3, 4), np.float32), np.array(-0.0, np.float32),
              np.full((5, 5), 0.25, np.float32), np.arange(1, 301, dtype=np.float32)):
        data, out = roundtrip(codec, x)
        keys, want = expected_values(x, 2)
        assert (out.reshape(-1)[keys] == want).all()
        if not keys.size:
            assert inspect(data)["c"] == 0 and not out.any()
            assert not np.signbit(out).any()  # -0 is pruned and reads back +0


def test_encoder_refuses_bad_input():
    with pytest.raises(UsageError):
        Bloomier().encode(np.array([1.0, np.nan], np.float32), CTX)
    with pytest.raises(UnsupportedError):
        Bloomier().encode(np.array([1, 0, 2], np.int32), CTX)
    for kw in (dict(r=0), dict(r=17), dict(t=33), dict(r=4, t=4), dict(t=1), dict(zstd=23), dict(zstd=True),
               dict(seed=-1), dict(max_attempts=0), dict(iterations=-1), dict(r=2.0)):
        with pytest.raises(UsageError):
            Bloomier(**kw)


def test_encoder_is_deterministic_and_records_seed():
    x = sparse(10_000, 0.1, seed=15)
    a = Bloomier(r=4, t=8, seed=5)
    d1 = a.encode(x, CTX)
    assert d1 == Bloomier(r=4, t=8, seed=5).encode(x, CTX)
    flat = x.reshape(-1)
    keys = np.flatnonzero(flat != 0).astype(np.uint64)
    _, labels = cluster(flat[keys.astype(np.int64)].astype(np.float64), 4, "float32")
    assert inspect(d1)["seed"] == build_table(keys, labels, 8, 5)[1] >= 5
    assert d1 != Bloomier(r=4, t=8, seed=6).encode(x, CTX)


# ------------------------------------------------------------------ configuration


def test_config_roundtrip_and_validation():
    for codec in (Bloomier(), Bloomier(r=1, t=2), Bloomier(r=16, t=32, zstd=-5)):
        obj = json.loads(json.dumps(codec.to_json()))
        assert get_codec(obj) == codec
    assert Bloomier().get_config() == {"r": 4, "t": 8, "zstd": None}
    assert Bloomier.from_config({"r": 3, "t": 9}) == Bloomier(r=3, t=9)
    for bad in [{}, {"r": 3}, {"t": 9}, {"r": 0, "t": 9}, {"r": 17, "t": 32}, {"r": 3, "t": 3},
                {"r": 3, "t": 33}, {"r": 3.0, "t": 9}, {"r": 3, "t": True}, {"r": 3, "t": 9, "zstd": 99},
                {"r": 3, "t": 9, "zstd": "3"}, {"r": 3, "t": 9, "zstd": False}, {"r": 3, "t": 9, "seed": 1}]:
        with pytest.raises(CorruptError):
            Bloomier.from_config(bad)


# ------------------------------------------------------------------ corrupt payloads


def _payload(zstd=None):
    x = sparse(2000, 0.15, seed=16).reshape(40, 50)
    codec = Bloomier(r=3, t=7, zstd=zstd)
    return x, codec, codec.encode(x, CTX)


def _decode(codec, data, spec):
    return codec.decode(memoryview(bytes(data)), spec, CTX)


def _set(data, fmt, offset, value):
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


@pytest.mark.parametrize("zstd", [None, 3])
def test_truncated_payloads_raise(zstd):
    x, codec, data = _payload(zstd)
    spec = ArraySpec.of(x)
    _decode(codec, data, spec)
    for n in list(range(0, 64)) + list(range(len(data) - 40, len(data))):
        with pytest.raises(CorruptError):
            _decode(codec, data[:n], spec)
    with pytest.raises(TruncatedError):
        _decode(codec, data[:20], spec)
    with pytest.raises(CorruptError):
        _decode(codec, data + b"\0", spec)


def test_corrupt_header_fields_raise():
    x, codec, data = _payload()
    spec = ArraySpec.of(x)
    info = inspect(data)
    n, c = info["n"], info["c"]
    cases = [
        ("<Q", 0, n + 10),  # n no longer matches m
        ("<Q", 0, x.size + 1),  # more keys than elements
        ("<Q", 0, 2**64 - 1),
        ("<Q", 8, info["m"] + 3),  # m
        ("<Q", 8, 2**63),
        ("<B", 16, 8),  # t differs from the configuration (and the table length)
        ("<B", 16, 33),
        ("<B", 16, 1),
        ("<B", 17, 4),  # r differs from the configuration
        ("<B", 17, 7),  # r >= t
        ("<B", 17, 0),
        ("<B", 18, 1),  # zstd flag without zstd
        ("<B", 18, 2),  # undefined flag
        ("<B", 19, 1),  # reserved
        ("<I", 20, 0),  # no centroids for n > 0
        ("<I", 20, 8),  # more than 2**r - 1
        ("<I", 20, 2**32 - 1),
        ("<f", 32, float("nan")),
        ("<f", 32, float("inf")),
        ("<f", 36, -1e30),  # not increasing
    ]
    for fmt, off, val in cases:
        with pytest.raises(CorruptError):
            _decode(codec, _set(data, fmt, off, val), spec)
    # the last byte's padding bits
    m, t = info["m"], 7
    if (m * t) % 8:
        bad = bytearray(data)
        bad[-1] |= 0x80
        with pytest.raises(CorruptError, match="padding"):
            _decode(codec, bad, spec)
    # a valid payload against the wrong tensor spec or configuration
    with pytest.raises(CorruptError):
        _decode(codec, data, ArraySpec("float32", (2, 3)))  # fewer elements than keys
    with pytest.raises(CorruptError):
        _decode(codec, data, ArraySpec("int32", x.shape))
    with pytest.raises(CorruptError):
        _decode(Bloomier(r=3, t=8), data, spec)
    with pytest.raises(CorruptError):
        _decode(Bloomier(r=3, t=7, zstd=3), data, spec)
    # centroids that overflow float16
    big = _set(data, "<f", 32 + 4 * (c - 1), 1e30)
    with pytest.raises(CorruptError):
        _decode(codec, big, ArraySpec("float16", x.shape))


def test_corrupt_zstd_table_raises():
    x, codec, data = _payload(zstd=3)
    spec = ArraySpec.of(x)
    head = HEADER.size + 4 * inspect(data)["c"]
    with pytest.raises(CorruptError):
        _decode(codec, data[:head] + b"\x28\xb5\x2f\xfd" + data[head + 4:head + 6], spec)
    # a frame that declares another size
    import zstandard

    other = zstandard.ZstdCompressor(write_content_size=True).compress(b"\0" * 10)
    with pytest.raises(CorruptError):
        _decode(codec, data[:head] + other, spec)


def test_random_byte_flips_never_crash():
    x, codec, data = _payload()
    spec = ArraySpec.of(x)
    rng = np.random.default_rng(17)
    for _ in range(400):
        b = bytearray(data)
        i = int(rng.integers(0, 48)) if rng.random() < 0.7 else int(rng.integers(0, len(b)))
        b[i] ^= 1 << int(rng.integers(0, 8))
        try:
            out = _decode(codec, b, spec)
        except CorruptError:
            continue
        assert ArraySpec.of(out) == spec  # a flip in the table decodes (lossy) but stays in bounds


def test_conformance():
    from conformance import check_codec

    check_codec(Bloomier(r=4, t=8), sparse(2000, 0.1, seed=3), exact=False,
                bad_configs=[{"r": 4, "t": 4, "zstd": None}, {"r": 0, "t": 8, "zstd": None}])
