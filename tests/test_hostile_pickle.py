"""Hostile pickles and safetensors metadata (issue 14 classes 1, 3 and 5; spec/SECURITY.md).

Tiny files that used to take minutes or gigabytes -- shared-reference graphs
that repr or hashing expand exponentially, opcode floods from a deflated
pickle, integers past Python's digit limit -- are refused quickly with an
NNCodecError; real torch.save outputs (tied weights, optimizer state,
torch.Size, cycles) still load. Input metadata in nncodec's namespace stays
data. The regression inputs in tests/regressions/ are replayed in a fresh
process under a 512 MiB address-space cap and a time limit.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib

import pytest

from nncodec import NNCodecError
from nncodec.errors import describe
from nncodec.io import _pickle as P

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REG = os.path.join(ROOT, "tests", "regressions")


# ----------------------------------------------------------------- builders


def list_dag(levels: int = 100) -> bytes:
    """x_{k+1} = [x_k, x_k]: 2**levels nodes when expanded, ~8 bytes per level."""
    out = bytearray(b"\x80\x02]q\x00")
    for i in range(levels):
        out += b"(h" + bytes([i]) + b"h" + bytes([i]) + b"lq" + bytes([i + 1])
    return bytes(out)


def tuple_dag(levels: int = 100) -> bytes:
    out = bytearray(b"\x80\x02)q\x00")
    for i in range(levels):
        out += b"h" + bytes([i]) + b"h" + bytes([i]) + b"\x86q" + bytes([i + 1])
    return bytes(out)


def torch_zip(pkl: bytes, members=(), deflate=False) -> bytes:
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/byteorder", b"little")
        for name, data in members:
            z.writestr(name, data)
    return b.getvalue()


def legacy(version: bytes, rest: bytes = b"") -> bytes:
    return pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + version + rest


TENSOR_HEAD = b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQK\x00"
TENSOR_TAIL = b"K\x01\x85\x89ccollections\nOrderedDict\n)RtR"


def cases() -> dict:
    """name -> (file bytes, reader format) for every class; each must be refused."""
    dag = list_dag()
    pop_pkl = b"\x80\x02N" + b"N0" * (4 << 20) + b"."  # 8 MiB of opcodes from an 8 KB deflated member
    return {
        "pickle-list-dag": (torch_zip(dag + b"."), "torch"),
        "pickle-dag-dict-key": (torch_zip(tuple_dag() + b"}q\xf0h\x64K\x01s."), "torch"),
        "pickle-dag-set-member": (torch_zip(tuple_dag() + b"\x8f(h\x64\x90."), "torch"),
        "pickle-dag-persistent-id": (torch_zip(dag + b"Q."), "torch"),
        "pickle-dag-tensor-size": (torch_zip(b"\x80\x02}(X\x01\x00\x00\x00w" + TENSOR_HEAD
                                             + list_dag(60)[2:] + TENSOR_TAIL + b"u."), "torch"),
        "pickle-dag-legacy-version": (legacy(list_dag() + b"."), "torch-legacy"),
        "pickle-dag-dict-value-repr": (torch_zip(b"\x80\x02}(X\x01\x00\x00\x00a" + list_dag()[2:] + b"u."), "torch"),
        "pickle-pop-bomb": (torch_zip(pop_pkl, deflate=True), "torch"),
        "pickle-huge-int-long4": (torch_zip(b"\x80\x02\x8b" + struct.pack("<i", 100_000) + b"\x01" * 100_000 + b".", deflate=True), "torch"),
        "pickle-huge-int-text": (torch_zip(b"I" + b"7" * 100_000 + b"\n.", deflate=True), "torch"),
        "pickle-huge-int-legacy-version": (legacy(b"L" + b"9" * 5000 + b"L\n."), "torch-legacy"),
        "pickle-deep-nesting": (torch_zip(b"\x80\x02" + b"]" * 100_000 + b"a" * 99_999 + b".", deflate=True), "torch"),
        "pickle-lone-surrogate-key": (torch_zip(b"\x80\x02}X\x03\x00\x00\x00\xed\xa0\x80K\x01s."), "torch"),
        "pickle-shared-long-string": (torch_zip(b"\x80\x02X\x00\x00\x10\x00" + b"a" * (1 << 20) + b"q\x00("
                                                + b"h\x00" * 4096 + b"l.", deflate=True), "torch"),
        "safetensors-deep-header": (_st(b'{"__metadata__":' + b"[" * 2000 + b"]" * 2000 + b"}"), "safetensors"),
        "safetensors-lone-surrogate-metadata": (_st(b'{"__metadata__":{"k":"\\ud800"}}'), "safetensors"),
        "safetensors-lone-surrogate-name": (_st(b'{"\\udc00":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"\0"), "safetensors"),
        "safetensors-metadata-list": (_st(b'{"__metadata__":[]}'), "safetensors"),
        "safetensors-duplicate-tensor": (_st(b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
                                             b'"a":{"dtype":"I8","shape":[1],"data_offsets":[0,1]}}', b"\xff"), "safetensors"),
        "safetensors-huge-int": (_st(b'{"a":{"dtype":"U8","shape":[' + b"1" * 5000 + b'],"data_offsets":[0,1]}}', b"\0"), "safetensors"),
    }


def _st(header: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<Q", len(header)) + header + data


_SELECTOR = {"safetensors": 0, "torch": 1, "torch-legacy": 2, "npz": 3}


def write_regressions():
    """Write the inputs of cases() to tests/regressions/ as checkpoints-<name>.bin (run by hand)."""
    for name, (data, fmt) in cases().items():
        with open(os.path.join(REG, f"checkpoints-{name}.bin"), "wb") as f:
            f.write(bytes([_SELECTOR[fmt]]) + data)


# ----------------------------------------------------------------- tests


def _capped(code: str, mb: int = 512, timeout: int = 60) -> subprocess.CompletedProcess:
    prelude = textwrap.dedent(f"""
        import resource, sys, time
        sys.path.insert(0, {ROOT!r})
        import numpy, nncodec, nncodec.io.torch, nncodec.io.safetensors, nncodec.io.npz
        resource.setrlimit(resource.RLIMIT_AS, ({mb} << 20, {mb} << 20))
    """)
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env=env)


REG_FILES = sorted(f for f in os.listdir(REG) if f.startswith(("checkpoints-pickle-", "checkpoints-safetensors-")))


def test_regression_inputs_are_present():
    names = {f"checkpoints-{n}.bin" for n in cases()}
    assert names <= set(REG_FILES), sorted(names - set(REG_FILES))


def test_hostile_inputs_are_refused_quickly_in_bounded_memory(tmp_path):
    """Every regression input: NNCodecError, a one-line bounded message, < 5 s, under 512 MiB of address space."""
    code = f"""
        import os, time
        from nncodec.io import read_checkpoint
        from nncodec import NNCodecError
        fmts = ["safetensors", "torch", "torch-legacy", "npz"]
        reg = {REG!r}
        for fname in {REG_FILES!r}:
            data = open(os.path.join(reg, fname), "rb").read()
            p = os.path.join({str(tmp_path)!r}, "x")
            open(p, "wb").write(data[1:])
            t = time.perf_counter()
            try:
                read_checkpoint(p, format=fmts[data[0]])
                print("ACCEPTED", fname)
            except NNCodecError as e:
                msg = str(e)
                assert "\\n" not in msg and len(msg) < 1000, (fname, len(msg))
            dt = time.perf_counter() - t
            print("OK", fname, round(dt, 2))
            assert dt < 5, (fname, dt)
    """
    r = _capped(code, timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "ACCEPTED" not in r.stdout, r.stdout


def test_torch_save_outputs_still_load(tmp_path):
    torch = pytest.importorskip("torch")
    from nncodec.io import read_checkpoint

    m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 4))
    m[2].weight = m[0].weight if False else m[2].weight
    opt = torch.optim.Adam([{"params": m[0].parameters()}, {"params": m[2].parameters()}])
    m(torch.randn(2, 3)).sum().backward()
    opt.step()
    w = torch.randn(4, 4)
    shared = {"lr": 0.5}
    objs = [
        m.state_dict(),
        {"model": m.state_dict(), "optimizer": opt.state_dict(), "epoch": 3, "size": torch.Size([2, 3])},
        {"a": w, "b": w, "view": w[1:]},  # tied weights: one storage, several tensors
        {"w": torch.ones(2), "x": shared, "y": shared},  # a shared dict
    ]
    for i, obj in enumerate(objs):
        p = tmp_path / f"{i}.pt"
        torch.save(obj, str(p))
        ck = read_checkpoint(p)
        assert ck.tensors


def test_dict_keys_and_set_members_must_be_flat():
    ok = {"a": 1, 2: 3, b"x": 4, None: 5, True: 6, ("layer", 1): 7, ("a", "b", "c"): 8}
    assert P.load(io.BytesIO(pickle.dumps(ok, protocol=2)), source="t") == ok
    for bad in ({1.5: 1}, {(1, 2): 1}, {((1,), "a"): 1}, {frozenset(): 1}, {(1, 2)}, frozenset({2.5})):
        with pytest.raises(NNCodecError):
            P.load(io.BytesIO(pickle.dumps(bad, protocol=2)), source="t")


def test_huge_integers_are_refused_before_conversion():
    assert P.load(io.BytesIO(pickle.dumps([2**127, -(2**127), 0x1950A86A20F9469CFC6C], protocol=2)), source="t")
    for pkl in (pickle.dumps(2**129, protocol=2), b"I" + b"9" * 50 + b"\n.", b"L" + b"9" * 5000 + b"L\n.",
                b"\x80\x02\x8b" + struct.pack("<i", 1 << 20) + b"\x01" * 64 + b"."):
        with pytest.raises(NNCodecError):
            P.load(io.BytesIO(pkl), source="t")


def test_opcode_budget_counts_against_the_file_size():
    pkl = b"\x80\x02N" + b"N0" * (4 << 20) + b"."
    assert P.load(io.BytesIO(pkl), source="t") is None  # no file size given: bounded by the pickle itself
    with pytest.raises(NNCodecError, match="opcodes"):
        P.load(io.BytesIO(pkl), source="t", input_size=len(zlib.compress(pkl)))


def test_shared_references_are_bounded_but_allowed():
    small = P.load(io.BytesIO(list_dag(10) + b"."), source="t")  # 2**10 nodes: a modest DAG is fine
    assert len(small) == 2
    with pytest.raises(NNCodecError, match="expand"):
        P.load(io.BytesIO(list_dag(40) + b"."), source="t")
    loop = [1]
    loop.append(loop)
    back = P.load(io.BytesIO(pickle.dumps(loop, protocol=2)), source="t")
    assert back[1] is back  # cycles are kept, as torch.load keeps them


def test_refused_calls_and_opcodes():
    for pkl in (b"\x80\x02ccollections\nOrderedDict\n]R.",  # OrderedDict(args): hashing attacker keys
                b"\x80\x02]}b.",  # BUILD on a list
                b"\x80\x02\x82\x01.",  # EXT1
                b"\x80\x02ctorch\nSize\nX\x01\x00\x00\x00a\x85R.",  # torch.Size of a string
                b"\x80\x02ctorch\nSize\n)\x81."):  # NEWOBJ of a stand-in
        with pytest.raises(NNCodecError):
            P.load(io.BytesIO(pkl), source="t")


def test_describe_is_bounded():
    assert describe("x" * 10_000).endswith("(10000 characters)")
    assert describe(10**5000) == f"an integer of {(10**5000).bit_length()} bits"
    deep = []
    for _ in range(100_000):
        deep = [deep]
    assert describe(deep) == "a list of 1 items"


def test_input_metadata_in_nncodecs_namespace_stays_data(tmp_path):
    """A safetensors file claiming nncodec's torch structure: decoding to .pt gives the plain flat dict."""
    torch = pytest.importorskip("torch")
    import numpy as np
    from safetensors.numpy import save_file

    import nncodec

    hostile = {
        "nncodec.torch.structure": json.dumps({"v": 1, "root": {"t": "dict", "items": [[{"t": "list", "items": []},
                                                                                    {"t": "tensor", "name": "w"}]]}}),
        "nncodec.source_format": "torch-legacy",
        "plain": "kept",
    }
    src = tmp_path / "in.safetensors"
    save_file({"w": np.arange(4, dtype=np.float32)}, str(src), metadata=hostile)
    enc = tmp_path / "m.nnc"
    nncodec.encode_file(src, enc)
    pt = tmp_path / "out.pt"
    nncodec.decode_file(enc, pt)
    back = torch.load(str(pt), weights_only=True)
    assert list(back) == ["w"] and back["w"].tolist() == [0, 1, 2, 3]
    # and the user's metadata survives a safetensors round trip unchanged
    out = tmp_path / "out.safetensors"
    nncodec.decode_file(enc, out)
    from safetensors import safe_open

    with safe_open(str(out), "np") as f:
        assert f.metadata() == hostile
    # a file nncodec decoded re-encodes fine
    nncodec.encode_file(out, tmp_path / "again.nnc")


def test_lone_surrogates_never_reach_a_writer():
    from nncodec.format import jsonutil
    from nncodec.errors import UsageError

    with pytest.raises(UsageError):
        jsonutil.dumps({"k": "\ud800"})
    with pytest.raises(NNCodecError):
        jsonutil.loads(b'{"k":"\\ud800"}', "header")
    assert jsonutil.loads(b'{"k":"\\ud83d\\ude00"}', "header") == {"k": "\U0001F600"}


if __name__ == "__main__":
    write_regressions()
