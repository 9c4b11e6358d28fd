"""Model updates (spec/UPDATES.md): exactness, base hash, unbiased quantizers, error feedback, diff/patch."""

from __future__ import annotations

import hashlib
import io
import json
import math
import struct

import numpy as np
import pytest

import nncodec
from nncodec import io as nio
from nncodec.errors import BaseMismatchError, CorruptError, UsageError
from nncodec.federated import (
    ErrorFeedback,
    UpdateOptions,
    apply_update,
    base_sha256,
    decode_update,
    diff_files,
    encode_update,
    patch_files,
)
from nncodec.federated.update import KEY_BASE, KEY_FULL, KEY_REMOVED, stochastic_round

from helpers import assert_same, sample


def _models(seed=0):
    import ml_dtypes

    rng = np.random.default_rng(seed)
    base = {
        "fc.weight": rng.standard_normal((64, 32)).astype(np.float32),
        "fc.bias": rng.standard_normal(32).astype(np.float32),
        "emb": rng.standard_normal((16, 8)).astype(ml_dtypes.bfloat16),
        "h": sample("float16", (9, 3), 1),
        "d": rng.standard_normal(20),
        "steps": np.array(7, np.int64),
        "mask": rng.random(10) < 0.5,
        "f8": sample("float8_e4m3fn", (4, 4), 2),
    }
    new = {}
    for k, v in base.items():
        v = v.copy()
        if v.dtype.kind == "f" or k in ("emb", "f8"):
            flat = v.reshape(-1)
            flat[: flat.size // 2] = (flat[: flat.size // 2].astype(np.float64) * 1.001 + 1e-3).astype(v.dtype)
        elif k == "mask":
            v[0] = not v[0]
        else:
            v = v + 1
        new[k] = v
    new["fc.weight"][0, :4] = [np.nan, -0.0, np.inf, 0.0]
    return base, new


# ------------------------------------------------------------ lossless, hash, refusal


def test_lossless_round_trip_is_bit_exact():
    base, new = _models()
    data = encode_update(new, base)
    out = decode_update(data, base)
    assert list(out) == list(new)
    for k in new:
        assert_same(out[k], new[k])
    assert_same(apply_update(base, io.BytesIO(data))["fc.weight"], new["fc.weight"])
    # an ordinary .nnc file: the float deltas are stored as unsigned XOR patterns
    with_meta = nncodec.iter_decode(data)
    deltas = dict(with_meta)
    assert deltas["fc.weight"].dtype == np.uint32 and deltas["emb"].dtype == np.uint16
    assert deltas["steps"].dtype == np.int64 and with_meta.metadata[KEY_BASE] == base_sha256(base)


def test_lossless_is_smaller_than_the_model_for_a_fine_tune():
    rng = np.random.default_rng(3)
    base = {"w": rng.standard_normal((256, 256)).astype(np.float32)}
    new = {"w": base["w"].copy()}
    idx = rng.choice(base["w"].size, 5000, replace=False)
    new["w"].reshape(-1)[idx] += 1e-2
    data = encode_update(new, base)
    assert len(data) < 0.2 * len(nncodec.encode_tensors(new))
    assert_same(decode_update(data, base)["w"], new["w"])


def test_wrong_base_refused():
    base, new = _models()
    data = encode_update(new, base, quantizer="scalar")
    other = dict(base)
    other["fc.bias"] = base["fc.bias"].copy()
    other["fc.bias"].view(np.uint32)[0] ^= 1  # one bit
    with pytest.raises(BaseMismatchError, match="same base"):
        decode_update(data, other)
    renamed = {("x" if k == "d" else k): v for k, v in base.items()}
    with pytest.raises(BaseMismatchError):
        decode_update(data, renamed)
    with pytest.raises(CorruptError, match="not an nncodec update"):
        decode_update(nncodec.encode_tensors(new), base)


def test_base_hash_definition():
    a = np.array([[1.5, -0.0]], np.float32)
    b = np.array([3], np.uint8)
    h = hashlib.sha256(b"nncodec.base.v1\x00" + struct.pack("<Q", 2))
    for name, arr, dt in ((b"a", a, b"float32"), (b"b", b, b"uint8")):  # bytewise name order
        h.update(struct.pack("<I", len(name)) + name + bytes([len(dt)]) + dt + bytes([arr.ndim]))
        h.update(b"".join(struct.pack("<Q", d) for d in arr.shape) + struct.pack("<Q", arr.nbytes) + arr.tobytes())
    assert base_sha256({"b": b, "a": a}) == h.hexdigest()
    flipped = a.copy()
    flipped[0, 1] = 0.0
    assert base_sha256({"a": flipped, "b": b}) != h.hexdigest()
    assert base_sha256({"a": a.astype(">f4"), "b": b}) == h.hexdigest()  # byte order of the array does not matter


def test_added_removed_reshaped_and_aliases():
    base, new = _models()
    new["extra"] = np.arange(6, dtype=np.int16)
    new["fc.bias"] = new["fc.bias"][:8].copy()  # shape changed: stored in full
    del new["d"]
    new["tied"] = new["fc.weight"]  # same memory: an alias
    data = encode_update(new, base, quantizer="scalar", step=1e-3)
    md = nncodec.iter_decode(data)
    list(md)
    assert json.loads(md.metadata[KEY_FULL]) == ["fc.bias", "extra"]
    assert json.loads(md.metadata[KEY_REMOVED]) == ["d"]
    out = decode_update(data, base)
    assert list(out) == list(new) and out["tied"] is out["fc.weight"]
    assert_same(out["extra"], new["extra"])
    assert_same(out["fc.bias"], new["fc.bias"])


def test_bad_updates_are_refused():
    base, new = _models()
    data = encode_update(new, base)
    # a record whose delta dtype does not fit the base
    bad = nncodec.decode_bytes(data)
    bad["fc.weight"] = bad["fc.weight"].view(np.int32)
    r = nncodec.iter_decode(data)
    list(r)
    with pytest.raises(CorruptError, match="does not apply"):
        decode_update(nncodec.encode_tensors(bad, metadata=r.metadata), base)
    missing = {k: v for k, v in nncodec.decode_bytes(data).items() if k != "h"}
    with pytest.raises(CorruptError, match="neither in the update"):
        decode_update(nncodec.encode_tensors(missing, metadata=r.metadata), base)
    md2 = dict(r.metadata, **{"nncodec.update.version": "2"})
    with pytest.raises(CorruptError, match="version"):
        decode_update(nncodec.encode_tensors(nncodec.decode_bytes(data), metadata=md2), base)


@pytest.mark.parametrize("kw, match", [
    ({"quantizer": "int4"}, "unknown quantizer"), ({"step": -1}, "positive"), ({"topk": 1.5}, "fraction"),
    ({"quantizer": "3lc", "dither": True}, "dither"), ({"seed": -1}, "seed"), ({"steps": 1}, "options"),
    ({"quantizer": "3lc", "sparsity": 0.5}, "sparsity"),
])
def test_bad_options(kw, match):
    base, new = _models()
    with pytest.raises(UsageError, match=match):
        encode_update(new, base, **kw)


# ------------------------------------------------------------ lossy modes


@pytest.mark.parametrize("kw", [
    {"quantizer": "scalar"}, {"quantizer": "scalar", "dither": False}, {"quantizer": "stochastic"},
    {"quantizer": "3lc"}, {"quantizer": "3lc", "sparsity": 1.5}, {"topk": 0.1}, {"threshold": 0.01},
    {"quantizer": "scalar", "min_elements": 100},
])
def test_lossy_modes(kw):
    rng = np.random.default_rng(4)
    base = {"w": rng.standard_normal((128, 64)).astype(np.float32), "b": np.zeros(64, np.float32),
            "n": np.array(3, np.int64)}
    delta = 0.01 * rng.standard_normal((128, 64))
    new = {"w": (base["w"] + delta).astype(np.float32), "b": base["b"] + 0.5, "n": np.array(4, np.int64)}
    data = encode_update(new, base, seed=11, **kw)
    out = decode_update(data, base)
    assert out["w"].dtype == np.float32 and out["n"] == 4
    rel = np.linalg.norm(out["w"] - new["w"]) / np.linalg.norm(new["w"] - base["w"])
    assert rel < 1.0, rel
    assert len(data) < 0.3 * new["w"].nbytes
    if kw.get("min_elements"):
        assert_same(out["b"], new["b"])  # small tensors stay exact


def test_dithered_and_stochastic_quantizers_are_unbiased():
    """The mean decoded delta over R seeds converges to the delta at rate sigma/sqrt(R).

    Dither: the error is uniform on [-step/2, step/2): sigma = step/sqrt(12).
    Stochastic rounding: sigma = step*sqrt(f(1-f)) <= step/2. Plain rounding has a
    deterministic bias up to step/2 per element, which the same test detects.
    """
    rng = np.random.default_rng(5)
    n, R, step = 400, 100, 0.1
    x = rng.uniform(-0.3, 0.3, n).astype(np.float32)  # fractions of x/step everywhere in [0, 1)
    base = {"w": np.zeros(n, np.float32)}
    for quantizer, sigma in (("scalar", step / math.sqrt(12)), ("stochastic", step / 2)):
        errs = np.empty((R, n))
        for seed in range(R):
            out = decode_update(encode_update({"w": x}, base, quantizer=quantizer, step=step, seed=seed), base)
            errs[seed] = out["w"].astype(np.float64) - x
        if quantizer == "scalar":
            assert np.abs(errs).max() <= step / 2 * (1 + 1e-6)
            np.testing.assert_allclose(errs.var(), step**2 / 12, rtol=0.05)
        se = sigma / math.sqrt(R)
        assert np.abs(errs.mean(axis=0)).max() < 5 * se  # every element (5 sigma over 400 elements)
        assert abs(errs.mean()) < 5 * se / math.sqrt(n)  # and overall
    plain = decode_update(encode_update({"w": x}, base, quantizer="scalar", step=step, dither=False), base)["w"]
    assert np.abs(plain - x).mean() > 5 * step / math.sqrt(12 * R)  # a bias the test above would catch


def test_stochastic_round_reference():
    t = np.array([0.25, -1.5, 3.0, -0.0])
    from nncodec import dither

    u = dither.uniform(9, 4, 0, 4, impl="numpy")
    assert stochastic_round(t, 9, 4).tolist() == np.floor(t + u).astype(int).tolist()


@pytest.mark.parametrize("kw", [{"quantizer": "3lc"}, {"topk": 0.02}, {"quantizer": "scalar", "rel_step": 2.0},
                                {"quantizer": "scalar", "step": 0.05, "dither": False}])
def test_error_feedback_keeps_the_accumulated_error_bounded(kw):
    """Over 80 rounds, sum(sent) - sum(decoded) equals the residual, which stays bounded with EF;
    without EF the same biased compressors drift away (error growing like sqrt(rounds) or faster)."""
    rng = np.random.default_rng(6)
    n, T = 2000, 80
    base = {"w": np.zeros(n, np.float32)}
    scale = np.exp(rng.standard_normal(n))  # some coordinates move more than others every round
    ef = ErrorFeedback()
    acc_true = np.zeros(n)
    acc_ef = np.zeros(n)
    acc_plain = np.zeros(n)
    worst = 0.0
    for t in range(T):
        g = (0.01 * scale * (rng.standard_normal(n) + 0.3)).astype(np.float32)
        acc_true += g.astype(np.float64)
        data = encode_update({"w": g}, base, error_feedback=ef, seed=t, **kw)
        acc_ef += decode_update(data, base)["w"]
        acc_plain += decode_update(encode_update({"w": g}, base, seed=t, **kw), base)["w"]
        err = np.linalg.norm(acc_true - acc_ef)
        np.testing.assert_allclose(err, ef.norm(), rtol=1e-3, atol=1e-4)  # the residual is the whole error
        worst = max(worst, err)
    one_round = np.linalg.norm(0.01 * scale * 1.05)
    assert worst < 6 * one_round, (worst, one_round)
    assert np.linalg.norm(acc_true - acc_plain) > 3 * worst


def test_error_feedback_state():
    ef = ErrorFeedback()
    ef.update_residual({"a": np.ones(3)}, {"a": np.zeros(3)})
    assert ef.compensate({"a": np.ones(3)})["a"].tolist() == [2, 2, 2]
    ef2 = ErrorFeedback()
    ef2.load_state_dict(ef.state_dict())
    assert ef2.norm() == pytest.approx(math.sqrt(3))
    ef.reset()
    assert ef.norm() == 0


def test_streaming_decode_from_a_pipe():
    base, new = _models()
    data = encode_update(new, base, quantizer="scalar")

    class Pipe(io.RawIOBase):  # hands out at most 7 bytes per read, like a socket
        def __init__(self, b):
            self.b, self.p = b, 0

        def readable(self):
            return True

        def readinto(self, buf):
            k = min(7, len(buf), len(self.b) - self.p)
            buf[:k] = self.b[self.p:self.p + k]
            self.p += k
            return k

    out = decode_update(Pipe(data), base)
    ref = decode_update(data, base)
    for k in ref:
        assert_same(out[k], ref[k])


# ------------------------------------------------------------ diff / patch


@pytest.mark.parametrize("fmt, ext", [("safetensors", ".safetensors"), ("npz", ".npz"), ("torch", ".pt")])
def test_diff_patch_files_bit_exact(tmp_path, fmt, ext):
    base, new = _models()
    if fmt == "torch":  # torch has no float8_e4m3fn in every reader; keep the test on common dtypes
        base.pop("f8"), new.pop("f8")
    new["extra"] = np.ones(3, np.float16)
    del new["d"]
    b, n, u, o = (tmp_path / f"{x}{ext}" for x in ("base", "new", "u", "out"))
    u = tmp_path / "u.nnc"
    nio.write_checkpoint(b, nio.Checkpoint(tensors=base), fmt)
    nio.write_checkpoint(n, nio.Checkpoint(tensors=new, aliases={"tied": "fc.weight"}), fmt)
    diff_files(b, n, u)
    assert patch_files(b, u, o) == fmt
    got, want = nio.read_checkpoint(o), nio.read_checkpoint(n)
    assert got.names() == want.names() and got.aliases == want.aliases
    for k in want.names():
        assert_same(got.get(k), want.get(k))
    if fmt == "safetensors":
        assert o.read_bytes() == n.read_bytes()
    with pytest.raises(BaseMismatchError):
        patch_files(n, u, tmp_path / f"x{ext}")
    assert not (tmp_path / f"x{ext}").exists()


def test_diff_patch_lossy_and_nnc_inputs(tmp_path):
    rng = np.random.default_rng(8)
    base = {"w": rng.standard_normal((200, 100)).astype(np.float32), "i": np.arange(4)}
    new = {"w": base["w"] + (1e-3 * rng.standard_normal((200, 100))).astype(np.float32), "i": np.arange(4) * 2}
    b, n = tmp_path / "b.safetensors", tmp_path / "n.safetensors"
    nio.write_checkpoint(b, nio.Checkpoint(tensors=base), "safetensors")
    nio.write_checkpoint(n, nio.Checkpoint(tensors=new), "safetensors")
    nncodec.encode_file(b, tmp_path / "b.nnc")
    diff_files(tmp_path / "b.nnc", n, tmp_path / "u.nnc", quantizer="scalar", rel_step=0.5, seed=3)
    patch_files(b, tmp_path / "u.nnc", tmp_path / "o.npz")
    out = nio.read_checkpoint(tmp_path / "o.npz").tensors
    assert_same(out["i"], new["i"])
    assert np.abs(out["w"] - new["w"]).max() <= 0.5 * 1e-3 * 6 / 2 + 1e-6
    assert (tmp_path / "u.nnc").stat().st_size < 0.25 * n.stat().st_size
    with pytest.raises(UsageError, match="is an nncodec update"):
        diff_files(tmp_path / "u.nnc", n, tmp_path / "v.nnc")
    with pytest.raises(UsageError, match="no such file"):
        patch_files(b, tmp_path / "missing.nnc", tmp_path / "o2.npz")


def test_options_object():
    base, new = _models()
    o = UpdateOptions(quantizer="3lc", sparsity=1.2)
    a = encode_update(new, base, opts=o)
    assert a == encode_update(new, base, quantizer="3lc", sparsity=1.2)
    with pytest.raises(UsageError, match="not both"):
        encode_update(new, base, opts=o, seed=1)


@pytest.mark.parametrize("opts", [{}, {"quantizer": "scalar"}])
def test_xor_deltas_of_complex_packed_and_float8_tensors_are_exact(opts):
    import ml_dtypes

    from nncodec import dtypes
    from nncodec.federated import update as U

    rng = np.random.default_rng(0)
    base = {"c": (rng.standard_normal(64) + 1j * rng.standard_normal(64)).astype(np.complex64),
            "f4": rng.integers(0, 255, (4, 8)).astype(np.uint8).view(dtypes.to_numpy("float4_e2m1fn_x2")),
            "e8": rng.integers(0, 255, 32).astype(np.uint8).view(ml_dtypes.float8_e8m0fnu),
            "i": rng.integers(-5, 5, 16).astype(np.int64),
            "w": rng.standard_normal((64, 64)).astype(np.float32)}
    new = {k: v.copy() for k, v in base.items()}
    new["c"][3] += 1
    new["f4"].view(np.uint8)[1, 2] ^= 7
    new["e8"].view(np.uint8)[0] ^= 1
    new["i"][0] += 1
    new["w"] += 0.01
    out = U.decode_update(U.encode_update(new, base, **opts), base)
    for k in ("c", "f4", "e8", "i"):
        assert out[k].dtype == new[k].dtype and out[k].tobytes() == new[k].tobytes(), k
    if not opts:
        assert out["w"].tobytes() == new["w"].tobytes()
