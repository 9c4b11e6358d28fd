"""nncodec.hf against the real transformers: tiny models built from a config (no downloads),
saved sharded, encoded, and loaded back."""

import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import nncodec.hf as hf  # noqa: E402
from nncodec import folders  # noqa: E402
from nncodec.cli import main  # noqa: E402
from nncodec.errors import CorruptError, UsageError  # noqa: E402
from transformers import (  # noqa: E402
    AutoModel,
    AutoModelForCausalLM,
    BertConfig,
    BertForMaskedLM,
    LlamaConfig,
    LlamaForCausalLM,
)
from transformers import modeling_utils as mu  # noqa: E402

transformers.utils.logging.disable_progress_bar()
SHARD = "60KB"  # several shards for models of a few hundred KB
VOCAB = 256


def _llama(dtype=torch.float32, tie=False):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=tie)
    return LlamaForCausalLM(cfg).to(dtype).eval()


def _bert():
    torch.manual_seed(1)
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, max_position_embeddings=64)
    return BertForMaskedLM(cfg).eval()


def _ids(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (2, 16), generator=g)


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def _cosine(a, b) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    return float(a @ b / (a.norm() * b.norm()))


def _shards(d, ext):
    return sorted(f for f in os.listdir(d) if f.endswith(ext))


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """(model, its sharded folder, that folder encoded losslessly, encoded at 6 bits)."""
    root = tmp_path_factory.mktemp("llama")
    model = _llama()
    src = root / "model"
    model.save_pretrained(src, max_shard_size=SHARD)
    assert len(_shards(src, ".safetensors")) >= 3
    assert main(["encode", "-q", str(src), str(root / "nnc")]) == 0
    assert main(["encode", "-q", "--bits", "6", str(src), str(root / "nnc6")]) == 0
    return model, src, root / "nnc", root / "nnc6"


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    root = tmp_path_factory.mktemp("bert")
    model = _bert()
    src = root / "model"
    model.save_pretrained(src, max_shard_size=SHARD)
    assert len(_shards(src, ".safetensors")) >= 3
    assert main(["encode", "-q", str(src), str(root / "nnc")]) == 0
    assert main(["encode", "-q", "--bits", "6", str(src), str(root / "nnc6")]) == 0
    return model, src, root / "nnc", root / "nnc6"


@pytest.fixture(autouse=True)
def _off():
    """Every test starts and ends with transformers' own functions in place."""
    hf.disable()
    yield
    hf.disable()


ORIGINAL = {name: getattr(mu, name) for name in hf._HOOKS}


def _restored():
    return all(getattr(mu, name) is fn for name, fn in ORIGINAL.items()) and not hf.is_enabled()


# ------------------------------------------------------------------ lossless and lossy


def test_llama_lossless_logits_equal(llama):
    model, src, nnc, _ = llama
    assert len(_shards(nnc, ".nnc")) == len(_shards(src, ".safetensors"))
    assert not any(f.endswith(".safetensors") for f in os.listdir(nnc))
    back = hf.from_pretrained(LlamaForCausalLM, nnc)
    assert isinstance(back, LlamaForCausalLM) and not back.training
    sd, ref = back.state_dict(), model.state_dict()
    assert sd.keys() == ref.keys()
    assert all(torch.equal(sd[k], ref[k]) for k in ref)
    assert torch.equal(_logits(back, _ids()), _logits(model, _ids()))
    assert back.generation_config is not None  # carried generation_config.json was read
    assert _restored()


def test_bert_lossless_logits_equal(bert):
    model, _, nnc, _ = bert
    back = hf.from_pretrained("BertForMaskedLM", nnc)
    assert torch.equal(_logits(back, _ids(1)), _logits(model, _ids(1)))
    # the output head stays tied to the word embeddings
    assert back.cls.predictions.decoder.weight is back.bert.embeddings.word_embeddings.weight
    base = hf.from_pretrained(AutoModel, nnc)  # the base model out of a masked-LM checkpoint
    with torch.no_grad():
        assert torch.equal(base(_ids(1)).last_hidden_state, model.bert(_ids(1)).last_hidden_state)


@pytest.mark.parametrize("which", ["llama", "bert"])
def test_lossy_6_bits_close(which, request):
    model, src, _, nnc6 = request.getfixturevalue(which)
    size = sum(os.path.getsize(nnc6 / f) for f in _shards(nnc6, ".nnc"))
    assert size < 0.5 * sum(os.path.getsize(src / f) for f in _shards(src, ".safetensors"))
    back = hf.from_pretrained(AutoModelForCausalLM if which == "llama" else BertForMaskedLM, nnc6)
    a, b = _logits(model, _ids(2)), _logits(back, _ids(2))
    assert not torch.equal(a, b)
    assert _cosine(a, b) >= 0.99


