"""Importance weights in rate allocation: direction, validation, auto, collect, CLI."""

import os
import warnings

import numpy as np
import pytest

import nncodec
from nncodec.cli import main
from nncodec.encode import EncodeOptions
from nncodec.encode.rate import allocate
from nncodec.errors import UsageError
from nncodec.importance import auto, collect, load, resolve, save


def _pair(seed=0, shape=(64, 96)):
    rng = np.random.default_rng(seed)
    return {"a.weight": rng.normal(size=shape).astype(np.float32),
            "b.weight": rng.normal(size=shape).astype(np.float32)}


@pytest.mark.parametrize("objective", ["relative", "mse"])
def test_scalar_importance_gives_a_finer_step(objective):
    t = _pair()
    plain = allocate(t, EncodeOptions.from_keywords(bits=3, objective=objective))
    weighted = allocate(t, EncodeOptions.from_keywords(bits=3, objective=objective, importance={"a.weight": 16.0}))
    assert weighted["a.weight"] < plain["a.weight"]
    assert weighted["b.weight"] > plain["b.weight"]


def test_column_importance_on_small_columns_gives_a_finer_step():
    t = _pair()
    t["a.weight"][:, 48:] *= 10  # large-weight columns that see (almost) no input: the
    cols = np.r_[np.ones(48), np.full(48, 1e-3)]  # output power is that of the small ones
    plain = allocate(t, EncodeOptions.from_keywords(bits=3))
    weighted = allocate(t, EncodeOptions.from_keywords(bits=3, importance={"a.weight": cols}))
    assert weighted["a.weight"] < plain["a.weight"]
    # uniform column weights change nothing under relative (their scale cancels)
    same = allocate(t, EncodeOptions.from_keywords(bits=3, importance={"a.weight": np.full(96, 7.0)}))
    assert same == pytest.approx(plain, rel=1e-9)


def test_conv_columns_are_axis_1():
    rng = np.random.default_rng(1)
    t = {"c.weight": rng.normal(size=(16, 8, 3, 3)).astype(np.float32)}
    imp = resolve({"c.weight": np.arange(1, 9, dtype=float)}, t)
    assert imp["c.weight"][1].shape == (8,)
    with pytest.raises(UsageError, match="c.weight.*8 input columns"):
        resolve({"c.weight": np.ones(16)}, t)


def test_validation_names_the_tensor(tmp_path):
    t = _pair()
    t["bias"] = np.zeros(96, np.float32)
    cases = [({"a.weight": np.ones(64)}, r"'a.weight'.*64 entries.*96 input columns"),
             ({"a.weight": np.ones((2, 96))}, r"'a.weight' has shape \(2, 96\)"),
             ({"a.weight": -1.0}, r"'a.weight' must be finite and non-negative"),
             ({"b.weight": np.r_[np.nan, np.ones(95)]}, r"'b.weight' must be finite"),
             ({"a.weight": np.zeros(96)}, r"'a.weight' is all zeros"),
             ({"bias": np.ones(96)}, r"'bias' has shape \(96,\), so it has no input columns")]
    for spec, msg in cases:
        path = tmp_path / "imp.npz"
        save(spec, path)
        with pytest.raises(UsageError, match=msg):
            resolve(str(path), t)
        with pytest.raises(UsageError, match=msg):
            resolve(spec, t)
    with pytest.warns(UserWarning, match="no tensor named 'nope.weight'"):
        assert resolve({"nope.weight": 2.0, "a.weight": 2.0}, t) == {"a.weight": (2.0, None)}
    with pytest.raises(UsageError, match="no such file"):
        EncodeOptions.from_keywords(bits=3, importance=str(tmp_path / "missing.npz"))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a file of arrays")
    with pytest.raises(UsageError, match="not a readable"):
        load(bad)


