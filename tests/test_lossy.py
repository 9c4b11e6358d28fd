"""Lossy encoding: the lossless/lossy rule, rate control, error bounds, presets, CLI."""

import math
import re

import numpy as np
import pytest

import nncodec
from nncodec.cli import main
from nncodec.compare import compare, load_tensors
from nncodec.io import Checkpoint, read_checkpoint, write_checkpoint
from nncodec.encode import EncodeOptions, allocate, is_lossy

from helpers import assert_same


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    rng = np.random.default_rng(1)
    t = {
        "enc.weight": (rng.standard_normal((256, 128)) * 0.02).astype(np.float32),
        "dec.weight": (rng.standard_t(4, (128, 200)) * 0.1).astype(np.float32),
        "conv.weight": (rng.standard_normal((32, 16, 3, 3)) * 0.05).astype(np.float32),
        "enc.bias": (rng.standard_normal(256) * 0.01).astype(np.float32),
        "tiny.weight": rng.standard_normal((4, 4)).astype(np.float32),
        "steps": np.arange(10, dtype=np.int64),
        "emb.weight": (rng.standard_normal((64, 64)) * 0.3).astype(np.float32),
    }
    p = tmp_path_factory.mktemp("m") / "model.npz"
    write_checkpoint(p, Checkpoint(tensors=t), "npz")
    return p, t


def _encode(src, tmp_path, **kw):
    out = tmp_path / "m.nnc"
    infos = nncodec.encode_file(src, out, **kw)
    return out, {i.name: i for i in infos}


def test_default_rule():
    o = EncodeOptions.from_keywords(bits=4)
    assert is_lossy("a", np.zeros((64, 64), np.float32), o)
    assert not is_lossy("a", np.zeros(5000, np.float32), o)  # 1-D
    assert not is_lossy("a", np.zeros((4, 4), np.float32), o)  # tiny
    assert not is_lossy("a", np.zeros((64, 64), np.int32), o)  # integer
    o = EncodeOptions.from_keywords(bits=4, keep=("enc.*",), lossy=("*.bias", "enc.*"))
    assert not is_lossy("enc.weight", np.zeros((64, 64), np.float32), o)  # keep wins
    assert is_lossy("dec.bias", np.zeros(10, np.float32), o)
    assert not is_lossy("steps", np.zeros(10, np.int64), EncodeOptions.from_keywords(bits=4, lossy=("*",)))


@pytest.mark.parametrize("bits", [2.0, 3.0, 4.0, 6.0])
def test_bits_target_is_met(model, tmp_path, bits):
    src, t = model
    out, infos = _encode(src, tmp_path, bits=bits)
    lossy = [i for i in infos.values() if i.pipeline.array_stages]
    assert {i.name for i in lossy} == {"enc.weight", "dec.weight", "conv.weight", "emb.weight"}
    n_float = sum(a.size for a in t.values() if a.dtype.kind == "f")
    got = 8 * out.stat().st_size / n_float  # bits: the whole file per float parameter
    assert abs(got / bits - 1) <= 0.005, got
    back = load_tensors(out)
    for n in ("tiny.weight", "steps"):  # 64 bytes and less are stored raw; integers are exact
        assert_same(back[n], t[n])
    # 1-D tensors are near-lossless: each value within 2**-8 of itself
    err = np.abs(back["enc.bias"].astype(np.float64) - t["enc.bias"])
    assert np.all(err <= np.abs(t["enc.bias"].astype(np.float64)) * 2.0**-8) and err.max() > 0


def test_more_bits_more_snr(model, tmp_path):
    src, _ = model
    snrs = []
    for bits in (2, 3, 4, 5):
        out, _ = _encode(src, tmp_path, bits=bits)
        snrs.append(compare(src, out)[1].snr_db)
    assert all(b > a + 3 for a, b in zip(snrs, snrs[1:])), snrs


def test_snr_target_is_met(model, tmp_path):
    src, _ = model
    for target in (15.0, 30.0):
        out, _ = _encode(src, tmp_path, snr=target)
        diffs, _, _, _ = compare(src, out)
        lossy = [d for d in diffs if d.name in ("enc.weight", "dec.weight", "conv.weight", "emb.weight")]
        snr = 10 * np.log10(sum(d.signal for d in lossy) / sum(d.noise for d in lossy))
        assert target <= snr <= target + 2.5, snr


