"""nncodec's safetensors reader against the safetensors library, file by file (spec/SECURITY.md).

Each crafted file records what the library does and what nncodec decided:
where both accept, the tensors and metadata are equal; where they differ, the
difference is on purpose (the reason is in DIFFERENT and in spec/SECURITY.md).
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

safetensors_numpy = pytest.importorskip("safetensors.numpy")
from safetensors import safe_open  # noqa: E402

from nncodec import NNCodecError  # noqa: E402
from nncodec.io import safetensors as S  # noqa: E402


def _st(header, data: bytes = b"") -> bytes:
    hb = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(hb)) + hb + data


F32 = b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
T = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}

#: name -> file bytes
FILES = {
    "plain": _st(F32, bytes(4)),
    "leading-spaces": _st(b"  " + F32, bytes(4)),
    "leading-newline": _st(b"\n" + F32, bytes(4)),
    "leading-tab": _st(b"\t{}"),
    "trailing-spaces": _st(F32 + b"   ", bytes(4)),
    "trailing-nul": _st(F32 + b"\0\0", bytes(4)),
    "empty": _st(b"{}"),
    "header-length-0": struct.pack("<Q", 0),
    "bom": _st(b"\xef\xbb\xbf{}"),
    "not-an-object": _st(b"[]"),
    "trailing-garbage": _st(b"{} x"),
    "invalid-utf8": _st(b'{"__metadata__":{"k":"\xff"}}'),
    "nan": _st(b'{"__metadata__":{"k":NaN}}'),
    "metadata-null": _st({"__metadata__": None}),
    "metadata-list": _st({"__metadata__": []}),
    "metadata-empty-string": _st({"__metadata__": ""}),
    "metadata-zero": _st({"__metadata__": 0}),
    "metadata-false": _st({"__metadata__": False}),
    "metadata-int-value": _st({"__metadata__": {"a": 1}}),
    "metadata-ok": _st({"__metadata__": {"a": "1", "nncodec.torch.structure": "x"}}),
    "metadata-surrogate-pair": _st(b'{"__metadata__":{"k":"\\ud83d\\ude00"}}'),
    "metadata-lone-surrogate": _st(b'{"__metadata__":{"k":"\\ud800"}}'),
    "name-lone-surrogate": _st(b'{"\\ud800":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', bytes(4)),
    "name-nul": _st({"a\0": T}, bytes(4)),
    "duplicate-tensor": _st(b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                            b'"a":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}}', bytes(4)),
    "duplicate-metadata-key": _st(b'{"__metadata__":{"k":"1","k":"2"}}'),
    "duplicate-metadata": _st(b'{"__metadata__":{"k":"1"},"__metadata__":{"k":"2"}}'),
    "extra-entry-field": _st({"a": dict(T, foo=[1, {"x": 2}])}, bytes(4)),
    "missing-dtype": _st({"a": {"shape": [1], "data_offsets": [0, 4]}}, bytes(4)),
    "rank-32": _st({"a": dict(T, shape=[1] * 32)}, bytes(4)),
    "rank-33": _st({"a": dict(T, shape=[1] * 33)}, bytes(4)),
    "rank-100": _st({"a": dict(T, shape=[1] * 100)}, bytes(4)),
    "scalar": _st({"a": {"dtype": "U8", "shape": [], "data_offsets": [0, 1]}}, b"\7"),
    "negative-dim": _st({"a": dict(T, shape=[-1])}, bytes(4)),
    "float-dim": _st(b'{"a":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}}', bytes(4)),
    "huge-dim": _st(b'{"a":{"dtype":"F32","shape":[1' + b"0" * 5000 + b'],"data_offsets":[0,4]}}', bytes(4)),
    "hole": _st({"a": dict(T, data_offsets=[4, 8])}, bytes(8)),
    "overlap": _st({"a": T, "b": T}, bytes(4)),
    "zero-length-tensor": _st({"a": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}, "b": T}, bytes(4)),
    "bool-0-1": _st({"a": {"dtype": "BOOL", "shape": [2], "data_offsets": [0, 2]}}, b"\0\1"),
    "bool-byte-2": _st({"a": {"dtype": "BOOL", "shape": [2], "data_offsets": [0, 2]}}, b"\1\2"),
    "complex64": _st({"a": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}, bytes(8)),
    "deep-2000": _st(b'{"__metadata__":' + b"[" * 2000 + b"]" * 2000 + b"}"),
    "deep-extra-field": _st(b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":' + b"[" * 100 + b"]" * 100 + b"}}", bytes(4)),
    "bf16-f16-i64": _st({"h": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]},
                         "l": {"dtype": "I64", "shape": [1], "data_offsets": [4, 12]}}, bytes(range(12))),
}

#: files the library accepts and nncodec refuses, and why
DIFFERENT = {
    "duplicate-tensor": "two meanings: the library keeps the last entry, other readers the first",
    "duplicate-metadata-key": "two meanings, as for duplicate tensors",
    "rank-33": "over Limits.max_rank (32): a LimitError, raisable for a trusted file",
    "bool-byte-2": "a .nnc file cannot store a bool byte other than 0/1; refused rather than silently normalised",
    "deep-extra-field": "nesting over 64 levels is refused before parsing (the library allows 128 in an ignored field)",
}


def _library(path):
    try:
        tensors = safetensors_numpy.load_file(str(path))
        with safe_open(str(path), "np") as f:
            md = f.metadata() or {}
        return tensors, md
    except Exception:  # the library raises SafetensorError, ValueError ... on refusal
        return None


@pytest.mark.parametrize("name", sorted(FILES))
def test_against_the_library(tmp_path, name):
    p = tmp_path / "f.safetensors"
    p.write_bytes(FILES[name])
    lib = _library(p)
    try:
        ck = S.read(p)
    except NNCodecError as e:
        ck = None
        msg = str(e)
        assert "\n" not in msg and len(msg) < 1000
    if lib is None:
        assert ck is None, f"{name}: the library refuses it, nncodec accepted it"
        return
    if ck is None:
        assert name in DIFFERENT, f"{name}: the library accepts it, nncodec refused it without a recorded reason"
        return
    assert name not in DIFFERENT, f"{name}: both accept it; drop it from DIFFERENT"
    tensors, md = lib
    assert set(ck.tensors) == set(tensors)
    for k, arr in tensors.items():
        assert ck.tensors[k].dtype == arr.dtype and ck.tensors[k].shape == arr.shape
        assert ck.tensors[k].tobytes() == arr.tobytes()
    assert {S.unescape_key(k): v for k, v in ck.metadata.items()} == md


def test_every_recorded_difference_is_a_file():
    assert set(DIFFERENT) <= set(FILES)
