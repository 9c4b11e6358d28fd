"""Every safetensors dtype torch defines, written by the real safetensors library, round-trips
bit-exactly through ``nncodec encode`` / ``decode`` (spec/FORMAT.md 4.3, format 1.2)."""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest

import nncodec
from nncodec import dtypes
from nncodec.cli import main
from nncodec.errors import UnsupportedError
from nncodec.io import read_checkpoint

from helpers import assert_same

torch = pytest.importorskip("torch")
st = pytest.importorskip("safetensors.torch")

#: torch dtype -> the safetensors dtype string the library writes for it
ST_NAMES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
    "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2", "float8_e8m0fnu": "F8_E8M0",
    "float8_e4m3fnuz": "F8_E4M3FNUZ", "float8_e5m2fnuz": "F8_E5M2FNUZ", "float4_e2m1fn_x2": "F4",
    "complex64": "C64", "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8",
    "uint64": "U64", "uint32": "U32", "uint16": "U16", "uint8": "U8", "bool": "BOOL",
}  # fmt: skip
#: the 1.2 dtypes torch defines (the packed FP6 ones it has not; they are tested below)
F6 = ("float6_e2m3fn_x4", "float6_e3m2fn_x4")
TORCH_1_2 = tuple(n for n in dtypes.DTYPES_1_2 if n not in F6)
BYTE_TYPES = ("float8_e4m3fn", "float8_e5m2", "float8_e8m0fnu", "float8_e4m3fnuz", "float8_e5m2fnuz",
              "float4_e2m1fn_x2")


def _tensor(name: str, shape, seed: int):
    """Realistic, compressible values of a torch dtype (bytes of the sub-byte and float8 types)."""
    g = torch.Generator().manual_seed(seed)
    dt = getattr(torch, name)
    if name == "bool":
        return torch.rand(shape, generator=g) < 0.2
    if name == "float8_e8m0fnu":  # block scales: exponents near 2^-5
        return (122 + torch.randn(shape, generator=g) * 2).round().clamp(0, 255).to(torch.uint8).view(dt)
    if name == "float4_e2m1fn_x2":  # two small-magnitude FP4 codes a byte
        nib = (torch.randn(*shape[:-1], 2 * shape[-1], generator=g).abs() * 2.5).round().clamp(0, 7).to(torch.uint8)
        nib |= (torch.rand(nib.shape, generator=g) < 0.5).to(torch.uint8) << 3
        return (nib[..., 0::2] | nib[..., 1::2] << 4).view(dt)
    if dt.is_floating_point or dt.is_complex:
        x = torch.randn(shape, generator=g, dtype=torch.complex64 if dt.is_complex else torch.float32) * 0.05
        return x.to(dt)
    hi = 200 if name.startswith("u") else 100
    return torch.randint(-100 if name.startswith("i") else 0, hi, shape, generator=g).to(dt)


def _every_dtype():
    out = {}
    for i, name in enumerate(ST_NAMES):
        out[name] = _tensor(name, (48, 40), i)
        out[name + ".tiny"] = _tensor(name, (2, 2), 100 + i)
        out[name + ".empty"] = _tensor(name, (0, 4), 200 + i)
    # specials of the new float types: NaN, zero, the extremes, a NaN payload in complex64
    out["float8_e8m0fnu"].view(torch.uint8).view(-1)[:3] = torch.tensor([0, 254, 255], dtype=torch.uint8)
    out["float8_e4m3fnuz"].view(torch.uint8).view(-1)[:3] = torch.tensor([0x80, 0x7F, 0xFF], dtype=torch.uint8)
    out["float8_e5m2fnuz"].view(torch.uint8).view(-1)[:3] = torch.tensor([0x80, 0x7F, 0xFF], dtype=torch.uint8)
    out["complex64"].view(torch.int32).view(-1)[:3] = torch.tensor([0x7FC00001, -(2**31), 0x7F800000], dtype=torch.int32)
    # 0-d tensors (not for F4: safetensors cannot write a 0-d float4_e2m1fn_x2)
    for name in ("float8_e8m0fnu", "complex64", "uint32", "bool"):
        out[name + ".scalar"] = _tensor(name, (), 300)
    # one byte type large enough to be coded in several pieces (chunked records)
    out["float4_e2m1fn_x2.big"] = _tensor("float4_e2m1fn_x2", (1100, 1024), 400)
    return out


def _tensor_bytes(path) -> dict:
    """{name: (safetensors dtype, shape, data bytes)} parsed from the file itself."""
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    return {k: (e["dtype"], e["shape"], raw[8 + n + e["data_offsets"][0]:8 + n + e["data_offsets"][1]])
            for k, e in header.items()}


