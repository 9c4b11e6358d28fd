"""Hugging Face model folders: sharded safetensors and .bin, other files carried, atomic output."""

import hashlib
import json
import os

import ml_dtypes
import numpy as np
import pytest

from nncodec import folders
from nncodec.cli import main
from nncodec.errors import BaseMismatchError, CorruptError, NNCodecError, UnsupportedError, UsageError
from nncodec.io import Checkpoint, read_checkpoint, write_checkpoint

from helpers import assert_same, sample

SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
EXTRA = {"config.json": b'{"model_type": "bert", "hidden_size": 16}\n',
         "tokenizer.json": '{"vocab": {"\u00e9": 0}}'.encode(),
         "generation_config.json": b"{}",
         "sub/vocab.txt": b"[PAD]\n[UNK]\r\nhello\n"}


def _tensors(seed=0):
    return [
        {"embeddings.weight": sample("float32", (40, 16), seed), "embeddings.norm": sample("bfloat16", (16,), seed),
         "position_ids": np.arange(12, dtype=np.int64).reshape(1, 12)},
        {"layer.0.weight": sample("float16", (16, 16), seed + 1), "layer.0.bias": sample("float32", (16,), seed + 1),
         "pooler.weight": sample("float32", (16, 16), seed + 2)},
    ]


def _write_extra(d):
    for name, data in EXTRA.items():
        p = d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def _index_bytes(parts, shard_names) -> bytes:
    wm = {n: s for part, s in zip(parts, shard_names) for n in part}
    total = sum(a.nbytes for part in parts for a in part.values())
    # a key order and spacing of its own: the index must come back byte for byte, not re-serialised
    return (json.dumps({"metadata": {"total_size": total}, "weight_map": dict(sorted(wm.items()))}, indent=2)
            + "\n").encode()


def st_folder(d, seed=0, extra=True):
    d.mkdir()
    parts = _tensors(seed)
    for part, name in zip(parts, SHARDS):
        write_checkpoint(d / name, Checkpoint(tensors=part, metadata={"format": "pt"}), "safetensors")
    (d / "model.safetensors.index.json").write_bytes(_index_bytes(parts, SHARDS))
    if extra:
        _write_extra(d)
    return parts


def all_files(d) -> dict:
    out = {}
    for root, _, files in os.walk(d):
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, d).replace(os.sep, "/")] = open(p, "rb").read()
    return out


def no_leftovers(parent):
    return [p for p in os.listdir(parent) if p.endswith(".part")] == []