def test_files_npz_and_safetensors(tmp_path):
    spec = {"a.weight": np.linspace(0.5, 2, 96), "b.weight": 3.0}
    for ext in (".npz", ".safetensors"):
        save(spec, tmp_path / ("imp" + ext))
        got = load(tmp_path / ("imp" + ext))
        assert got["b.weight"] == pytest.approx(3.0)
        np.testing.assert_allclose(got["a.weight"], spec["a.weight"], rtol=1e-6)


def _prenorm_and_postnorm():
    rng = np.random.default_rng(2)
    d = 32
    t = {"model.embed_tokens.weight": rng.normal(size=(100, d)), "model.norm.weight": rng.uniform(0.5, 2, d),
         "lm_head.weight": rng.normal(size=(100, d))}
    for i in range(2):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = rng.uniform(0.5, 2, d)
        t[p + "post_attention_layernorm.weight"] = rng.uniform(0.5, 2, d)
        for m in ("q_proj", "k_proj", "v_proj", "o_proj"):
            t[p + f"self_attn.{m}.weight"] = rng.normal(size=(d, d))
        t[p + "mlp.gate_proj.weight"] = rng.normal(size=(64, d))
        t[p + "mlp.up_proj.weight"] = rng.normal(size=(64, d))
        t[p + "mlp.down_proj.weight"] = rng.normal(size=(d, 64))
    bert = {"embeddings.word_embeddings.weight": rng.normal(size=(100, d)),
            "embeddings.LayerNorm.weight": rng.uniform(0.5, 2, d), "embeddings.LayerNorm.bias": rng.normal(0, .1, d)}
    for i in range(2):
        p = f"encoder.layer.{i}."
        for m in ("query", "key", "value"):
            bert[p + f"attention.self.{m}.weight"] = rng.normal(size=(d, d))
        bert[p + "attention.output.dense.weight"] = rng.normal(size=(d, d))
        bert[p + "attention.output.LayerNorm.weight"] = rng.uniform(0.5, 2, d)
        bert[p + "intermediate.dense.weight"] = rng.normal(size=(64, d))
        bert[p + "output.dense.weight"] = rng.normal(size=(d, 64))
        bert[p + "output.LayerNorm.weight"] = rng.uniform(0.5, 2, d)
        bert[p + "output.LayerNorm.bias"] = rng.normal(0, .1, d)
    return t, bert


def test_auto_rule_and_determinism():
    llama, bert = _prenorm_and_postnorm()
    a = auto(llama)
    assert set(a) == {f"model.layers.{i}.{m}.weight" for i in range(2)
                      for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                "mlp.gate_proj", "mlp.up_proj")} | {"lm_head.weight"}
    g = llama["model.layers.1.post_attention_layernorm.weight"]
    np.testing.assert_allclose(a["model.layers.1.mlp.up_proj.weight"], g * g / np.mean(g * g))
    g = llama["model.norm.weight"]
    np.testing.assert_allclose(a["lm_head.weight"], g * g / np.mean(g * g))
    b = auto(bert)
    assert set(b) == {f"encoder.layer.{i}.{m}.weight" for i in range(2)
                      for m in ("attention.self.query", "attention.self.key", "attention.self.value",
                                "intermediate.dense")}
    g, beta = bert["embeddings.LayerNorm.weight"], bert["embeddings.LayerNorm.bias"]
    np.testing.assert_allclose(b["encoder.layer.0.attention.self.key.weight"],
                               (g * g + beta * beta) / np.mean(g * g + beta * beta))
    g, beta = bert["encoder.layer.0.output.LayerNorm.weight"], bert["encoder.layer.0.output.LayerNorm.bias"]
    np.testing.assert_allclose(b["encoder.layer.1.attention.self.query.weight"],
                               (g * g + beta * beta) / np.mean(g * g + beta * beta))
    g = bert["encoder.layer.1.attention.output.LayerNorm.weight"]
    np.testing.assert_allclose(b["encoder.layer.1.intermediate.dense.weight"], g * g / np.mean(g * g))
    # deterministic, and reads only names, shapes and the norm tensors: other values do not matter
    other = {k: (v if v.ndim == 1 else np.random.default_rng(9).normal(size=v.shape)) for k, v in bert.items()}
    again = auto(dict(reversed(list(other.items()))))
    assert set(again) == set(b)
    for k in b:
        np.testing.assert_array_equal(again[k], b[k])
    assert auto({"fc1.weight": np.ones((4, 4)), "fc1.bias": np.ones(4)}) == {}