def test_max_error_and_step_bounds(model, tmp_path):
    src, t = model
    out, _ = _encode(src, tmp_path, max_error=0.003)
    back = load_tensors(out)
    for n in ("enc.weight", "dec.weight", "conv.weight", "emb.weight"):
        assert np.max(np.abs(back[n].astype(np.float64) - t[n])) <= 0.003 * (1 + 1e-6)
    out, infos = _encode(src, tmp_path, step=0.01, dither=True, seed=5)
    back = load_tensors(out)
    for n in ("enc.weight", "dec.weight"):
        assert infos[n].pipeline.stages[0].get_config()["step"] == 0.01
        assert np.max(np.abs(back[n].astype(np.float64) - t[n])) <= 0.005 * (1 + 1e-6)


def test_same_seed_same_bytes_and_dither_changes_them(model, tmp_path):
    src, _ = model
    a = nncodec.encode_file(src, tmp_path / "a.nnc", bits=3, dither=True, seed=1)
    b = nncodec.encode_file(src, tmp_path / "b.nnc", bits=3, dither=True, seed=1)
    c = nncodec.encode_file(src, tmp_path / "c.nnc", bits=3, dither=True, seed=2)
    assert (tmp_path / "a.nnc").read_bytes() == (tmp_path / "b.nnc").read_bytes()
    assert (tmp_path / "a.nnc").read_bytes() != (tmp_path / "c.nnc").read_bytes()


def test_overrides(model, tmp_path):
    src, t = model
    from nncodec.codecs import codec_class
    from nncodec.pipeline import Pipeline

    p = Pipeline([codec_class("scalar")(0.05), codec_class("raw")()])
    out, infos = _encode(src, tmp_path, snr=20, overrides={"enc.weight": "lossless", "dec.weight": 0.02,
                                                           "enc.bias": p})
    back = load_tensors(out)
    assert_same(back["enc.weight"], t["enc.weight"])
    assert infos["dec.weight"].pipeline.stages[0].get_config()["step"] == 0.02
    assert infos["enc.bias"].pipeline == p


def test_lattice_quantizers(model, tmp_path):
    src, _ = model
    for q in ("lattice-d4", "lattice-e8"):
        out, infos = _encode(src, tmp_path, bits=4, quantizer=q)
        assert infos["enc.weight"].pipeline.stages[0].codec_id == "lattice"
        assert compare(src, out)[1].snr_db > 15


def test_bad_options():
    with pytest.raises(nncodec.UsageError, match="choose one"):
        EncodeOptions.from_keywords(bits=3, snr=20)
    with pytest.raises(nncodec.UsageError):
        EncodeOptions.from_keywords(bits=-1)
    with pytest.raises(nncodec.UsageError, match="preset"):
        EncodeOptions.from_keywords(preset="tiny")
    with pytest.raises(nncodec.UsageError, match="scalar"):
        EncodeOptions.from_keywords(max_error=0.1, quantizer="lattice-e8")


def test_allocation_is_not_one_step_for_all():
    rng = np.random.default_rng(0)
    t = {"small": rng.standard_normal((300, 300)) * 0.25, "big": rng.standard_normal((300, 300)) * 1.0}
    # relative error counts: steps follow each tensor's scale (4x apart)
    steps = allocate(t, EncodeOptions.from_keywords(bits=5))
    assert 3.0 < steps["big"] / steps["small"] < 5.5
    # total squared error counts: at high rate the equal-slope step is the same for both
    steps = allocate(t, EncodeOptions.from_keywords(bits=5, objective="mse"))
    assert 0.7 < steps["big"] / steps["small"] < 1.45


def test_cli_lossy(model, tmp_path, capsys):
    src, _ = model
    out = tmp_path / "c.nnc"
    assert main(["encode", str(src), str(out), "--bits", "3", "--keep", "conv.*"]) == 0
    line = capsys.readouterr().out
    got = float(re.search(r"([0-9.]+) bits per float parameter \(whole file\)", line).group(1))
    assert abs(got / 3 - 1) <= 0.005, line  # the summary shows what --bits targets
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "entropy" in text and "scalar|" in text
    assert main(["compare", str(src), str(out)]) == 0
    text = capsys.readouterr().out
    assert "conv.weight" in text and "exact" in text
    with pytest.raises(SystemExit):
        main(["encode", str(src), str(out), "--bits", "3", "--snr", "20"])
    assert main(["encode", str(src), str(out), "--preset", "fast"]) == 0