def test_decode_then_plain_from_pretrained(llama, tmp_path):
    model, src, nnc, _ = llama
    out = tmp_path / "back"
    assert main(["decode", "-q", str(nnc), str(out)]) == 0
    for f in _shards(src, ".safetensors"):
        assert (out / f).read_bytes() == (src / f).read_bytes()
    back = LlamaForCausalLM.from_pretrained(out)
    assert torch.equal(_logits(back, _ids()), _logits(model, _ids()))


def test_torch_bin_folder_with_tied_storage(tmp_path):
    """A pytorch_model.bin folder: tied tensors share storage in the pickle (an alias in the .nnc)."""
    model = _bert()
    src = tmp_path / "model"
    model.save_pretrained(src)
    os.remove(src / "model.safetensors")
    sd = model.state_dict()
    assert sd["cls.predictions.decoder.weight"].data_ptr() == sd["bert.embeddings.word_embeddings.weight"].data_ptr()
    torch.save(sd, src / "pytorch_model.bin")
    nnc = tmp_path / "nnc"
    folders.encode_folder(src, nnc)
    assert folders.read_folder_index(nnc)["groups"][0]["format"] == "torch"
    back = hf.from_pretrained(BertForMaskedLM, nnc)
    assert torch.equal(_logits(back, _ids(3)), _logits(model, _ids(3)))


# ------------------------------------------------------------------ enable()


def test_enable_makes_automodel_work(llama):
    model, src, nnc, _ = llama
    with pytest.raises(OSError):
        AutoModelForCausalLM.from_pretrained(nnc)  # transformers alone finds no weights
    hf.enable()
    hooked = {name: getattr(mu, name) for name in hf._HOOKS}
    hf.enable()  # idempotent: nothing is wrapped twice
    assert {name: getattr(mu, name) for name in hf._HOOKS} == hooked
    assert all(hooked[n] is not ORIGINAL[n] and hooked[n].__wrapped__ is ORIGINAL[n] for n in hooked)
    back = AutoModelForCausalLM.from_pretrained(nnc)
    assert isinstance(back, LlamaForCausalLM)
    assert torch.equal(_logits(back, _ids()), _logits(model, _ids()))
    plain = AutoModelForCausalLM.from_pretrained(src)  # a plain folder loads as before
    assert torch.equal(_logits(plain, _ids()), _logits(model, _ids()))
    hf.disable()
    assert _restored()
    hf.disable()  # a no-op when off
    assert _restored()


def test_context_manager_restores(llama):
    model, _, nnc, _ = llama
    with hf.enable() as scope:
        assert hf.is_enabled() and "nncodec.hf" in repr(scope)
        back = AutoModelForCausalLM.from_pretrained(nnc)
        assert torch.equal(_logits(back, _ids()), _logits(model, _ids()))
    assert _restored()
    with pytest.raises(OSError):
        AutoModelForCausalLM.from_pretrained(nnc)
    with pytest.raises(RuntimeError), hf.enabled():
        assert hf.is_enabled()
        raise RuntimeError("restored on errors too")
    assert _restored()
    # nested in a persistent enable(): leaving the block keeps it on
    hf.enable()
    with hf.enabled():
        pass
    assert hf.is_enabled()
    assert isinstance(AutoModelForCausalLM.from_pretrained(nnc), LlamaForCausalLM)
    hf.disable()
    assert _restored()
    # hf.from_pretrained enables only for its own call
    hf.from_pretrained(AutoModelForCausalLM, nnc)
    assert _restored()


# ------------------------------------------------------------------ save_pretrained


class _Tokenizer:
    def save_pretrained(self, folder):
        with open(os.path.join(folder, "tokenizer.json"), "w") as f:
            f.write('{"version": "1.0"}')


def test_save_pretrained_then_from_pretrained(tmp_path):
    model = _llama(tie=True)
    doc = hf.save_pretrained(model, tmp_path / "out", max_shard_size=SHARD, tokenizer=_Tokenizer())
    assert len(doc["groups"][0]["shards"]) >= 3
    assert (tmp_path / "out" / "tokenizer.json").read_text() == '{"version": "1.0"}'
    assert {"config.json", "generation_config.json", "tokenizer.json"} <= {e["file"] for e in doc["files"]}
    assert folders.is_encoded_folder(tmp_path / "out")
    assert sorted(os.listdir(tmp_path)) == ["out"]  # the temporary folder is gone
    back = hf.from_pretrained(LlamaForCausalLM, tmp_path / "out")
    assert back.lm_head.weight is back.model.embed_tokens.weight
    assert torch.equal(_logits(back, _ids()), _logits(model, _ids()))
    hf.save_pretrained(model, tmp_path / "out6", bits=6, max_shard_size=SHARD)
    back6 = hf.from_pretrained(LlamaForCausalLM, tmp_path / "out6")
    assert _cosine(_logits(back6, _ids()), _logits(model, _ids())) >= 0.99
    with pytest.raises(UsageError, match="not an empty folder"):
        hf.save_pretrained(model, tmp_path / "out")
    with pytest.raises(UsageError, match="unknown keyword.*bitz.*neither a coding option"):
        hf.save_pretrained(model, tmp_path / "bad", bitz=6)  # a typo is not dropped silently
    assert sorted(os.listdir(tmp_path)) == ["out", "out6"]