def test_safetensors_folder_round_trip(tmp_path):
    src, enc, back = tmp_path / "model", tmp_path / "enc", tmp_path / "back"
    parts = st_folder(src)
    seen = []
    doc = folders.encode_folder(src, enc, progress=lambda label, done, total: seen.append((label, done, total)))
    names = set(all_files(enc))
    assert names == {s + ".nnc" for s in SHARDS} | set(EXTRA) | {"model.safetensors.index.json", "nncodec.index.json"}
    idx = json.loads((enc / "nncodec.index.json").read_text())
    assert idx == doc and idx["nncodec_folder"] == 1 and idx["kind"] == "model"
    (g,) = idx["groups"]
    assert g["index"] == "model.safetensors.index.json" and g["format"] == "safetensors"
    assert g["metadata"] == json.loads((src / "model.safetensors.index.json").read_bytes())["metadata"]
    assert [s["file"] for s in g["shards"]] == list(SHARDS)
    assert g["weight_map"] == {n: s + ".nnc" for part, s in zip(parts, SHARDS) for n in part}
    files = {e["file"]: e for e in idx["files"]}
    assert sorted(files) == sorted(set(EXTRA) | {"model.safetensors.index.json"})
    for name, e in files.items():
        data = (src / name).read_bytes()
        assert e == {"file": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    # progress names each shard, never goes back, and ends at the whole folder's size
    assert {s for s in SHARDS} <= {label for label, _, _ in seen}
    dones = [d for _, d, _ in seen]
    assert dones == sorted(dones) and seen[-1][1] == seen[-1][2] == sum(len(v) for v in all_files(src).values())

    folders.decode_folder(enc, back)
    assert all_files(back) == all_files(src)  # shards, index json and every other file, byte for byte
    for part, s in zip(parts, SHARDS):
        got = read_checkpoint(back / s).tensors
        assert list(got) == list(part)
        for n, v in part.items():
            assert_same(got[n], v)
    assert no_leftovers(tmp_path)


def _bin_folder(d):
    torch = pytest.importorskip("torch")
    d.mkdir()
    names = ("pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin")
    g = torch.Generator().manual_seed(0)
    parts = [{"a.weight": torch.randn(8, 6, generator=g), "a.bias": torch.randn(6, generator=g).half()},
             {"b.weight": torch.randn(6, 4, generator=g).bfloat16(), "b.steps": torch.tensor(7)}]
    for part, n in zip(parts, names):
        torch.save(part, d / n)
    (d / "pytorch_model.bin.index.json").write_bytes(
        _index_bytes([{k: v.numpy() if v.dtype != torch.bfloat16 else v.float().numpy() for k, v in p.items()}
                      for p in parts], names))
    (d / "config.json").write_bytes(EXTRA["config.json"])
    return torch, parts, names


def test_bin_shards_round_trip(tmp_path):
    src, enc, back = tmp_path / "model", tmp_path / "enc", tmp_path / "back"
    torch, parts, names = _bin_folder(src)
    doc = folders.encode_folder(src, enc)
    (g,) = doc["groups"]
    assert g["index"] == "pytorch_model.bin.index.json" and g["format"] == "torch"
    assert sorted(all_files(enc)) == sorted([n + ".nnc" for n in names] + ["config.json", "nncodec.index.json",
                                                                           "pytorch_model.bin.index.json"])
    folders.decode_folder(enc, back)
    orig, got = all_files(src), all_files(back)
    assert sorted(got) == sorted(orig)
    for n in ("config.json", "pytorch_model.bin.index.json"):
        assert got[n] == orig[n]
    for part, n in zip(parts, names):
        loaded = torch.load(back / n, weights_only=True)
        assert list(loaded) == list(part)
        for k, v in part.items():
            assert loaded[k].dtype == v.dtype and torch.equal(loaded[k], v)

    # --format safetensors: the names and index save_pretrained writes for safetensors
    conv = tmp_path / "conv"
    assert main(["decode", "-q", "--format", "safetensors", str(enc), str(conv)]) == 0
    st = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert sorted(all_files(conv)) == sorted(st + ["config.json", "model.safetensors.index.json"])
    index = json.loads((conv / "model.safetensors.index.json").read_bytes())
    assert index["metadata"] == json.loads((src / "pytorch_model.bin.index.json").read_bytes())["metadata"]
    assert index["weight_map"] == {k: s for part, s in zip(parts, st) for k in part}
    for part, s in zip(parts, st):
        ck = read_checkpoint(conv / s)
        assert ck.metadata == {"format": "pt"} and list(ck.tensors) == list(part)
        for k, v in part.items():
            assert_same(ck.tensors[k], v.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
                        if v.dtype == torch.bfloat16 else v.numpy())
    with pytest.raises(UsageError, match="cannot write a npz shard"):
        folders.decode_folder(enc, tmp_path / "npz", format="npz")


@pytest.mark.parametrize("single", ["model.safetensors", "pytorch_model.bin"])
def test_single_file_folder(tmp_path, single):
    src, enc, back = tmp_path / "model", tmp_path / "enc", tmp_path / "back"
    src.mkdir()
    t = {"w": sample("float32", (9, 7)), "b": sample("int8", (7,))}
    write_checkpoint(src / single, Checkpoint(tensors=t), "safetensors" if single.endswith("tensors") else "torch")
    _write_extra(src)
    assert folders.is_model_folder(src) and not folders.is_encoded_folder(src)
    doc = folders.encode_folder(src, enc)
    assert folders.is_encoded_folder(enc) and not folders.is_model_folder(enc)
    (g,) = doc["groups"]
    assert g["index"] is None and g["shards"][0]["file"] == single and set(g["weight_map"]) == set(t)
    folders.decode_folder(enc, back)
    assert sorted(all_files(back)) == sorted(all_files(src))
    for n, v in read_checkpoint(back / single).tensors.items():
        assert_same(v, t[n])


def test_failure_midway_leaves_no_output(tmp_path):
    src = tmp_path / "model"
    st_folder(src)
    good = (src / SHARDS[1]).read_bytes()
    (src / SHARDS[1]).write_bytes(good[: len(good) - 40])  # a cut-off download of the second shard
    with pytest.raises(NNCodecError) as e:
        folders.encode_folder(src, tmp_path / "enc")
    assert SHARDS[1] in str(e.value)
    assert not (tmp_path / "enc").exists() and no_leftovers(tmp_path)

    (src / SHARDS[1]).write_bytes(good)
    folders.encode_folder(src, tmp_path / "enc")
    nnc = tmp_path / "enc" / (SHARDS[1] + ".nnc")
    b = bytearray(nnc.read_bytes())
    b[len(b) // 2] ^= 0xFF  # damage the second shard's .nnc file
    nnc.write_bytes(bytes(b))
    with pytest.raises(CorruptError) as e:
        folders.decode_folder(tmp_path / "enc", tmp_path / "back")
    assert SHARDS[1] in str(e.value)
    assert not (tmp_path / "back").exists() and no_leftovers(tmp_path)

    # a carried file changed after encoding: refused by its recorded SHA-256, naming it
    nnc.write_bytes(bytes(b[: len(b) // 2]) + bytes([b[len(b) // 2] ^ 0xFF]) + bytes(b[len(b) // 2 + 1:]))
    (tmp_path / "enc" / "sub" / "vocab.txt").write_bytes(b"[PAD]\n")
    with pytest.raises(CorruptError, match="vocab.txt: differs from the file that was encoded"):
        folders.decode_folder(tmp_path / "enc", tmp_path / "back")
    assert not (tmp_path / "back").exists() and no_leftovers(tmp_path)


def test_existing_output_refused(tmp_path):
    src = tmp_path / "model"
    st_folder(src)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_bytes(b"mine")
    with pytest.raises(UsageError, match="not empty; choose another path or remove it"):
        folders.encode_folder(src, out)
    assert all_files(out) == {"keep.txt": b"mine"}
    with pytest.raises(UsageError, match="inside the input folder"):
        folders.encode_folder(src, src / "enc")
    empty = tmp_path / "empty"
    empty.mkdir()
    folders.encode_folder(src, empty)  # an empty folder is taken
    assert folders.is_encoded_folder(empty)
    with pytest.raises(UsageError, match="already an nncodec folder"):
        folders.encode_folder(empty, tmp_path / "again")


def test_bad_folders_are_named(tmp_path):
    src = tmp_path / "model"
    st_folder(src)
    (src / SHARDS[0]).unlink()
    with pytest.raises(UsageError, match="incomplete: fetch the missing shard"):
        folders.encode_folder(src, tmp_path / "enc")
    (tmp_path / "none").mkdir()
    with pytest.raises(UsageError, match="no weights found"):
        folders.encode_folder(tmp_path / "none", tmp_path / "enc")

    src2 = tmp_path / "m2"
    st_folder(src2)
    folders.encode_folder(src2, tmp_path / "enc2")
    idx_path = tmp_path / "enc2" / "nncodec.index.json"
    idx = json.loads(idx_path.read_text())
    idx["groups"][0]["shards"][0]["file"] = "../escape.safetensors"
    idx_path.write_text(json.dumps(idx))
    with pytest.raises(CorruptError, match="not a plain relative path"):
        folders.decode_folder(tmp_path / "enc2", tmp_path / "back")
    assert not (tmp_path / "escape.safetensors").exists() and not (tmp_path / "back").exists()
    idx["groups"][0]["shards"][0]["file"] = SHARDS[0]
    idx["nncodec_folder"] = 2
    idx_path.write_text(json.dumps(idx))
    with pytest.raises(UnsupportedError, match="newer nncodec"):
        folders.decode_folder(tmp_path / "enc2", tmp_path / "back")
    idx["nncodec_folder"] = 0
    idx_path.write_text(json.dumps(idx))
    with pytest.raises(CorruptError, match="start at 1"):
        folders.decode_folder(tmp_path / "enc2", tmp_path / "back")


def test_cli_on_folders(tmp_path, capsys):
    src, enc, back = tmp_path / "model", tmp_path / "enc", tmp_path / "back"
    parts = st_folder(src)
    assert main(["encode", str(src), str(enc)]) == 0
    assert "2 shards" in capsys.readouterr().out
    assert main(["info", str(enc)]) == 0
    out = capsys.readouterr().out
    assert SHARDS[0] in out and SHARDS[1] in out and "(total)" in out
    assert main(["info", "--json", str(enc)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [s["file"] for s in info["shards"]] == list(SHARDS)
    assert info["total"]["tensors"] == sum(len(p) for p in parts)
    assert main(["decode", "-q", str(enc), str(back)]) == 0
    assert all_files(back) == all_files(src)

    assert main(["compare", "--json", str(src), str(enc)]) == 0
    cmp = json.loads(capsys.readouterr().out)
    assert cmp["overall"]["exact"] and [s["file"] for s in cmp["shards"]] == list(SHARDS)
    assert [t["name"] for t in cmp["shards"][1]["tensors"]] == list(parts[1])
    assert not cmp["only_in_a"] and not cmp["only_in_b"]
    assert sorted(cmp["files"]["same"]) == sorted(set(EXTRA) | {"model.safetensors.index.json"})
    assert not cmp["files"]["differ"] and not cmp["files"]["only_in_a"] and not cmp["files"]["only_in_b"]

    # a fine-tune changing the second shard only, with a new config
    new = tmp_path / "new"
    st_folder(new)
    changed = dict(parts[1], **{"layer.0.bias": parts[1]["layer.0.bias"] + np.float32(0.5)})
    write_checkpoint(new / SHARDS[1], Checkpoint(tensors=changed, metadata={"format": "pt"}), "safetensors")
    (new / "config.json").write_bytes(b'{"model_type": "bert", "finetuned": true}\n')
    assert main(["compare", str(src), str(new)]) == 0
    text = capsys.readouterr().out
    assert "layer.0.bias" in text and SHARDS[1] in text
    assert "other files: 4 identical; differ: config.json" in text

    upd, patched = tmp_path / "upd", tmp_path / "patched"
    assert main(["diff", "-q", str(src), str(new), str(upd)]) == 0
    assert json.loads((upd / "nncodec.index.json").read_text())["kind"] == "update"
    assert main(["info", str(upd)]) == 0
    assert "update folder" in capsys.readouterr().out
    assert main(["patch", "-q", str(enc), str(upd), str(patched)]) == 0  # the base may be an encoded folder
    assert all_files(patched) == all_files(new)

    # an update applied to another base is refused, naming the shard, and writes nothing
    other = tmp_path / "other"
    st_folder(other, seed=5, extra=False)
    capsys.readouterr()
    assert main(["patch", str(other), str(upd), str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert "SHA-256" in err and SHARDS[0] in err
    assert not (tmp_path / "x").exists() and no_leftovers(tmp_path)
    with pytest.raises(BaseMismatchError):
        folders.patch_folders(other, upd, tmp_path / "x")

    # usage errors: a folder with a file, decode of a model folder, an update given to decode
    assert main(["compare", str(src), str(src / SHARDS[0])]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["decode", str(src), str(tmp_path / "y")]) == 2
    assert "encode it with nncodec encode first" in capsys.readouterr().err
    assert main(["decode", str(upd), str(tmp_path / "y")]) == 2
    assert "nncodec patch" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["safetensors", "bin"])
def test_transformers_loads_decoded_folder(tmp_path, kind):
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=500, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=128, max_position_embeddings=64)
    model = transformers.BertModel(cfg).eval()
    src, enc, back = tmp_path / "model", tmp_path / "enc", tmp_path / "back"
    if kind == "safetensors":
        model.save_pretrained(src, max_shard_size="200KB")
        assert (src / "model.safetensors.index.json").exists()  # sharded
    else:  # the layout save_pretrained wrote before safetensors: pytorch_model-0000N-of-0000M.bin + index
        cfg.save_pretrained(src)
        sd = model.state_dict()
        names = list(sd)
        files = ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"]
        wm = {}
        for f, part in zip(files, (names[: len(names) // 2], names[len(names) // 2:])):
            torch.save({n: sd[n].clone() for n in part}, src / f)
            wm.update({n: f for n in part})
        total = sum(v.numel() * v.element_size() for v in sd.values())
        (src / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                      "weight_map": wm}, indent=2))
    folders.encode_folder(src, enc)
    folders.decode_folder(enc, back)
    if kind == "safetensors":
        assert all_files(back) == all_files(src)
    outs = [back]
    if kind == "bin":
        folders.decode_folder(enc, tmp_path / "conv", format="safetensors")
        outs.append(tmp_path / "conv")
    x = torch.randint(0, 500, (2, 9), generator=torch.Generator().manual_seed(1))
    for out in outs:
        loaded = transformers.BertModel.from_pretrained(out).eval()
        with torch.no_grad():
            assert torch.equal(model(x).last_hidden_state, loaded(x).last_hidden_state)



def test_lossy_folder_and_output_names(tmp_path, capsys):
    src, enc, back = tmp_path / "model", tmp_path / "enc", tmp_path / "back"
    parts = st_folder(src)
    rng = np.random.default_rng(1)
    for part, name in zip(parts, SHARDS):  # finite weights: quantizers refuse NaN and inf
        for n, v in part.items():
            if v.dtype.kind == "f" or n == "embeddings.norm":
                part[n] = (rng.standard_normal(v.shape) * 0.05).astype(v.dtype)
        write_checkpoint(src / name, Checkpoint(tensors=part, metadata={"format": "pt"}), "safetensors")
    # shards of 656 float parameters: --bits 4 (328 bytes a shard) is below what the container takes
    assert main(["encode", "-q", str(src), str(enc), "--snr", "30", "--lossy", "*.weight"]) == 0
    info = folders.folder_info(enc)
    assert info["total"]["lossy"] >= 2 and info["total"]["nnc_bytes"] < info["total"]["source_bytes"]
    assert main(["decode", "-q", str(enc), str(back)]) == 0
    shards, overall, _, _ = folders.compare_folders(src, back)
    assert not overall.exact and 10 < overall.snr_db < 80
    got = read_checkpoint(back / SHARDS[0]).tensors
    assert_same(got["position_ids"], parts[0]["position_ids"])  # integers stay exact
    assert (back / "sub" / "vocab.txt").read_bytes() == EXTRA["sub/vocab.txt"]
    capsys.readouterr()
    assert main(["encode", str(src), str(tmp_path / "m.nnc")]) == 2
    assert "encodes to a folder" in capsys.readouterr().err
    assert main(["decode", str(enc), str(tmp_path / "m.safetensors")]) == 2
    assert "decodes to a folder" in capsys.readouterr().err
    assert main(["encode", "--format", "torch", str(src), str(tmp_path / "z")]) == 2
    assert not any((tmp_path / n).exists() for n in ("m.nnc", "m.safetensors", "z")) and no_leftovers(tmp_path)


def test_two_weight_sets_links_and_git(tmp_path):
    torch = pytest.importorskip("torch")
    blobs, src, enc, back = tmp_path / "blobs", tmp_path / "snap", tmp_path / "enc", tmp_path / "back"
    blobs.mkdir()
    src.mkdir()
    t = {"w": sample("float32", (6, 5)), "b": sample("float32", (5,))}
    write_checkpoint(blobs / "st", Checkpoint(tensors=t, metadata={"format": "pt"}), "safetensors")
    torch.save({k: torch.from_numpy(v.copy()) for k, v in t.items()}, blobs / "pt")
    (blobs / "cfg").write_bytes(EXTRA["config.json"])
    for name, blob in (("model.safetensors", "st"), ("pytorch_model.bin", "pt"), ("config.json", "cfg")):
        os.symlink(blobs / blob, src / name)  # a Hub cache snapshot is made of links
    (src / ".git").mkdir()
    (src / ".git" / "HEAD").write_bytes(b"ref: refs/heads/main\n")
    doc = folders.encode_folder(src, enc)
    assert [g["shards"][0]["file"] for g in doc["groups"]] == ["model.safetensors", "pytorch_model.bin"]
    assert [g["format"] for g in doc["groups"]] == ["safetensors", "torch"]
    assert not (enc / ".git").exists() and not os.path.islink(enc / "config.json")
    folders.decode_folder(enc, back)
    got = all_files(back)
    assert sorted(got) == ["config.json", "model.safetensors", "pytorch_model.bin"]
    assert got["config.json"] == EXTRA["config.json"] and got["model.safetensors"] == (blobs / "st").read_bytes()
    shards, overall, only_a, only_b = folders.compare_folders(src, back)
    assert [f for f, _ in shards] == ["model.safetensors", "pytorch_model.bin"]
    assert overall.exact and all(len(ds) == 2 for _, ds in shards) and not only_a and not only_b


def test_decode_copies_only_listed_files(tmp_path):
    src, enc, back = tmp_path / "model", tmp_path / "enc", tmp_path / "back"
    st_folder(src)
    (src / "empty.index.json").write_bytes(b'{"weight_map": {}}')  # not an index of weights: carried
    folders.encode_folder(src, enc)
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"local only")
    os.symlink(secret, enc / "planted.txt")  # a link added to a downloaded encoded folder
    (enc / "notes.md").write_bytes(b"added later")
    folders.decode_folder(enc, back)
    assert all_files(back) == all_files(src)
    (enc / "config.json").unlink()
    with pytest.raises(CorruptError, match="'config.json' is listed in nncodec.index.json but missing"):
        folders.decode_folder(enc, tmp_path / "back2")


def _hostile(idx):
    g = idx["groups"][0]
    s0 = g["shards"][0]
    yield "not an object", []
    yield "no version", {k: v for k, v in idx.items() if k != "nncodec_folder"}
    yield "version a string", dict(idx, nncodec_folder="1")
    yield "unknown kind", dict(idx, kind="weights")
    yield "groups empty", dict(idx, groups=[])
    yield "group not an object", dict(idx, groups=[7])
    yield "format unknown", dict(idx, groups=[dict(g, format="pickle")])
    yield "shards not a list", dict(idx, groups=[dict(g, shards={"a": 1})])
    yield "negative size", dict(idx, groups=[dict(g, shards=[dict(s0, bytes=-1)] + g["shards"][1:])])
    yield "size a float", dict(idx, groups=[dict(g, shards=[dict(s0, bytes=1.5)] + g["shards"][1:])])
    yield "absolute path", dict(idx, groups=[dict(g, shards=[dict(s0, file="/etc/x")] + g["shards"][1:])])
    yield "backslash", dict(idx, groups=[dict(g, shards=[dict(s0, nnc="..\\x.nnc")] + g["shards"][1:])])
    yield "nnc suffix", dict(idx, groups=[dict(g, shards=[dict(s0, nnc="x.bin")] + g["shards"][1:])])
    yield "same file twice", dict(idx, groups=[dict(g, shards=[s0, s0])])
    yield "file and folder", dict(idx, files=idx["files"] + [dict(idx["files"][0], file=s0["file"] + "/x")])
    yield "weight_map elsewhere", dict(idx, groups=[dict(g, weight_map={"w": "other.nnc"})])
    yield "weight_map a list value", dict(idx, groups=[dict(g, weight_map={"w": [1]})])
    yield "files not a list", dict(idx, files="config.json")
    yield "files entry without hash", dict(idx, files=[{"file": "config.json", "bytes": 3}])
    yield "hash upper case", dict(idx, files=[dict(idx["files"][0], sha256="A" * 64)])
    yield "removed not a list", dict(idx, groups=[dict(g, removed="w")])


def test_hostile_folder_index_is_refused(tmp_path):
    src, enc = tmp_path / "model", tmp_path / "enc"
    st_folder(src)
    folders.encode_folder(src, enc)
    path = enc / "nncodec.index.json"
    idx = json.loads(path.read_text())
    for i, (what, doc) in enumerate(_hostile(idx)):
        path.write_text(json.dumps(doc))
        with pytest.raises(CorruptError, match="nncodec.index.json: .*(re-encode the folder|relative path)"):
            folders.decode_folder(enc, tmp_path / f"back{i}")
        assert not (tmp_path / f"back{i}").exists(), what
    path.write_bytes(b'{"nncodec_folder": 1, "nncodec_folder": 1}')
    with pytest.raises(CorruptError, match="duplicate key"):
        folders.read_folder_index(enc)
    path.write_bytes(b"[" * 100000)
    with pytest.raises(CorruptError, match="not valid JSON"):
        folders.read_folder_index(enc)
    assert no_leftovers(tmp_path)