def test_digits_model_keeps_accuracy_at_3_bits(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    import json
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
    import digits_model

    fx = os.path.join(os.path.dirname(__file__), "fixtures", "digits_lenet5.safetensors")
    ref = json.load(open(fx[:-len(".safetensors")] + ".json"))["test_accuracy"]
    out = tmp_path / "d.nnc"
    # 4 bits per parameter of the whole file: about 3 per weight on this 20k-parameter model,
    # whose container and 1-D tensors take a quarter of the file
    infos = nncodec.encode_file(fx, out, bits=4, lossy=["*.weight"])
    lossy = [i for i in infos if i.pipeline.array_stages]
    bpw = 8 * sum(i.stored_bytes for i in lossy) / sum(i.size for i in lossy)
    assert bpw <= 3.05
    acc = digits_model.evaluate(load_tensors(out))
    assert acc >= ref - 0.005, (acc, ref)


def test_small_preset_uses_trellis_and_beats_balanced(model, tmp_path):
    src, t = model
    snr = {}
    n_float = sum(a.size for a in t.values() if a.dtype.kind == "f")
    for preset in ("balanced", "small"):
        out, infos = _encode(src, tmp_path, bits=3, preset=preset)
        lossy = [i for i in infos.values() if i.pipeline.array_stages]
        got = 8 * out.stat().st_size / n_float
        assert abs(got / 3 - 1) <= 0.005, (preset, got)
        snr[preset] = compare(src, out)[1].snr_db
        if preset == "small":
            assert {i.pipeline.describe() for i in lossy} == {"tcq|cabac"}
    assert snr["small"] > snr["balanced"] + 0.5, snr


def test_readme_presets_table_is_rendered_from_the_code():
    import pathlib
    import re

    from nncodec.encode.presets import PRESETS, help_text, markdown_table

    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- presets:begin -->\n(.*?)<!-- presets:end -->", readme, re.S)
    assert m, "README.md lost its presets table markers"
    assert m.group(1) == markdown_table(), "README's presets table is stale: run python -m nncodec.encode.presets --markdown"
    assert "trellis-coded quantization" in m.group(1).split("`small`")[1]
    text = help_text()
    for name, p in PRESETS.items():
        assert re.search(rf"^  {name}\s+{p['bits']:g} bits/weight", text, re.M)


def test_compare_measures_both_parts_of_complex_values_and_blocks_agree():
    from nncodec import compare as cmp

    rng = np.random.default_rng(5)
    a = (rng.standard_normal(3000) + 1j * rng.standard_normal(3000)).astype(np.complex64)
    b = a.copy()
    b.imag += np.float32(0.01)  # only the imaginary parts differ
    d = cmp.diff_tensor("c", a, b)
    assert not d.exact and d.noise > 0 and math.isclose(d.max_abs_error, 0.01, rel_tol=1e-3)
    want = float(np.sum(np.abs(a.astype(np.complex128)) ** 2))
    assert math.isclose(d.signal, want, rel_tol=1e-9)
    # the block-wise sums equal one pass over the whole tensor, NaN and inf pairs left out
    x = rng.standard_normal(5000).astype(np.float32)
    y = x + rng.standard_normal(5000).astype(np.float32) * 1e-3
    x[7], y[9] = np.nan, np.inf
    whole = cmp.diff_tensor("x", x, y)
    old, cmp.BLOCK = cmp.BLOCK, 1000
    try:
        blocked = cmp.diff_tensor("x", x, y)
    finally:
        cmp.BLOCK = old
    f = np.isfinite(x) & np.isfinite(y)
    e = (x[f].astype(np.float64) - y[f].astype(np.float64))
    for got in (whole, blocked):
        assert math.isclose(got.noise, float(np.sum(e * e)), rel_tol=1e-9)
        assert math.isclose(got.signal, float(np.sum(x[f].astype(np.float64) ** 2)), rel_tol=1e-9)