def _same(a, b) -> bool:
    """Same dtype, shape and bytes (torch compares no float8 or FP4 values)."""
    def raw(t):
        return t.contiguous().reshape(-1).view(torch.uint8)
    return a.dtype == b.dtype and a.shape == b.shape and raw(a).equal(raw(b))


@pytest.fixture(scope="module")
def every(tmp_path_factory):
    d = tmp_path_factory.mktemp("dtypes")
    tensors = _every_dtype()
    src = d / "all.safetensors"
    st.save_file(tensors, str(src), metadata={"who": "test"})
    return d, src, tensors


def test_the_library_writes_the_expected_dtype_strings(every):
    _, src, tensors = every
    found = {k: v[0] for k, v in _tensor_bytes(src).items()}
    for name, t in tensors.items():
        assert found[name] == ST_NAMES[str(t.dtype)[len("torch."):]], name
    # F4's header counts values: twice the bytes of the last dimension
    assert _tensor_bytes(src)["float4_e2m1fn_x2"][1] == [48, 80]


def test_every_dtype_roundtrips_bit_exactly(every, capsys):
    d, src, tensors = every
    nnc, back = d / "all.nnc", d / "back.safetensors"
    assert main(["encode", "-q", str(src), str(nnc)]) == 0
    assert main(["decode", "-q", str(nnc), str(back)]) == 0
    want, got = _tensor_bytes(src), _tensor_bytes(back)
    assert sorted(got) == sorted(want)
    for k in want:
        assert got[k] == want[k], k  # dtype string, shape and every data byte
    loaded = st.load_file(str(back))
    for k, t in tensors.items():
        assert _same(loaded[k], t), k
    with nncodec.open(nnc) as r:
        stored = {n: r.info(n) for n in r.keys()}
    for name in TORCH_1_2:
        assert stored[name].dtype == name
        assert stored[name + ".tiny"].dtype == name
    # the compressible ones are coded (byte planes), not stored raw
    for name in ("float8_e8m0fnu", "float4_e2m1fn_x2", "complex64", "bool"):
        assert [s.codec_id for s in stored[name].pipeline.stages] == ["planes"], name
        assert stored[name].stored_bytes < tensors[name].numel() * tensors[name].element_size(), name
    big = r"float4_e2m1fn_x2.big"
    assert stored[big].dtype == "float4_e2m1fn_x2" and stored[big].shape == (1100, 1024)


def test_every_dtype_to_torch_and_npz(every):
    d, src, tensors = every
    nnc = d / "all_pt.nnc"
    assert main(["encode", "-q", str(src), str(nnc)]) == 0
    pt, npz = d / "back.pt", d / "back.npz"
    assert main(["decode", "-q", str(nnc), str(pt)]) == 0
    loaded = torch.load(str(pt), weights_only=True)
    for k, t in tensors.items():
        assert _same(loaded[k], t), k
    assert main(["decode", "-q", str(nnc), str(npz)]) == 0
    ref = read_checkpoint(src).tensors
    arrays = read_checkpoint(npz).tensors
    for k in ref:
        assert_same(arrays[k], ref[k])
    # and back from each: the same safetensors bytes
    for mid in (pt, npz):
        again, out = d / (mid.name + ".nnc"), d / (mid.name + ".safetensors")
        assert main(["encode", "-q", str(mid), str(again)]) == 0
        assert main(["decode", "-q", str(again), str(out)]) == 0
        want, got = _tensor_bytes(src), _tensor_bytes(out)
        assert {k: got[k] for k in want} == want, mid.name


def test_torch_save_of_the_new_dtypes_roundtrips(tmp_path):
    tensors = {n: _tensor(n, (16, 8), i) for i, n in enumerate(TORCH_1_2)}
    src, nnc, back = tmp_path / "m.pt", tmp_path / "m.nnc", tmp_path / "back.pt"
    torch.save(tensors, str(src))
    assert main(["encode", "-q", str(src), str(nnc)]) == 0
    assert main(["decode", "-q", str(nnc), str(back)]) == 0
    loaded = torch.load(str(back), weights_only=True)
    for k, t in tensors.items():
        assert _same(loaded[k], t), k


