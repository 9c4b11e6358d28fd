"""PyTorch checkpoint reader/writer (nncodec.io.torch): no torch import, no pickle code run."""

from __future__ import annotations

import collections
import hashlib
import io
import json
import math
import os
import pickle
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from nncodec import dtypes
from nncodec.errors import (
    CorruptError,
    FormatError,
    LimitError,
    NNCodecError,
    TruncatedError,
    UnsafePickleError,
    UnsupportedError,
    UsageError,
)
from nncodec.format.constants import DEFAULT_LIMITS
from nncodec.io import Checkpoint, detect_format
from nncodec.io import torch as nt
from nncodec.io._pickle import PickleWriter

from helpers import assert_same, sample

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
PNET = os.path.join(FIXTURES, "mtcnn_pnet.pt")

# sha256 (first 16 hex digits) of each tensor's C-order float32 bytes, as torch.load returns them
PNET_EXPECTED = {
    "features.conv1.weight": ((10, 3, 3, 3), "5b5127d88290a180"),
    "features.conv1.bias": ((10,), "83fd809228678b04"),
    "features.prelu1.weight": ((10,), "45adbefa01108f18"),
    "features.conv2.weight": ((16, 10, 3, 3), "b85e783a5f632a12"),
    "features.conv2.bias": ((16,), "72bd983207b4b5c5"),
    "features.prelu2.weight": ((16,), "6540801da4f97819"),
    "features.conv3.weight": ((32, 16, 3, 3), "9d5aae6ca2dbba98"),
    "features.conv3.bias": ((32,), "dd636cec55f59b36"),
    "features.prelu3.weight": ((32,), "6465b2b6d0df8df6"),
    "conv4_1.weight": ((2, 32, 1, 1), "f745afb4a8007397"),
    "conv4_1.bias": ((2,), "575f7af6d2ed0b63"),
    "conv4_2.weight": ((4, 32, 1, 1), "d72b47f2c3d67d19"),
    "conv4_2.bias": ((4,), "7376962a9927027d"),
}

LEGACY_DTYPES = ["float32", "float16", "bfloat16", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"]
NEW_DTYPES = ["uint16", "uint32", "uint64", "float8_e4m3fn", "float8_e5m2"]
FORMATS = ["torch", "torch-legacy"]


def read(path, **kw):
    return nt.read(path, limits=DEFAULT_LIMITS.replace(**kw) if kw else DEFAULT_LIMITS)


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def torch_save(torch, obj, path, fmt):
    torch.save(obj, str(path), _use_new_zipfile_serialization=(fmt == "torch"))


def to_numpy(t):
    """A torch tensor's values as a little-endian NumPy array of the same nncodec dtype (bit-exact)."""
    import torch

    name = str(t.dtype).removeprefix("torch.")
    raw = t.detach().contiguous().reshape(-1).view(torch.uint8)  # raw bytes, whatever the dtype
    return np.frombuffer(raw.numpy().tobytes(), dtype=dtypes.to_numpy(name)).reshape(tuple(t.shape))


def same(a, b) -> bool:
    """Structural equality of loaded checkpoints: types, NaN bit patterns and tensors included."""
    import torch

    if type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        return (a.dtype == b.dtype and a.shape == b.shape and a.requires_grad == b.requires_grad
                and to_numpy(a).tobytes() == to_numpy(b).tobytes())
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a) and (
            getattr(a, "__dict__", {}) == getattr(b, "__dict__", {})
        )
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


# ----------------------------------------------------------------------------------------------
# the real-data fixture (legacy format, torch 1.6)


def test_fixture_reads_without_torch_to_known_values():
    ck = read(PNET)
    assert ck.metadata["nncodec.source_format"] == "torch-legacy"
    assert list(ck.tensors) == list(PNET_EXPECTED) and not ck.aliases
    for name, (shape, digest) in PNET_EXPECTED.items():
        a = ck.tensors[name]
        assert a.dtype == np.dtype("<f4") and a.shape == shape and a.flags.c_contiguous
        assert hashlib.sha256(a.tobytes()).hexdigest()[:16] == digest, name
    structure = json.loads(ck.metadata[nt.STRUCTURE_KEY])
    root = structure["root"]
    assert structure["v"] == 1 and root["t"] == "odict"
    assert [k for k, _ in root["items"]] == list(PNET_EXPECTED)
    # state_dict()._metadata (module versions) is kept as an attribute of the OrderedDict
    md = root["attrs"]["_metadata"]
    assert md["t"] == "odict" and md["items"][0][0] == ""