def test_collect_matches_direct_computation(tmp_path):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    conv = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 1, groups=2))
    batches = [torch.randn(8, 5, dtype=torch.float32) for _ in range(3)] + [torch.randn(2, 4, 5)]
    got = collect(model, batches, out=tmp_path / "imp.npz")
    xs = [b.reshape(-1, 5).double() for b in batches]
    x0 = torch.cat(xs)
    with torch.no_grad():
        h = torch.relu(model[0](x0.float())).double()
    np.testing.assert_allclose(got["0.weight"], (x0 ** 2).mean(0).numpy(), rtol=1e-12)
    np.testing.assert_allclose(got["2.weight"], (h ** 2).mean(0).numpy(), rtol=1e-5)
    assert set(load(tmp_path / "imp.npz")) == {"0.weight", "2.weight"}
    images = [torch.randn(2, 4, 5, 5) for _ in range(2)]
    gc = collect(conv, images)
    x = torch.cat(images).double()
    np.testing.assert_allclose(gc["0.weight"], (x ** 2).mean((0, 2, 3)).numpy(), rtol=1e-12)
    with torch.no_grad():
        y = torch.relu(conv[0](torch.cat(images))).double()
    per_channel = (y ** 2).mean((0, 2, 3))
    np.testing.assert_allclose(gc["2.weight"], per_channel.reshape(2, 3).mean(0).numpy(), rtol=1e-5)
    assert gc["2.weight"].shape == (conv[2].weight.shape[1],)
    assert not any(m._forward_hooks for m in model.modules())


def test_encode_file_and_cli_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    t = {"l0.weight": rng.normal(0, .05, (256, 64)).astype(np.float32),
         "l1.weight": rng.normal(0, .05, (64, 256)).astype(np.float32),
         "norm.weight": rng.uniform(0.5, 2, 64).astype(np.float32)}
    src = tmp_path / "m.safetensors"
    from safetensors.numpy import save_file
    save_file(t, str(src))
    imp = tmp_path / "imp.safetensors"
    save({"l0.weight": np.r_[np.full(8, 50.0), np.ones(56)], "l1.weight": 0.01}, imp)
    plain, weighted = tmp_path / "plain.nnc", tmp_path / "w.nnc"
    assert main(["encode", str(src), str(plain), "--bits", "3"]) == 0
    assert main(["encode", str(src), str(weighted), "--bits", "3", "--importance", str(imp)]) == 0
    with nncodec.open(plain) as f:
        p = f.to_dict()
    with nncodec.open(weighted) as f:
        w = f.to_dict()

    def err(d, n):
        return float(np.mean((d[n] - t[n]) ** 2))

    assert err(w, "l0.weight") < err(p, "l0.weight") and err(w, "l1.weight") > err(p, "l1.weight")
    assert abs(os.path.getsize(weighted) / os.path.getsize(plain) - 1) < 0.01
    via_api = tmp_path / "api.nnc"
    nncodec.encode_file(src, via_api, bits=3, importance=str(imp))
    assert via_api.read_bytes() == weighted.read_bytes()
    assert main(["encode", str(src), str(tmp_path / "a.nnc"), "--bits", "3", "--importance", "auto"]) == 0
    assert main(["encode", str(src), str(tmp_path / "x.nnc"), "--bits", "3",
                 "--importance", str(tmp_path / "none.npz")]) == 2