def test_lossy_options_keep_the_new_dtypes_lossless(every):
    d, src, tensors = every
    for i, opts in enumerate((["--snr", "30", "--lossy", "*"], ["--preset", "small", "--step", "0.01"],
                                  ["--max-error", "0.001", "--dither", "--seed", "3"])):
        nnc, back = d / f"lossy{i}.nnc", d / f"lossy{i}.safetensors"
        assert main(["encode", "-q", str(src), str(nnc), *opts]) == 0
        assert main(["decode", "-q", str(nnc), str(back)]) == 0
        want, got = _tensor_bytes(src), _tensor_bytes(back)
        for k in want:
            if not k.startswith(("float64", "float32", "float16", "bfloat16")):
                assert got[k] == want[k], (opts, k)
        with nncodec.open(nnc) as r:
            for name in TORCH_1_2:
                assert {s.codec_id for s in r.info(name).pipeline.stages} <= {"raw", "planes"}, (opts, name)


def test_python_api_keeps_the_packed_dtype(tmp_path):
    f4 = np.arange(24, dtype=np.uint8).reshape(4, 6).view(dtypes.to_numpy("float4_e2m1fn_x2"))
    data = nncodec.encode_tensors({"f4": f4, "u8": np.arange(24, dtype=np.uint8)})
    out = nncodec.decode_bytes(data)
    assert dtypes.from_numpy(out["f4"].dtype) == "float4_e2m1fn_x2"
    assert dtypes.from_numpy(out["u8"].dtype) == "uint8"
    assert_same(out["f4"], f4)


# ------------------------------------------------------------------ refusals


def _st_file(path, dtype: str, shape, nbytes: int, name="w"):
    hb = json.dumps({"ok": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},
                     name: {"dtype": dtype, "shape": shape, "data_offsets": [1, 1 + nbytes]}}).encode()
    hb += b" " * (-len(hb) % 8)
    path.write_bytes(struct.pack("<Q", len(hb)) + hb + bytes(1 + nbytes))
    return path


@pytest.mark.parametrize("dtype", ["F6_E2M2", "C128", "X9", "f32", ""])
def test_unknown_safetensors_dtype_names_tensor_and_dtype(tmp_path, dtype, capsys):
    p = _st_file(tmp_path / "u.safetensors", dtype, [4], 3, name="layer.scale")
    with pytest.raises(UnsupportedError) as ei:
        read_checkpoint(p)
    msg = str(ei.value)
    assert "'layer.scale'" in msg and repr(dtype) in msg, msg
    assert main(["encode", "-q", str(p), str(tmp_path / "u.nnc")]) != 0
    err = capsys.readouterr().err
    assert "layer.scale" in err and repr(dtype) in err and not (tmp_path / "u.nnc").exists()


def test_f4_with_an_odd_last_dimension_is_refused(tmp_path):
    p = _st_file(tmp_path / "odd.safetensors", "F4", [2, 3], 3, name="q")
    with pytest.raises(UnsupportedError, match=r"'q'.*F4.*\[2, 3\].*last dimension"):
        read_checkpoint(p)


def test_unknown_dtype_in_an_nnc_record_names_tensor_and_dtype(tmp_path):
    from nncodec.format import container as C

    good = nncodec.encode_tensors({"w": np.arange(4, dtype=np.uint8)})
    old = b'"dtype":"uint8"'
    assert good.count(old) == 1
    # a dtype of the same length, as a newer writer might name one; fix the record's CRC
    bad = bytearray(good.replace(old, b'"dtype":"uint4"'))
    pos = bad.index(b'"dtype"')
    start = bad.rindex(b"NR", 0, pos)
    hlen = int.from_bytes(bad[start + 4:start + 8], "little")
    crc = C.crc32(bytes(bad[start:start + 16]) + bytes(bad[start + 24:start + 24 + hlen]))
    bad[start + 16:start + 20] = crc.to_bytes(4, "little")
    path = tmp_path / "new.nnc"
    path.write_bytes(bytes(bad))
    with pytest.raises(nncodec.NNCodecError) as ei:
        with nncodec.open(path) as r:
            r["w"]
    assert "'w'" in str(ei.value) and "uint4" in str(ei.value)


def test_golden_file_covers_the_new_dtypes():
    path = os.path.join(os.path.dirname(__file__), "golden", "dtypes_v1_2.nnc")
    raw = open(path, "rb").read()
    assert raw[8:10] == bytes([1, 2])  # written as format 1.2
    with nncodec.open(path) as r:
        assert {r.info(n).dtype for n in r.keys()} >= set(TORCH_1_2)


# ------------------------------------------------------------------ packed FP6 (F6_E2M3, F6_E3M2)
# torch and the safetensors Python API cannot write them; the files are written by hand, and
# safetensors.deserialize (the library's own checks: shape, byte length, whole bytes) reads ours