# ------------------------------------------------------------------ keywords


def test_dtype_passthrough(tmp_path):
    model = _llama(torch.bfloat16)
    src, nnc = tmp_path / "model", tmp_path / "nnc"
    model.save_pretrained(src, max_shard_size="50KB")
    assert len(_shards(src, ".safetensors")) >= 3
    folders.encode_folder(src, nnc)
    back = hf.from_pretrained(LlamaForCausalLM, nnc)  # dtype="auto": the config's bfloat16
    assert {p.dtype for p in back.parameters()} == {torch.bfloat16}
    ref = model.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in back.state_dict().items())
    plain = LlamaForCausalLM.from_pretrained(src)  # (its rotary buffer is rebuilt, as in ours)
    assert torch.equal(_logits(back, _ids()), _logits(plain, _ids()))
    for kw in ({"dtype": torch.float32}, {"torch_dtype": torch.float32}, {"torch_dtype": "float32"}):
        f32 = hf.from_pretrained(LlamaForCausalLM, nnc, **kw)
        assert {p.dtype for p in f32.parameters()} == {torch.float32}
        assert torch.equal(f32.lm_head.weight, model.lm_head.weight.float())
    with pytest.raises(UsageError, match="disagree"):
        hf.from_pretrained(LlamaForCausalLM, nnc, dtype=torch.float16, torch_dtype=torch.float32)


def test_other_keywords_pass_through(llama):
    _, _, nnc, _ = llama
    back = hf.from_pretrained(LlamaForCausalLM, nnc, output_hidden_states=True, attn_implementation="eager")
    assert back.config.output_hidden_states and back.config._attn_implementation == "eager"
    try:
        import accelerate  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="accelerate"):  # transformers' own check saw device_map
            hf.from_pretrained(LlamaForCausalLM, nnc, device_map="cpu")
    else:
        assert hf.from_pretrained(LlamaForCausalLM, nnc, device_map="cpu").device.type == "cpu"


def test_meta_and_eager_shard_reads(llama):
    model, _, nnc, _ = llama
    shard = str(nnc / _shards(nnc, ".nnc")[0])
    with hf.enable():
        meta = mu.load_state_dict(shard, map_location="meta")
        full = mu.load_state_dict(shard, map_location="cpu")
    ref = model.state_dict()
    assert meta.keys() == full.keys() and meta
    for k, t in meta.items():
        assert t.device.type == "meta" and t.shape == ref[k].shape and t.dtype == ref[k].dtype
        assert torch.equal(full[k], ref[k])


# ------------------------------------------------------------------ errors


def test_not_an_nncodec_folder(llama, tmp_path):
    _, src, nnc, _ = llama
    with pytest.raises(UsageError, match="not an nncodec folder .* plain model folder"):
        hf.from_pretrained(LlamaForCausalLM, src)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="not an nncodec folder"):
        hf.from_pretrained(LlamaForCausalLM, tmp_path / "empty")
    with pytest.raises(UsageError, match="no such folder"):
        hf.from_pretrained(LlamaForCausalLM, tmp_path / "missing")
    with pytest.raises(UsageError, match="is a file"):
        hf.from_pretrained(LlamaForCausalLM, src / "config.json")
    with pytest.raises(UsageError, match="no model class"):
        hf.from_pretrained("NoSuchModel", nnc)
    assert _restored()


def test_missing_shard_is_named(llama, tmp_path):
    import shutil

    _, _, nnc, _ = llama
    broken = tmp_path / "broken"
    shutil.copytree(nnc, broken)
    gone = _shards(broken, ".nnc")[1]
    os.remove(broken / gone)
    with pytest.raises(CorruptError, match=gone):
        hf.from_pretrained(LlamaForCausalLM, broken)
    assert _restored()


def test_import_nncodec_imports_neither():
    code = ("import sys, nncodec, nncodec.hf; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_transformers_that_bypasses_the_hook_is_named(llama, monkeypatch):
    """Where transformers finds weights some other way, the error says so (not 'no model.safetensors')."""
    from nncodec.errors import UnsupportedError

    _, _, nnc, _ = llama
    monkeypatch.setattr(hf, "is_encoded_folder", lambda path: False)  # the hook never serves the folder
    with pytest.raises(UnsupportedError, match="nncodec decode"):
        hf.from_pretrained(LlamaForCausalLM, nnc)
    assert _restored()
