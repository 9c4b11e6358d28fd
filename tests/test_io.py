"""safetensors and npz readers/writers, encode_file/decode_file and format choice."""

import json
import os

import numpy as np
import pytest

import nncodec
from nncodec import dtypes
from nncodec.io import Checkpoint, detect_format, read_checkpoint, write_checkpoint

from helpers import assert_same, sample

ST_DTYPES = ["float32", "float16", "bfloat16", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"]


def _tensors():
    t = {f"{d}.w": sample(d, (13, 7), seed=i) for i, d in enumerate(ST_DTYPES)}
    t["scalar"] = np.array(2.5, np.float32)
    t["empty"] = np.zeros((0, 4), np.float32)
    return t


def test_safetensors_library_reads_and_writes_ours(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    t = _tensors()
    t.pop("bfloat16.w")  # safetensors.numpy has no bfloat16; covered by the torch test below
    src = tmp_path / "in.safetensors"
    st.save_file(t, str(src), metadata={"author": "me"})
    ck = read_checkpoint(src)
    assert ck.metadata == {"author": "me"}
    for n, a in t.items():
        assert_same(ck.tensors[n], a)
    nnc = tmp_path / "m.nnc"
    nncodec.encode_file(src, nnc)
    out = tmp_path / "out.safetensors"
    assert nncodec.decode_file(nnc, out) == "safetensors"
    back = st.load_file(str(out))
    assert set(back) == set(t)
    for n, a in t.items():
        assert_same(back[n], a)
    with open(out, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        assert json.loads(f.read(n))["__metadata__"] == {"author": "me"}


def test_safetensors_bf16_with_torch(tmp_path):
    torch = pytest.importorskip("torch")
    stt = pytest.importorskip("safetensors.torch")
    t = {"a": torch.randn(33, 5).to(torch.bfloat16), "b": torch.randn(4).half(), "c": torch.arange(5)}
    src = tmp_path / "in.safetensors"
    stt.save_file(t, str(src))
    nnc = tmp_path / "m.nnc"
    nncodec.encode_file(src, nnc)
    out = tmp_path / "out.safetensors"
    nncodec.decode_file(nnc, out)
    back = stt.load_file(str(out))
    for n in t:
        assert back[n].dtype == t[n].dtype and torch.equal(back[n], t[n])


def test_npz_roundtrip_all_dtypes(tmp_path):
    t = _tensors()
    t["uint64"] = sample("uint64", (9,))
    p = tmp_path / "a.npz"
    write_checkpoint(p, Checkpoint(tensors=t), "npz")
    with np.load(p) as z:  # NumPy reads what we write
        assert_same(z["float32.w"], t["float32.w"])
    ck = read_checkpoint(p)
    for n, a in t.items():
        assert_same(ck.tensors[n], a)
    nnc = tmp_path / "a.nnc"
    nncodec.encode_file(p, nnc)
    out = tmp_path / "b.npz"
    nncodec.decode_file(nnc, out)
    ck2 = read_checkpoint(out)
    assert list(ck2.tensors) == list(t)
    for n, a in t.items():
        assert_same(ck2.tensors[n], a)


def test_npz_written_by_numpy_with_awkward_names(tmp_path):
    p = tmp_path / "np.npz"
    t = {"file": np.arange(3), "allow_pickle": np.ones(2), "a/b.c": np.zeros((2, 2), np.float16)}
    with open(p, "wb") as f:
        np.savez(f, **{k: v for k, v in t.items() if k not in ("file", "allow_pickle")})
    ck = read_checkpoint(p)
    assert_same(ck.tensors["a/b.c"], t["a/b.c"])
    write_checkpoint(tmp_path / "w.npz", Checkpoint(tensors=t), "npz")
    ck = read_checkpoint(tmp_path / "w.npz")
    assert set(ck.tensors) == set(t)


def test_npz_object_arrays_refused(tmp_path):
    p = tmp_path / "obj.npz"
    np.savez(p, a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(nncodec.UnsupportedError, match="pickled"):
        read_checkpoint(p)


def test_output_format_rules(tmp_path):
    from nncodec.files import output_format

    assert output_format("x.safetensors", "torch", None) == "safetensors"
    assert output_format("x.pt", "torch-legacy", None) == "torch-legacy"
    assert output_format("x.bin", "safetensors", None) == "torch"
    assert output_format("x.weights", "npz", None) == "npz"
    assert output_format("x.weights", "npz", "safetensors") == "safetensors"
    with pytest.raises(nncodec.UsageError):
        output_format("x.weights", None, None)
    with pytest.raises(nncodec.UsageError):
        output_format("x.nnc", "npz", None)


def test_detect_format_by_content(tmp_path):
    p = tmp_path / "model.bin"  # extension lies: it is an npz
    write_checkpoint(p, Checkpoint(tensors={"a": np.ones(2)}), "npz")
    assert detect_format(p) == "npz"
    q = tmp_path / "junk.pt"
    q.write_bytes(b"not a checkpoint at all")
    with pytest.raises(nncodec.UsageError, match="unrecognised"):
        detect_format(q)


@pytest.mark.parametrize("damage", ["truncate", "hole", "overlap", "bigheader", "badjson", "badshape"])
def test_hostile_safetensors(tmp_path, damage):
    p = tmp_path / "x.safetensors"
    write_checkpoint(p, Checkpoint(tensors={"a": np.ones(4, np.float32), "b": np.ones(2, np.float32)}), "safetensors")
    raw = bytearray(p.read_bytes())
    n = int.from_bytes(raw[:8], "little")
    h = json.loads(raw[8:8 + n])
    if damage == "truncate":
        raw = raw[:-3]
    elif damage == "bigheader":
        raw[:8] = (1 << 62).to_bytes(8, "little")
    elif damage == "badjson":
        raw[8] = ord("[")
    else:
        if damage == "hole":
            h["b"]["data_offsets"] = [20, 28]
        elif damage == "overlap":
            h["b"]["data_offsets"] = [8, 16]
        elif damage == "badshape":
            h["a"]["shape"] = [-4]
        hb = json.dumps(h).encode()
        hb += b" " * (n - len(hb))
        raw[8:8 + n] = hb[:n]
    p.write_bytes(raw)
    with pytest.raises(nncodec.NNCodecError):
        read_checkpoint(p)


def test_encode_never_touches_input_and_refuses_same_path(tmp_path):
    p = tmp_path / "a.npz"
    write_checkpoint(p, Checkpoint(tensors={"a": np.ones(4)}), "npz")
    before = p.read_bytes()
    with pytest.raises(nncodec.UsageError, match="same file"):
        nncodec.encode_file(p, p)
    assert p.read_bytes() == before
    nncodec.encode_file(p, tmp_path / "x.nnc")
    with pytest.raises(nncodec.UsageError, match="already an nncodec"):
        nncodec.encode_file(tmp_path / "x.nnc", tmp_path / "y.nnc")
    assert not (tmp_path / "y.nnc").exists()


def test_failed_decode_leaves_no_output(tmp_path):
    p = tmp_path / "a.npz"
    write_checkpoint(p, Checkpoint(tensors={"a": sample("float32", (64, 64))}), "npz")
    nnc = tmp_path / "a.nnc"
    nncodec.encode_file(p, nnc)
    data = bytearray(nnc.read_bytes())
    data[len(data) // 2] ^= 0xFF
    nnc.write_bytes(data)
    out = tmp_path / "out.npz"
    out.write_bytes(b"precious")
    with pytest.raises(nncodec.CorruptError):
        nncodec.decode_file(nnc, out)
    assert out.read_bytes() == b"precious"
    assert sorted(os.listdir(tmp_path)) == ["a.nnc", "a.npz", "out.npz"]