def test_fixture_matches_torch(torch):
    ck = read(PNET)
    ref = torch.load(PNET, weights_only=True)
    assert list(ref) == list(ck.tensors)
    for name, t in ref.items():
        assert_same(ck.tensors[name], to_numpy(t))


@pytest.mark.parametrize("fmt", FORMATS)
def test_fixture_written_back_loads_in_torch(torch, tmp_path, fmt):
    ck = read(PNET)
    out = tmp_path / "pnet.pt"
    nt.write(out, ck, format=fmt)
    assert detect_format(out) == fmt
    ref = torch.load(PNET, weights_only=True)
    back = torch.load(out, weights_only=True)
    assert type(back) is collections.OrderedDict and same(back, ref)
    assert back._metadata == ref._metadata


def test_reading_does_not_import_torch(tmp_path):
    # a zip checkpoint written by nncodec itself, so this test needs no torch either
    zpath = tmp_path / "z.pt"
    nt.write(zpath, Checkpoint(tensors={"w": sample("bfloat16", (3, 4))}), format="torch")
    code = (
        "import sys\n"
        "from nncodec.io import read_checkpoint\n"
        f"a = read_checkpoint({PNET!r})\n"
        f"b = read_checkpoint({str(zpath)!r})\n"
        "assert len(a.tensors) == 13 and b.tensors['w'].shape == (3, 4)\n"
        "print('torch' in sys.modules, sorted(m for m in sys.modules if m.startswith('torch')))\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True)
    assert res.stdout.strip() == "False []", res.stdout + res.stderr


# ----------------------------------------------------------------------------------------------
# round trips through real torch


def _torch_tensor(torch, dt, shape, seed=0):
    return torch.from_numpy(sample(dt, shape, seed=seed).view(dtypes.uint_view(dt))).view(getattr(torch, dt))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dt", LEGACY_DTYPES + NEW_DTYPES)
def test_dtype_round_trip_with_torch(torch, tmp_path, fmt, dt):
    if fmt == "torch-legacy" and dt in NEW_DTYPES:
        pytest.skip("torch cannot save these dtypes in the legacy format")
    sd = {
        "w": _torch_tensor(torch, dt, (13, 7)),
        "scalar": _torch_tensor(torch, dt, (1,), seed=1).reshape(()),
        "empty": _torch_tensor(torch, dt, (0, 3)),
        "vec": _torch_tensor(torch, dt, (5,), seed=2),
    }
    src = tmp_path / "src.pt"
    torch_save(torch, sd, src, fmt)
    ck = read(src)
    assert ck.metadata["nncodec.source_format"] == fmt
    for name, t in sd.items():
        assert dtypes.from_numpy(ck.tensors[name].dtype) == dt
        assert_same(ck.tensors[name], to_numpy(t))
    for out_fmt in FORMATS if dt not in NEW_DTYPES else ["torch"]:
        out = tmp_path / f"out-{out_fmt}.pt"
        nt.write(out, ck, format=out_fmt)
        back = torch.load(out, weights_only=True)
        assert type(back) is dict and list(back) == list(sd)
        for name, t in sd.items():
            assert back[name].dtype == t.dtype and back[name].shape == t.shape
            assert to_numpy(back[name]).tobytes() == to_numpy(t).tobytes(), name


@pytest.mark.parametrize("fmt", FORMATS)
def test_non_contiguous_views_saved_by_torch(torch, tmp_path, fmt):
    base = torch.arange(60, dtype=torch.float32).reshape(6, 10)
    sd = {
        "transposed": base.t(),  # strides (1, 10)
        "slice": base[2:4, 3:8],  # offset 23 into a 60-element storage
        "narrow": base.view(-1)[7:19],
        "expanded": torch.arange(3, dtype=torch.int16).reshape(3, 1).expand(3, 4),  # stride 0
        "every_other": base[:, ::2],
    }
    src = tmp_path / "views.pt"
    torch_save(torch, sd, src, fmt)
    ck = read(src)
    assert not ck.aliases
    for name, t in sd.items():
        a = ck.tensors[name]
        assert a.flags.c_contiguous
        assert_same(a, to_numpy(t))
    out = tmp_path / "out.pt"
    nt.write(out, ck, format=fmt)
    back = torch.load(out, weights_only=True)
    for name, t in sd.items():
        assert torch.equal(back[name], t) and back[name].is_contiguous()


@pytest.mark.parametrize("fmt", FORMATS)
def test_tied_weights_become_aliases_and_share_storage_again(torch, tmp_path, fmt):
    emb = torch.nn.Embedding(11, 4)
    head = torch.nn.Linear(4, 11, bias=False)
    head.weight = emb.weight  # tied, as in language models
    model = torch.nn.ModuleDict({"emb": emb, "head": head})
    src = tmp_path / "tied.pt"
    torch_save(torch, {"model": model.state_dict(), "step": 7}, src, fmt)
    ck = read(src)
    assert list(ck.tensors) == ["emb.weight"] and ck.aliases == {"head.weight": "emb.weight"}
    assert ck.names() == ["emb.weight", "head.weight"]
    out = tmp_path / "out.pt"
    nt.write(out, ck, format=fmt)
    back = torch.load(out, weights_only=True)
    a, b = back["model"]["emb.weight"], back["model"]["head.weight"]
    assert torch.equal(a, emb.weight.detach()) and torch.equal(b, a)
    assert a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
    assert back["step"] == 7


@pytest.mark.parametrize("fmt", FORMATS)
def test_nested_structure_round_trip(torch, tmp_path, fmt):
    od = collections.OrderedDict([("b", 1), ("a", [1.5, -0.0])])
    obj = {
        "state_dict": collections.OrderedDict(
            [("layer.weight", torch.randn(3, 2)), ("layer.bias", torch.zeros(3, dtype=torch.float64))]
        ),
        "epoch": 3,
        "optimizer": {
            "lr": 0.1,
            "betas": (0.9, 0.999),
            "nan": float("nan"),
            "ninf": float("-inf"),
            "name": "adam \u00e9\U0001f600",
            "none": None,
            "flags": [True, False],
            "raw": b"\x00\xff\x80",
            "empty_raw": b"",
            "big": 2**80,
            "neg": -(2**40),
            "od": od,
            "dtype": torch.float16,
            7: "int key",
            (1, "x"): "tuple key",
            "nested": [[[]], ()],
            "tags": {"a", "b"},
        },
    }
    src = tmp_path / "nested.pt"
    torch_save(torch, obj, src, fmt)
    ck = read(src)
    # all tensors under the one "state_dict" key: it is dropped from the names
    assert list(ck.tensors) == ["layer.weight", "layer.bias"]
    json.loads(ck.metadata[nt.STRUCTURE_KEY])  # strict JSON: NaN is encoded, not emitted
    assert "NaN" not in ck.metadata[nt.STRUCTURE_KEY]
    out = tmp_path / "out.pt"
    nt.write(out, ck, format=fmt)
    back = torch.load(out, weights_only=True)
    assert same(back, obj)
    assert type(back["state_dict"]) is collections.OrderedDict


def test_names_keep_top_level_keys_when_tensors_sit_under_several(torch, tmp_path):
    obj = {"model": {"w": torch.ones(2)}, "ema": {"w": torch.zeros(2)}, "layers": [torch.ones(1), torch.ones(3)]}
    src = tmp_path / "m.pt"
    torch.save(obj, str(src))
    ck = read(src)
    assert list(ck.tensors) == ["model.w", "ema.w", "layers.0", "layers.1"]
    nt.write(tmp_path / "o.pt", ck, format="torch")
    assert same(torch.load(tmp_path / "o.pt", weights_only=True), obj)


def test_bare_tensor_and_list_of_tensors(torch, tmp_path):
    torch.save(torch.arange(4), str(tmp_path / "t.pt"))
    ck = read(tmp_path / "t.pt")
    assert list(ck.tensors) == ["tensor"]
    nt.write(tmp_path / "t2.pt", ck, format="torch")
    assert torch.equal(torch.load(tmp_path / "t2.pt", weights_only=True), torch.arange(4))

    seq = (torch.ones(2), [torch.zeros(1, dtype=torch.int8)])
    torch.save(seq, str(tmp_path / "s.pt"))
    ck = read(tmp_path / "s.pt")
    assert list(ck.tensors) == ["0", "1.0"]
    nt.write(tmp_path / "s2.pt", ck, format="torch-legacy")
    assert same(torch.load(tmp_path / "s2.pt", weights_only=True), seq)


def test_parameters_and_requires_grad_are_kept(torch, tmp_path):
    lin = torch.nn.Linear(3, 2)
    obj = {"params": dict(lin.named_parameters()), "frozen": torch.nn.Parameter(torch.ones(2), requires_grad=False),
           "grad": torch.ones(2, requires_grad=True)}
    torch.save(obj, str(tmp_path / "p.pt"))
    ck = read(tmp_path / "p.pt")
    nt.write(tmp_path / "p2.pt", ck, format="torch")
    back = torch.load(tmp_path / "p2.pt", weights_only=True)
    assert isinstance(back["params"]["weight"], torch.nn.Parameter) and back["params"]["weight"].requires_grad
    assert isinstance(back["frozen"], torch.nn.Parameter) and not back["frozen"].requires_grad
    assert not isinstance(back["grad"], torch.nn.Parameter) and back["grad"].requires_grad
    assert torch.equal(back["params"]["weight"], lin.weight)


def test_shared_and_self_containing_containers(torch, tmp_path):
    shared = {"lr": 0.5}
    loop = [1]
    loop.append(loop)
    obj = {"w": torch.ones(2), "a": shared, "b": shared, "loop": loop}
    torch.save(obj, str(tmp_path / "s.pt"))
    ck = read(tmp_path / "s.pt")
    nt.write(tmp_path / "s2.pt", ck, format="torch")
    back = torch.load(tmp_path / "s2.pt", weights_only=True)
    assert back["a"] is back["b"] and back["a"] == shared
    assert back["loop"][0] == 1 and back["loop"][1] is back["loop"]


def test_big_endian_archive_is_byte_swapped(torch, tmp_path):
    sd = {
        "f32": torch.randn(5, 3),
        "bf16": torch.randn(7).to(torch.bfloat16),
        "i64": torch.arange(-3, 3),
        "u8": torch.arange(4, dtype=torch.uint8),
        "t": torch.randn(4, 6).t(),
        "u16": torch.arange(5, dtype=torch.int32).to(torch.uint16),
    }
    little = tmp_path / "little.pt"
    torch.save(sd, str(little))
    # rewrite as a big-endian machine would have saved it: byteorder "big", storages swapped
    itemsizes = {f"data/{i}": t.element_size() for i, t in enumerate(sd.values())}
    big = tmp_path / "big.pt"
    with zipfile.ZipFile(little) as zin, zipfile.ZipFile(big, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            rel = info.filename.split("/", 1)[1]
            if rel == "byteorder":
                data = b"big"
            elif rel in itemsizes and itemsizes[rel] > 1:
                n = itemsizes[rel]
                data = np.frombuffer(data, dtype=f"<u{n}").astype(f">u{n}").tobytes()
            zout.writestr(info.filename, data)
    ck = read(big)
    for name, t in sd.items():
        assert_same(ck.tensors[name], to_numpy(t))
    # torch agrees on the swap, except for dtypes stored as untyped storage (uint16 here),
    # which torch.load leaves unswapped
    for name, t in torch.load(big, weights_only=True).items():
        assert torch.equal(t, sd[name]) == (name != "u16"), name


@pytest.mark.parametrize("fmt", FORMATS)
def test_unsupported_torch_dtype_names_the_tensor(torch, tmp_path, fmt):
    path = tmp_path / "c.pt"
    torch_save(torch, {"ok": torch.ones(2), "z": torch.ones(3, dtype=torch.complex128)}, path, fmt)
    with pytest.raises(UnsupportedError, match=r"tensor 'z'.*complex128"):
        read(path)


def test_zip_layout_alignment_and_mmap(torch, tmp_path):
    ck = Checkpoint(tensors={"a": sample("float32", (3, 3)), "b": sample("int8", (5,)), "c": sample("float16", (2,))})
    out = tmp_path / "o.pt"
    nt.write(out, ck, format="torch")
    raw = out.read_bytes()
    with zipfile.ZipFile(out) as z:
        assert z.testzip() is None
        for info in z.infolist():
            assert info.compress_type == zipfile.ZIP_STORED and info.filename.startswith("archive/")
            n, m = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
            assert (info.header_offset + 30 + n + m) % nt.ZIP_ALIGN == 0
    back = torch.load(out, weights_only=True, mmap=True)
    for name, a in ck.tensors.items():
        assert_same(to_numpy(back[name]), a)


def test_zip64_fields_are_readable(tmp_path, monkeypatch):
    from nncodec.io.torch import writer as torch_write

    monkeypatch.setattr(torch_write, "ZIP64_LIMIT", 1)  # every size and offset takes the zip64 path
    ck = Checkpoint(tensors={"a": sample("float32", (4, 4)), "e": np.zeros((0,), np.int32)})
    out = tmp_path / "z64.pt"
    nt.write(out, ck, format="torch")
    raw = out.read_bytes()
    assert b"PK\x06\x06" in raw and b"PK\x06\x07" in raw
    with zipfile.ZipFile(out) as z:
        assert z.testzip() is None
    back = read(out)
    for name, a in ck.tensors.items():
        assert_same(back.tensors[name], a)
    try:
        import torch
    except ImportError:
        return
    loaded = torch.load(out, weights_only=True)
    assert_same(to_numpy(loaded["a"]), ck.tensors["a"])


# ----------------------------------------------------------------------------------------------
# writer and reader together, without torch


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dt", LEGACY_DTYPES + NEW_DTYPES)
def test_round_trip_without_torch(tmp_path, fmt, dt):
    tensors = {"w": sample(dt, (9, 4)), "s": sample(dt, (1,), seed=3).reshape(()), "e": sample(dt, (2, 0))}
    ck = Checkpoint(tensors=tensors, aliases={"tied": "w"})
    out = tmp_path / "o.pt"
    if fmt == "torch-legacy" and dt in NEW_DTYPES:
        with pytest.raises(UnsupportedError, match="format 'torch'"):
            nt.write(out, ck, format=fmt)
        return
    nt.write(out, ck, format=fmt)
    back = read(out)
    assert list(back.tensors) == list(tensors) and back.aliases == {"tied": "w"}
    for name, a in tensors.items():
        assert_same(back.tensors[name], a)
    # no structure metadata in: a flat OrderedDict state dict out
    root = json.loads(back.metadata[nt.STRUCTURE_KEY])["root"]
    assert root["t"] == "odict" and [k for k, _ in root["items"]] == ["w", "s", "e", "tied"]


def test_writer_accepts_non_contiguous_and_big_endian_arrays(tmp_path):
    base = np.arange(24, dtype=">i4").reshape(4, 6)
    ck = Checkpoint(tensors={"t": base.T, "s": base[:, 1::2]})
    nt.write(tmp_path / "o.pt", ck, format="torch")
    back = read(tmp_path / "o.pt")
    assert_same(back.tensors["t"], base.T)
    assert_same(back.tensors["s"], base[:, 1::2])


def test_writer_rejects_structure_that_does_not_match(tmp_path):
    ck = read(PNET)
    del ck.tensors["conv4_2.bias"]
    with pytest.raises(UsageError, match="conv4_2.bias"):
        nt.write(tmp_path / "o.pt", ck, format="torch")
    with pytest.raises(UsageError, match="torch-legacy"):
        nt.write(tmp_path / "o.pt", ck, format="pickle")


# ----------------------------------------------------------------------------------------------
# hostile and damaged files


def _zip(path, pkl: bytes, storages=None, byteorder=b"little", folder="arch"):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{folder}/data.pkl", pkl)
        if byteorder is not None:
            z.writestr(f"{folder}/byteorder", byteorder)
        for key, data in (storages or {}).items():
            z.writestr(f"{folder}/data/{key}", data)
        z.writestr(f"{folder}/version", b"3\n")
    return path


def _tensor_pickle(offset=0, size=(2, 3), stride=(3, 1), key="0", numel=6, storage="FloatStorage", name="w"):
    """data.pkl of {name: tensor} built opcode by opcode, with any (possibly bad) field."""
    w = PickleWriter()
    w.empty_dict()
    w.str(name)
    w.global_("torch._utils", "_rebuild_tensor_v2")
    w.mark()
    w.mark()
    w.str("storage")
    w.global_("torch", storage)
    w.str(key)
    w.str("cpu")
    w.int(numel)
    w.tuple_from_mark()
    w.binpersid()
    w.int(offset)
    w.int_tuple(size)
    w.int_tuple(stride)
    w.bool(False)
    w.ordered_dict()
    w.tuple_from_mark()
    w.reduce()
    w.out += b"s"  # SETITEM
    return w.finish()


def test_hand_built_archive_reads(tmp_path):
    data = np.arange(6, dtype="<f4").tobytes()
    ck = read(_zip(tmp_path / "ok.pt", _tensor_pickle(), {"0": data}))
    assert_same(ck.tensors["w"], np.arange(6, dtype=np.float32).reshape(2, 3))


@pytest.mark.parametrize(
    "kw, err, words",
    [
        (dict(offset=1), CorruptError, ["'w'", "offset 1", "storage '0'", "24 bytes"]),
        (dict(stride=(4, 1)), CorruptError, ["'w'", "stride (4, 1)"]),
        (dict(size=(2, -3)), CorruptError, ["'w'", "negative size"]),
        (dict(size=(2, 3), stride=(3,)), CorruptError, ["'w'", "stride"]),
        (dict(size=(1 << 30, 1 << 30), stride=(0, 0)), LimitError, ["'w'", "max_elements"]),
        (dict(size=(1,) * 40, stride=(0,) * 40), LimitError, ["'w'", "max_rank"]),
        (dict(key="7"), CorruptError, ["'w'", "storage '7'", "no record"]),
        (dict(numel=100), CorruptError, ["'w'", "holds 24 bytes", "declares 400"]),
        (dict(storage="ComplexDoubleStorage"), UnsupportedError, ["'w'", "ComplexDoubleStorage", "complex128"]),
        (dict(key="../x"), CorruptError, ["storage key"]),
    ],
)
def test_bad_tensor_fields_raise_named_errors(tmp_path, kw, err, words):
    storages = {"0": np.arange(6, dtype="<f4").tobytes()}
    path = _zip(tmp_path / "bad.pt", _tensor_pickle(**kw), storages)
    with pytest.raises(err) as ei:
        read(path)
    for word in words:
        assert word in str(ei.value)
    assert str(path) in str(ei.value)


def test_unknown_torch_dtype_and_bad_persistent_id(tmp_path):
    w = PickleWriter()
    w.mark()
    w.str("storage")
    w.global_("torch", "BFloat16Storage")
    w.tuple_from_mark()  # a 2-tuple persistent id
    w.binpersid()
    with pytest.raises(CorruptError, match="persistent id"):
        read(_zip(tmp_path / "p.pt", w.finish()))


def _evil_pickles(marker):
    class Reduce:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    class Eval:
        def __reduce__(self):
            return (eval, (f"open({str(marker)!r}, 'w')",))

    # os.system by __reduce__ (GLOBAL posix system), builtins.eval, and one hidden inside a state dict
    hidden = pickle.dumps({"w": [1, 2, Reduce()]}, protocol=2)
    stack_global = pickle.dumps(Eval(), protocol=4)  # STACK_GLOBAL instead of GLOBAL
    return [pickle.dumps(Reduce(), protocol=2), pickle.dumps(Eval(), protocol=2), hidden, stack_global]


@pytest.mark.parametrize("layout", ["zip", "legacy", "bare"])
def test_forbidden_globals_are_refused_without_running(tmp_path, layout):
    marker = tmp_path / "pwned"
    for i, evil in enumerate(_evil_pickles(marker)):
        path = tmp_path / f"evil{i}.pt"
        if layout == "zip":
            _zip(path, evil)
        elif layout == "legacy":
            head = b"".join(pickle.dumps(x, protocol=2) for x in (nt.MAGIC_NUMBER, nt.PROTOCOL_VERSION, {}))
            path.write_bytes(head + evil)
        else:  # a plain pickle file named .pt
            path.write_bytes(evil)
        with pytest.raises(UnsafePickleError) as ei:
            read(path)
        msg = str(ei.value)
        assert "refused global" in msg and ("system" in msg or "builtins.eval" in msg), msg
        assert "nncodec loads only tensors and plain containers" in msg
        assert not marker.exists()


def test_stand_ins_cannot_be_mutated_by_build(tmp_path):
    w = PickleWriter()
    w.global_("torch", "float32")
    w.empty_dict()
    w.str("x")
    w.int(1)
    w.out += b"s"  # SETITEM
    w.build()  # BUILD on a stand-in
    with pytest.raises(CorruptError, match="set the state"):
        read(_zip(tmp_path / "b.pt", w.finish()))


def test_pickle_size_limit(tmp_path):
    path = _zip(tmp_path / "ok.pt", _tensor_pickle(), {"0": bytes(24)})
    with pytest.raises(LimitError, match="max_pickle_bytes"):
        read(path, max_pickle_bytes=50)
    legacy = tmp_path / "legacy.pt"
    nt.write(legacy, Checkpoint(tensors={"w": np.ones(3, np.float32)}), format="torch-legacy")
    with pytest.raises(LimitError, match="max_pickle_bytes"):
        read(legacy, max_pickle_bytes=60)
    assert read(legacy).tensors["w"].shape == (3,)


def test_deep_nesting_is_refused_not_a_crash(tmp_path):
    n = 200_000
    pkl = b"\x80\x02" + b"]" * n + b"a" * (n - 1) + b"."  # lists nested 200000 deep
    with pytest.raises(UnsupportedError, match="nested deeper"):
        read(_zip(tmp_path / "deep.pt", pkl))


def test_huge_memo_index_does_not_allocate(tmp_path):
    # LONG_BINPUT 0x3ffffff0: CPython's C unpickler would size its memo array to that index
    # (16 GB); under a 4 GB address-space cap the read must still succeed
    path = _zip(tmp_path / "memo.pt", b"\x80\x02N" + b"r" + struct.pack("<I", 0x3FFFFFF0) + b".")
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))\n"
        "from nncodec.io import torch as nt\n"
        "from nncodec.format.constants import DEFAULT_LIMITS\n"
        f"ck = nt.read({str(path)!r}, limits=DEFAULT_LIMITS)\n"
        "print(ck.metadata[nt.STRUCTURE_KEY])\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, env=env, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == '{"v":1,"root":null}', res.stderr[-2000:]