F6_ST = {"float6_e2m3fn_x4": "F6_E2M3", "float6_e3m2fn_x4": "F6_E3M2"}


def _f6_file(path, tensors, metadata=None):
    """A safetensors file as the library lays it out: {name: (F6 dtype string, shape in values,
    packed bytes)}, compact JSON padded with spaces to 8 bytes, data in the given order."""
    header, data = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, (st_dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": st_dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    path.write_bytes(struct.pack("<Q", len(hb)) + hb + data)
    return path


def _f6_tensors(seed=0):
    rng = np.random.default_rng(seed)

    def packed(n):  # skewed bytes, so the coders have something to find
        return np.minimum(rng.geometric(0.2, n) - 1, 255).astype(np.uint8).tobytes()

    return {
        "attn.q": ("F6_E2M3", [64, 128], packed(64 * 96)),
        "attn.k": ("F6_E3M2", [32, 4], packed(32 * 3)),
        "vec": ("F6_E2M3", [12], packed(9)),
        "cube": ("F6_E3M2", [3, 5, 8], packed(3 * 5 * 6)),
        "empty": ("F6_E3M2", [0, 16], b""),
        "u8": ("U8", [5], bytes(range(5))),
        "big": ("F6_E2M3", [1500, 1024], packed(1500 * 768)),  # coded in pieces (chunked records)
    }


@pytest.fixture(scope="module")
def f6(tmp_path_factory):
    d = tmp_path_factory.mktemp("f6")
    src = _f6_file(d / "f6.safetensors", _f6_tensors(), metadata={"format": "mx"})
    return d, src


def test_f6_reads_as_packed_bytes(f6):
    _, src = f6
    ck = read_checkpoint(src)
    a = ck.tensors["attn.q"]
    assert dtypes.from_numpy(a.dtype) == "float6_e2m3fn_x4" and a.shape == (64, 96)
    assert dtypes.from_numpy(ck.tensors["attn.k"].dtype) == "float6_e3m2fn_x4"
    assert ck.tensors["attn.k"].shape == (32, 3)
    assert ck.tensors["cube"].shape == (3, 5, 6) and ck.tensors["empty"].shape == (0, 12)
    assert ck.tensors["vec"].shape == (9,)
    assert a.tobytes() == _f6_tensors()["attn.q"][2]


def test_f6_roundtrips_byte_identical(f6):
    d, src = f6
    nnc, back = d / "f6.nnc", d / "back.safetensors"
    assert main(["encode", "-q", str(src), str(nnc)]) == 0
    assert main(["decode", "-q", str(nnc), str(back)]) == 0
    assert back.read_bytes() == src.read_bytes()  # header, order, metadata and every data byte
    with nncodec.open(nnc) as r:
        assert r.info("attn.q").dtype == "float6_e2m3fn_x4" and r.info("attn.q").shape == (64, 96)
        assert r.info("cube").dtype == "float6_e3m2fn_x4"
        assert [s.codec_id for s in r.info("attn.q").pipeline.stages] == ["planes"]
        assert r.info("attn.q").stored_bytes < 64 * 96
        assert r.info("big").shape == (1500, 768)
    # the safetensors library accepts what we wrote, with the same dtype strings, shapes and bytes
    safetensors = pytest.importorskip("safetensors")
    got = {n: (t["dtype"], t["shape"], bytes(t["data"])) for n, t in safetensors.deserialize(back.read_bytes())}
    assert got == {n: (dt, shape, raw) for n, (dt, shape, raw) in _f6_tensors().items()}
    with safetensors.safe_open(str(back), framework="numpy") as f:
        assert f.get_slice("attn.q").get_dtype() == "F6_E2M3"
        assert f.get_slice("attn.q").get_shape() == [64, 128]


def test_f6_through_npz_and_back(f6):
    d, src = f6
    nnc, npz = d / "f6_npz.nnc", d / "f6.npz"
    assert main(["encode", "-q", str(src), str(nnc)]) == 0
    assert main(["decode", "-q", str(nnc), str(npz)]) == 0
    arrays = read_checkpoint(npz).tensors
    ref = read_checkpoint(src).tensors
    for k in ref:
        assert_same(arrays[k], ref[k])
        assert dtypes.from_numpy(arrays[k].dtype) == dtypes.from_numpy(ref[k].dtype), k
    # plain NumPy sees the bytes as uint8; the side member names the dtypes
    with np.load(npz) as z:
        assert z["attn.q"].dtype == np.uint8 and z["attn.q"].shape == (64, 96)
        assert json.loads(str(z["__nncodec_dtypes__"]))["attn.k"] == "float6_e3m2fn_x4"
    again, out = d / "f6_again.nnc", d / "f6_again.safetensors"
    assert main(["encode", "-q", str(npz), str(again)]) == 0
    assert main(["decode", "-q", str(again), str(out)]) == 0
    assert _tensor_bytes(out) == _tensor_bytes(src)


def test_f6_python_api_keeps_the_dtype():
    a = np.arange(24, dtype=np.uint8).reshape(4, 6).view(dtypes.to_numpy("float6_e3m2fn_x4"))
    out = nncodec.decode_bytes(nncodec.encode_tensors({"w": a}))
    assert dtypes.from_numpy(out["w"].dtype) == "float6_e3m2fn_x4"
    assert_same(out["w"], a)
    assert dtypes.itemsize("float6_e2m3fn_x4") == 1 and dtypes.PACKED["float6_e2m3fn_x4"] == (4, 3)


@pytest.mark.parametrize("shape, nbytes", [([2, 3], 5), ([3], 3), ([2, 6], 9), ([], 1), ([0, 3], 0)])
def test_f6_last_dimension_not_a_multiple_of_4_is_refused(tmp_path, shape, nbytes):
    p = _st_file(tmp_path / "odd.safetensors", "F6_E2M3", shape, nbytes, name="q")
    with pytest.raises(UnsupportedError, match=r"'q'.*F6_E2M3.*last dimension.*multiple of 4"):
        read_checkpoint(p)


def test_f6_wrong_byte_length_is_corrupt(tmp_path):
    from nncodec.errors import CorruptError

    p = _st_file(tmp_path / "short.safetensors", "F6_E3M2", [2, 8], 11, name="q")
    with pytest.raises(CorruptError, match=r"'q'.*12 bytes"):
        read_checkpoint(p)


def test_f6_record_that_is_not_whole_groups_is_not_written_as_safetensors(tmp_path):
    a = np.zeros((2, 4), dtype=dtypes.to_numpy("float6_e2m3fn_x4"))
    from nncodec.io import Checkpoint, write_checkpoint

    with pytest.raises(UnsupportedError, match=r"'w'.*multiple of 3"):
        write_checkpoint(tmp_path / "x.safetensors", Checkpoint(tensors={"w": a}), "safetensors")
    write_checkpoint(tmp_path / "x.npz", Checkpoint(tensors={"w": a}), "npz")  # npz keeps any shape
    assert_same(read_checkpoint(tmp_path / "x.npz").tensors["w"], a)


def test_f6_to_torch_is_refused_clearly(f6, capsys):
    d, src = f6
    nnc, pt = d / "f6_pt.nnc", d / "f6.pt"
    assert main(["encode", "-q", str(src), str(nnc)]) == 0
    assert main(["decode", "-q", str(nnc), str(pt)]) != 0
    err = capsys.readouterr().err
    assert "float6_e2m3fn_x4" in err and "torch" in err and "safetensors or npz" in err, err
    assert not pt.exists()
    assert not hasattr(torch, "float6_e2m3fn_x4")
    import nncodec.torch as nt

    with pytest.raises(UnsupportedError, match=r"'attn.q'.*float6_e2m3fn_x4.*no torch dtype"):
        nt.load_file(str(nnc))


def test_lossy_options_keep_f6_exact(f6):
    d, src = f6
    want = _tensor_bytes(src)
    for i, opts in enumerate((["--snr", "30", "--lossy", "*"], ["--preset", "small", "--step", "0.01"],
                              ["--max-error", "0.001", "--dither", "--seed", "3"])):
        nnc, back = d / f"f6_lossy{i}.nnc", d / f"f6_lossy{i}.safetensors"
        assert main(["encode", "-q", str(src), str(nnc), *opts]) == 0
        assert main(["decode", "-q", str(nnc), str(back)]) == 0
        assert _tensor_bytes(back) == want, opts
        with nncodec.open(nnc) as r:
            for name in ("attn.q", "attn.k", "big"):
                assert {s.codec_id for s in r.info(name).pipeline.stages} <= {"raw", "planes", "zstd", "huffman",
                                                                              "zerorun", "ans"}, (opts, name)


def test_golden_file_covers_f6():
    path = os.path.join(os.path.dirname(__file__), "golden", "dtypes_f6_v1_2.nnc")
    raw = open(path, "rb").read()
    assert raw[8:10] == bytes([1, 2])
    with nncodec.open(path) as r:
        assert {r.info(n).dtype for n in r.keys()} == set(F6)
