"""nncodec.torch and nncodec.numpy: the verbs of safetensors.torch / safetensors.numpy."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
st_torch = pytest.importorskip("safetensors.torch")
import ml_dtypes  # noqa: E402

import nncodec  # noqa: E402
import nncodec.numpy as nnp  # noqa: E402
import nncodec.torch as nt  # noqa: E402
from nncodec.errors import FormatError, NNCodecError, UnsupportedError, UsageError  # noqa: E402


def _tensors():
    g = torch.Generator().manual_seed(0)
    return {
        "f32": torch.randn(64, 33, generator=g),
        "f32.big": torch.randn(1100, 1000, generator=g),  # over 2**20 elements: a chunked record
        "f16": (torch.randn(300, 7, generator=g) * 3).half(),
        "bf16": torch.randn(513, 9, generator=g).bfloat16(),
        "bf16.special": torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 1e-40, 3.0e38],
                                     dtype=torch.bfloat16),
        "f64": torch.randn(17, generator=g, dtype=torch.float64),
        "i8": torch.randint(-128, 128, (40, 3), generator=g, dtype=torch.int8),
        "i16": torch.randint(-1000, 1000, (11,), generator=g, dtype=torch.int16),
        "i32": torch.randint(-(2**31), 2**31 - 1, (5, 5), generator=g, dtype=torch.int32),
        "i64": torch.arange(-5, 1000, dtype=torch.int64) * 123456789,
        "u8": torch.randint(0, 256, (100,), generator=g, dtype=torch.uint8),
        "bool": torch.rand(9, 4, generator=g) > 0.5,
        "f8": torch.randn(50, generator=g).to(torch.float8_e4m3fn),
        "f8.e5m2": torch.randn(20, 2, generator=g).to(torch.float8_e5m2),
        "f8.e8m0": torch.rand(12, generator=g).to(torch.float8_e8m0fnu),
        "f8.e4m3fnuz": torch.randn(9, generator=g).to(torch.float8_e4m3fnuz),
        "f8.e5m2fnuz": torch.randn(9, generator=g).to(torch.float8_e5m2fnuz),
        "f4": torch.randint(0, 256, (6, 4), generator=g, dtype=torch.uint8).view(torch.float4_e2m1fn_x2),
        "c64": torch.randn(7, 3, generator=g, dtype=torch.complex64),
        "u16": torch.randint(0, 2**16, (5,), generator=g, dtype=torch.int32).to(torch.uint16),
        "u32": torch.randint(0, 2**31, (5,), generator=g, dtype=torch.int64).to(torch.uint32),
        "u64": torch.randint(0, 2**62, (5,), generator=g, dtype=torch.int64).view(torch.uint64),
        "scalar": torch.tensor(2.5, dtype=torch.bfloat16),
        "empty": torch.zeros(0, 4),
    }


def _bits(t: torch.Tensor) -> torch.Tensor:
    """A view whose torch.equal is bit equality (NaNs compare equal, float8 and float4 compare at all)."""
    if t.dtype == torch.bool:
        return t
    return t.view({1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def assert_equal_dicts(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, (k, a[k].dtype, b[k].dtype)
        assert a[k].shape == b[k].shape, k
        assert torch.equal(_bits(a[k]), _bits(b[k])), k


@pytest.fixture(scope="module")
def st_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("torch_api")
    src = d / "model.safetensors"
    st_torch.save_file(_tensors(), str(src), metadata={"format": "pt"})
    dst = d / "model.nnc"
    nncodec.encode_file(src, dst)
    return src, dst


def test_load_file_equals_safetensors_for_every_dtype(st_file):
    src, dst = st_file
    want = st_torch.load_file(str(src))
    got = nt.load_file(dst)
    assert_equal_dicts(want, got)
    assert got["bf16"].dtype is torch.bfloat16
    # the big tensor really is a chunked record
    with nncodec.open(dst) as r:
        assert r._tensor_record("f32.big").header.get("chunks") is not None


def test_every_dtype_converts_both_ways_without_copies():
    rng = np.random.default_rng(0)
    for name in nncodec.dtypes.DTYPE_NAMES:
        size = nncodec.dtypes.itemsize(name)
        if name == "bool":
            a = rng.random((3, 2)) < 0.5
        else:
            raw = rng.integers(0, 256, 6 * size, dtype=np.uint8)
            a = raw.view(nncodec.dtypes.to_numpy(name)).reshape(3, 2)
        if not isinstance(getattr(torch, name, None), torch.dtype):  # packed FP6: torch has no such dtype
            with pytest.raises(nncodec.UnsupportedError, match="no torch dtype"):
                nt.to_torch(a, name)
            continue
        t = nt.to_torch(a, name)
        assert str(t.dtype) == f"torch.{name}", name
        back = nt.to_numpy(t, name)
        assert back.dtype == a.dtype and back.tobytes() == a.tobytes(), name
        assert np.shares_memory(back, a), name
        again = nt.load(nt.save({name: t}))[name]
        assert again.dtype == t.dtype and torch.equal(_bits(again), _bits(t)), name


def test_save_file_then_safetensors_and_nncodec_agree(tmp_path):
    tensors = _tensors()
    out = tmp_path / "m.nnc"
    nt.save_file(tensors, out, metadata={"format": "pt", "run": "7"})
    assert_equal_dicts(tensors, nt.load_file(out))
    # decoded by the command-line path to safetensors, the real library reads the same tensors
    back = tmp_path / "back"
    assert nncodec.decode_file(out, back) == "safetensors"  # the default output format
    assert_equal_dicts(tensors, st_torch.load_file(str(back)))
    from safetensors import safe_open as st_open

    with st_open(str(back), framework="pt") as f:
        assert f.metadata() == {"format": "pt", "run": "7"}


def test_save_load_bytes_round_trip():
    tensors = _tensors()
    blob = nt.save(tensors, metadata={"a": "b"})
    assert isinstance(blob, bytes) and blob[:4] == nncodec.encode_tensors({})[:4]
    assert_equal_dicts(tensors, nt.load(blob))
    assert nncodec.decode_bytes(blob).keys() == tensors.keys()


def test_loaded_tensors_are_writable_views_of_the_decoded_arrays():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    t = nt.to_torch(a)
    assert np.shares_memory(t.numpy(), a)
    b = np.arange(6, dtype=np.float32).astype(ml_dtypes.bfloat16)
    tb = nt.to_torch(b)
    assert tb.dtype is torch.bfloat16 and np.shares_memory(tb.view(torch.int16).numpy(), b)
    assert torch.equal(tb.float(), torch.arange(6, dtype=torch.float32))
    f8 = np.array([1.0, -2.0], np.float32).astype(ml_dtypes.float8_e4m3fn)
    assert nt.to_torch(f8).dtype is torch.float8_e4m3fn
    # and the other way, bit for bit (no float conversion): every bf16 pattern
    allbits = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)
    arr = nt.to_numpy(allbits)
    assert arr.dtype == ml_dtypes.bfloat16
    assert np.array_equal(arr.view(np.int16), allbits.view(torch.int16).numpy())
    got = nt.load(nt.save({"all": allbits}))["all"]
    assert torch.equal(got.view(torch.int16), allbits.view(torch.int16))
    t = nt.load(nt.save({"x": torch.ones(3)}))["x"]
    t += 1  # writable
    assert torch.equal(t, torch.full((3,), 2.0))


class Tied(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(50, 8)
        self.body = torch.nn.Linear(8, 8)
        self.head = torch.nn.Linear(8, 50, bias=False)
        self.head.weight = self.embed.weight


def test_tied_weights_are_stored_once_and_load_tied(tmp_path):
    torch.manual_seed(0)
    m = Tied()
    sd = m.state_dict()
    out = tmp_path / "tied.nnc"
    nt.save_file(sd, out)
    with nncodec.open(out) as r:
        assert r.aliases() == {"head.weight": "embed.weight"}
    got = nt.load_file(out)
    assert got["head.weight"] is got["embed.weight"]
    m2 = Tied()
    m2.load_state_dict(got)
    x = torch.randint(0, 50, (4,))
    assert torch.equal(m2.head(m2.body(m2.embed(x))), m.head(m.body(m.embed(x))))
    # overlapping but different views are stored as their own values
    base = torch.arange(20.0)
    parts = {"a": base[:10], "b": base[5:15], "c": base.view(4, 5)[:, 1]}
    back = nt.load(nt.save(parts))
    assert_equal_dicts({k: v.contiguous() for k, v in parts.items()}, back)


def test_parameters_noncontiguous_and_grad_tensors(tmp_path):
    p = torch.nn.Parameter(torch.randn(6, 4))
    t = {"param": p, "transposed": torch.randn(5, 7).t(), "strided": torch.randn(10)[::3],
         "grad": torch.randn(3, requires_grad=True) * 2, "neg": torch.randn(4, dtype=torch.complex64).conj().imag,
         "conj": torch.randn(4, dtype=torch.complex64).conj()}
    back = nt.load(nt.save(t))
    for k, v in t.items():
        assert torch.equal(back[k], v.detach()), k


def test_lossy_save_file_stays_within_the_stated_error(tmp_path):
    g = torch.Generator().manual_seed(3)
    t = {"w": torch.randn(128, 96, generator=g), "w16": torch.randn(64, 64, generator=g).bfloat16(),
         "bias": torch.randn(96, generator=g), "idx": torch.arange(10)}
    out = tmp_path / "lossy.nnc"
    err = 0.01
    nt.save_file(t, out, max_error=err)
    back = nt.load_file(out)
    assert back["w"].dtype == torch.float32 and back["w16"].dtype == torch.bfloat16
    d = (back["w"] - t["w"]).abs().max().item()
    assert 0 < d <= err * (1 + 1e-6)
    # a bf16 result is rounded to bf16 after dequantization: at most half a bf16 step more
    d16 = (back["w16"].float() - t["w16"].float()).abs()
    assert (d16 <= err + t["w16"].float().abs() * 2.0**-8 + 1e-7).all()
    assert torch.equal(back["bias"], t["bias"]) and torch.equal(back["idx"], t["idx"])  # 1-D: lossless
    # a rate target and a preset are accepted like the command line's
    small = tmp_path / "small.nnc"
    nt.save_file(t, small, bits=4)
    assert os.path.getsize(small) < os.path.getsize(tmp_path / "lossy.nnc") * 2
    assert os.path.getsize(small) < sum(v.numel() * v.element_size() for v in t.values())
    nt.save_file(t, tmp_path / "fast.nnc", preset="fast")
    assert nt.load_file(tmp_path / "fast.nnc").keys() == t.keys()


def test_device_argument(tmp_path):
    out = tmp_path / "d.nnc"
    nt.save_file({"a": torch.ones(2)}, out)
    assert nt.load_file(out, device="cpu")["a"].device.type == "cpu"
    assert nt.load_file(out, device=torch.device("cpu"))["a"].device.type == "cpu"
    with pytest.raises(UsageError, match="device"):
        nt.load_file(out, device="not-a-device")
    with pytest.raises(UsageError, match="device"):
        nt.load_file(out, device=1.5)


def test_bad_input_gives_nncodec_errors(tmp_path):
    with pytest.raises(UsageError, match="dict"):
        nt.save([torch.ones(1)])
    with pytest.raises(UsageError, match="'x'.*torch.Tensor"):
        nt.save({"x": np.ones(2)})
    with pytest.raises(UsageError, match="names must be str"):
        nt.save({1: torch.ones(1)})
    with pytest.raises(UsageError, match="metadata"):
        nt.save({"x": torch.ones(1)}, metadata={"a": 1})
    with pytest.raises(UsageError, match="unknown encode option"):
        nt.save({"x": torch.ones(1)}, bitz=4)
    with pytest.raises(UsageError, match="preset"):
        nt.save({"x": torch.ones(1)}, preset="tiny")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: complex32 support is experimental
        c32 = torch.zeros(2, dtype=torch.complex32)
    with pytest.raises(UnsupportedError, match="'c'.*complex32"):
        nt.save({"c": c32})
    with pytest.raises(UsageError, match="meta"):
        nt.save({"m": torch.empty(2, device="meta")})
    with pytest.raises(UsageError, match="sparse"):
        nt.save({"s": torch.eye(3).to_sparse()})
    with pytest.raises(UsageError, match="bytes"):
        nt.load("model.nnc")
    with pytest.raises(UsageError, match="path"):
        nt.load_file(b"NNC")
    with pytest.raises(UsageError, match="path"):
        nt.save_file({"x": torch.ones(1)}, 3)
    with pytest.raises(FormatError):
        nt.load(b"not an nncodec file at all, just some bytes")
    p = tmp_path / "model.safetensors"
    st_torch.save_file({"x": torch.ones(2)}, str(p))
    with pytest.raises(NNCodecError):
        nt.load_file(p)
    with pytest.raises(UsageError, match="no such|cannot open"):
        nt.load_file(tmp_path / "missing.nnc")
    with pytest.raises(UsageError, match="directory"):
        nt.save_file({"x": torch.ones(1)}, tmp_path)
    assert not list(tmp_path.glob("*.tmp*"))


def test_numpy_module_round_trips_every_dtype(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "f32": rng.standard_normal((30, 4)).astype(np.float32),
        "bf16": rng.standard_normal((33,)).astype(ml_dtypes.bfloat16),
        "f8": rng.standard_normal(7).astype(ml_dtypes.float8_e5m2),
        "i64": np.arange(10, dtype=np.int64),
        "big_endian": np.arange(6, dtype=">i4"),
        "bool": rng.random((3, 3)) > 0.5,
        "scalar": np.array(7, np.uint16),
        "fortran": np.asfortranarray(rng.standard_normal((4, 5))),
    }
    arrays["tied"] = arrays["f32"]
    out = tmp_path / "n.nnc"
    nnp.save_file(arrays, out, metadata={"k": "v"})
    back = nnp.load_file(out)
    assert back["tied"] is back["f32"]
    for k, v in arrays.items():
        assert back[k].dtype == v.dtype.newbyteorder("<") and np.array_equal(back[k], v), k
    assert back["bf16"].dtype == ml_dtypes.bfloat16
    again = nnp.load(nnp.save(arrays))
    assert again["tied"] is again["f32"] and set(again) == set(arrays)
    with pytest.raises(UsageError, match="'x'.*numpy.ndarray"):
        nnp.save({"x": [1, 2]})
    with pytest.raises(UnsupportedError, match="'s'"):
        nnp.save({"s": np.array(["a"])})
    # and nncodec.numpy reads what safetensors.numpy wrote, once encoded
    from safetensors.numpy import save_file as st_np_save

    plain = {k: v for k, v in arrays.items() if k not in ("bf16", "f8", "tied", "big_endian")}
    st_np_save({k: v.copy(order="C") for k, v in plain.items()}, str(tmp_path / "n.safetensors"))
    nncodec.encode_file(tmp_path / "n.safetensors", tmp_path / "n2.nnc")
    back = nnp.load_file(tmp_path / "n2.nnc")
    for k, v in plain.items():
        assert np.array_equal(back[k], v), k


def test_importing_nncodec_needs_no_torch_and_keeps_numpy_intact():
    code = (
        "import sys, nncodec, nncodec.numpy, nncodec.api, nncodec.files\n"
        "import numpy\n"
        "assert numpy is not nncodec.numpy and hasattr(numpy, 'ndarray'), numpy\n"
        "assert sys.modules['numpy'] is numpy and sys.modules['nncodec.numpy'] is nncodec.numpy\n"
        "assert callable(nncodec.safe_open)\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "import nncodec.torch, torch\n"
        "assert torch is not nncodec.torch and hasattr(torch, 'Tensor')\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=os.path.dirname(__file__))
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