def test_shared_references_do_not_blow_up(tmp_path):
    # 80 levels of [x, x]: 2**80 leaves if expanded; kept as refs
    w = PickleWriter()
    w.int(1)
    for _ in range(80):
        i = w.put()
        w.mark()
        w.get(i)
        w.get(i)
        w.out += b"l"  # LIST from mark
    # refused by the unpickler's bound on expansion through shared references (issue 14): a state
    # dict is a tree; a DAG this size could only make repr/hash/walks do 2**80 work
    with pytest.raises(LimitError, match="shared references"):
        read(_zip(tmp_path / "dag.pt", w.finish()))
    # one long string referenced many times is over the text budget
    w = PickleWriter()
    w.str("x" * 100_000)
    i = w.put()
    w.mark()
    for _ in range(1000):
        w.get(i)
    w.out += b"l"
    with pytest.raises(LimitError, match="more text|shared references"):  # whichever bound trips first
        read(_zip(tmp_path / "strings.pt", w.finish()))


def test_truncated_files(tmp_path):
    ck = Checkpoint(tensors={"w": sample("float32", (64, 8)), "b": sample("int64", (16,))})
    for fmt in FORMATS:
        full = tmp_path / f"full-{fmt}.pt"
        nt.write(full, ck, format=fmt)
        raw = full.read_bytes()
        for cut in (3, 40, 300, len(raw) // 2, len(raw) - 60, len(raw) - 1):
            part = tmp_path / f"cut-{fmt}-{cut}.pt"
            part.write_bytes(raw[:cut])
            with pytest.raises(NNCodecError) as ei:
                read(part)
            assert isinstance(ei.value, (TruncatedError, CorruptError, FormatError)), (fmt, cut, ei.value)
            assert str(part) in str(ei.value)
        # cut inside the storage bytes of a legacy file, or through a zip's central directory
        part = tmp_path / f"cut-{fmt}.pt"
        part.write_bytes(raw[: len(raw) - 100])
        with pytest.raises(TruncatedError):
            read(part)


def test_corrupted_storage_bytes_fail_the_crc(tmp_path):
    out = tmp_path / "o.pt"
    nt.write(out, Checkpoint(tensors={"w": np.arange(100, dtype=np.float32)}), format="torch")
    raw = bytearray(out.read_bytes())
    pos = raw.find(np.arange(100, dtype=np.float32).tobytes())
    raw[pos + 10] ^= 0xFF
    out.write_bytes(raw)
    with pytest.raises(CorruptError, match="CRC"):
        read(out)


def test_not_a_checkpoint(tmp_path):
    p = tmp_path / "x.pt"
    p.write_bytes(b"hello world")
    with pytest.raises(FormatError):
        read(p)
    p.write_bytes(pickle.dumps({"a": 1}, protocol=2))  # a pickle, but not a torch file
    with pytest.raises(FormatError, match="magic number"):
        read(p)
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("a.txt", "x")
    with pytest.raises(FormatError, match="data.pkl"):
        read(p)


def test_legacy_storage_size_mismatch(tmp_path):
    out = tmp_path / "l.pt"
    nt.write(out, Checkpoint(tensors={"w": np.ones(4, np.float32)}), format="torch-legacy")
    raw = bytearray(out.read_bytes())
    pos = len(raw) - 16 - 8  # the element count before the 16 data bytes
    assert struct.unpack("<q", raw[pos : pos + 8])[0] == 4
    raw[pos : pos + 8] = struct.pack("<q", 5)
    out.write_bytes(raw)
    with pytest.raises(CorruptError, match="holds 5 elements but the pickle declares 4"):
        read(out)


def test_structure_float_encoding_is_bit_exact(tmp_path):
    odd_nan = struct.unpack("<d", struct.pack("<Q", 0xFFF8_0000_0000_1234))[0]
    w = PickleWriter()
    w.mark()
    for v in (odd_nan, math.inf, -0.0, 1e308):
        w.float(v)
    w.out += b"l"
    ck = read(_zip(tmp_path / "f.pt", w.finish()))
    root = json.loads(ck.metadata[nt.STRUCTURE_KEY])["root"]
    assert root["items"][0] == {"t": "float", "bits": "fff8000000001234"}
    assert root["items"][1] == {"t": "float", "bits": "7ff0000000000000"}
    out = tmp_path / "f2.pt"
    nt.write(out, ck, format="torch")
    again = json.loads(read(out).metadata[nt.STRUCTURE_KEY])["root"]
    assert again == root


def test_pickle_module_reads_our_pickles():
    # the emitted pickle is standard: Python's own unpickler agrees on plain values
    w = PickleWriter()
    w.mark()
    for v in (0, 255, 256, 65535, 65536, -1, 2**31 - 1, -(2**31), 2**31, -(2**63), 2**2100):
        w.int(v)
    w.str("\udcff surrogate")
    w.bytes(b"\x00\xff")
    w.bytes(b"")
    w.out += b"l"
    assert pickle.load(io.BytesIO(w.finish())) == [
        0, 255, 256, 65535, 65536, -1, 2**31 - 1, -(2**31), 2**31, -(2**63), 2**2100,
        "\udcff surrogate", b"\x00\xff", b"",
    ]  # fmt: skip


@pytest.mark.parametrize("fmt", ["torch", "torch-legacy"])
def test_torch_size_round_trips_as_torch_size(tmp_path, fmt):
    torch = pytest.importorskip("torch")
    import nncodec

    obj = {"model": {"w": torch.randn(3, 4)}, "shape": torch.Size([3, 4]), "empty": torch.Size([]), "plain": (3, 4)}
    src = tmp_path / "a.pt"
    torch.save(obj, src)
    nncodec.encode_file(src, tmp_path / "a.nnc")
    with nncodec.open(tmp_path / "a.nnc") as r:
        assert json.loads(r.metadata[nt.STRUCTURE_KEY])["v"] == 2  # the size node needs version 2
    nncodec.decode_file(tmp_path / "a.nnc", tmp_path / "b.pt", format=fmt)
    back = torch.load(tmp_path / "b.pt", weights_only=True)
    assert type(back["shape"]) is torch.Size and back["shape"] == obj["shape"]
    assert type(back["empty"]) is torch.Size and len(back["empty"]) == 0
    assert type(back["plain"]) is tuple and back["plain"] == (3, 4)
    assert torch.equal(back["model"]["w"], obj["model"]["w"])


def test_structure_without_size_stays_version_1(tmp_path):
    torch = pytest.importorskip("torch")
    import nncodec

    torch.save({"w": torch.ones(2), "t": (1, 2)}, tmp_path / "a.pt")
    nncodec.encode_file(tmp_path / "a.pt", tmp_path / "a.nnc")
    with nncodec.open(tmp_path / "a.nnc") as r:
        assert json.loads(r.metadata[nt.STRUCTURE_KEY])["v"] == 1


def test_size_node_with_non_integers_is_refused(tmp_path):
    from nncodec.io.torch.writer import write

    doc = {"v": 2, "root": {"t": "dict", "items": [["w", {"t": "tensor", "name": "w"}],
                                                   ["s", {"t": "size", "items": ["x"]}]]}}
    ck = Checkpoint(tensors={"w": np.ones(2, np.float32)}, metadata={nt.STRUCTURE_KEY: json.dumps(doc)})
    with pytest.raises(CorruptError, match="size node"):
        write(tmp_path / "x.pt", ck, format="torch")
