"""Hostile zip and legacy checkpoints (issue 14, archive classes).

Each case is built here and also stored under tests/regressions/ (``checkpoints-<what>.bin``,
first byte the fuzz harness's reader selector), where the replay test feeds it to the
checkpoint harness under a 32 MiB allocation cap. Here each must be refused with an
NNCodecError whose message is one bounded line and says why, without a large allocation.
Regenerate the stored inputs with ``python tests/test_hostile_archives.py --write``.
"""

from __future__ import annotations

import io
import os
import struct
import sys
import tracemalloc
import zipfile

import numpy as np
import pytest

from nncodec.errors import CorruptError, NNCodecError
from nncodec.io import Checkpoint, read_checkpoint
from nncodec.io import torch as nt
from nncodec.io._pickle import PickleWriter, dumps_simple

HERE = os.path.dirname(os.path.abspath(__file__))
REGRESSIONS = os.path.join(HERE, "regressions")
#: selector bytes of fuzz/fuzz_checkpoints.py READERS
TORCH, LEGACY, NPZ = 1, 2, 3


def _tensor(w: PickleWriter, numel: int, view=None, key="0"):
    w.global_("torch._utils", "_rebuild_tensor_v2")
    w.mark()
    w.mark()
    w.str("storage")
    w.global_("torch", "FloatStorage")
    w.str(key)
    w.str("cpu")
    w.int(numel)
    if view is not None:
        w.mark()
        w.str(view[0])
        w.int(view[1])
        w.int(view[2])
        w.tuple_from_mark()
    w.tuple_from_mark()
    w.binpersid()
    w.int(0)
    w.int_tuple((numel if view is None else view[2],))
    w.int_tuple((1,))
    w.bool(False)
    w.ordered_dict()
    w.tuple_from_mark()
    w.reduce()


def _one_tensor_pickle(numel=1, name="w") -> bytes:
    w = PickleWriter()
    w.empty_dict()
    w.str(name)
    _tensor(w, numel)
    w.out += b"s"
    return w.finish()


def _zip_bytes(members) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data, method in members:
            with _quiet():
                z.writestr(zipfile.ZipInfo(name), data, compress_type=method)
    return buf.getvalue()


class _quiet:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate names built on purpose

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


def _set_declared_size(raw: bytes, name: bytes, size: int) -> bytes:
    """Overwrite the uncompressed size of member ``name`` in its local and central headers."""
    b = bytearray(raw)
    i = 0
    while True:
        i = b.find(b"PK\x03\x04", i)
        if i < 0:
            break
        n = struct.unpack_from("<H", b, i + 26)[0]
        if bytes(b[i + 30 : i + 30 + n]) == name:
            struct.pack_into("<I", b, i + 22, size)
        i += 4
    i = 0
    while True:
        i = b.find(b"PK\x01\x02", i)
        if i < 0:
            break
        n = struct.unpack_from("<H", b, i + 28)[0]
        if bytes(b[i + 46 : i + 46 + n]) == name:
            struct.pack_into("<I", b, i + 24, size)
        i += 4
    return bytes(b)


S, D = zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED


def case_duplicate_data_pkl() -> bytes:
    benign = dumps_simple({})
    other = _one_tensor_pickle()
    return bytes([TORCH]) + _zip_bytes([("archive/data.pkl", benign, S), ("archive/data.pkl", other, S),
                                        ("archive/data/0", b"\0" * 4, S), ("archive/version", b"3\n", S)])


def case_duplicate_byteorder() -> bytes:
    return bytes([TORCH]) + _zip_bytes([("archive/data.pkl", _one_tensor_pickle(), S),
                                        ("archive/byteorder", b"little", S), ("archive/byteorder", b"big", S),
                                        ("archive/data/0", b"\x01\x02\x03\x04", S)])


def case_record_larger_than_declared() -> bytes:
    # the pickle declares a one-element storage; its record inflates to 4 MiB
    return bytes([TORCH]) + _zip_bytes([("archive/data.pkl", _one_tensor_pickle(1), S),
                                        ("archive/data/0", b"\0" * (4 << 20), D)])


def case_record_smaller_than_declared() -> bytes:
    return bytes([TORCH]) + _zip_bytes([("archive/data.pkl", _one_tensor_pickle(1000), S),
                                        ("archive/data/0", b"\0" * 8, S)])


def case_zip_member_declares_huge_size() -> bytes:
    # 64 KiB of deflate data that says it holds 3.75 GiB (deflate cannot exceed ~1032x)
    raw = _zip_bytes([("archive/data.pkl", _one_tensor_pickle((0xF0000000) // 4), S),
                      ("archive/data/0", b"\0" * (64 << 20), D)])
    return bytes([TORCH]) + _set_declared_size(raw, b"archive/data/0", 0xF0000000)


def case_npz_member_declares_huge_size() -> bytes:
    arr = io.BytesIO()
    np.lib.format.write_array(arr, np.zeros(16 << 20, np.float32))
    raw = _zip_bytes([("a.npy", arr.getvalue(), D)])
    return bytes([NPZ]) + _set_declared_size(raw, b"a.npy", 0xF0000000)


def case_npz_duplicate_member() -> bytes:
    a, b = io.BytesIO(), io.BytesIO()
    np.lib.format.write_array(a, np.zeros(4, np.float32))
    np.lib.format.write_array(b, np.ones(4, np.float32))
    return bytes([NPZ]) + _zip_bytes([("a.npy", a.getvalue(), S), ("a.npy", b.getvalue(), S)])


def case_long_tensor_name() -> bytes:
    # an 8 MB name whose storage is missing: the error names the tensor, cut short
    return bytes([TORCH]) + _zip_bytes([("archive/data.pkl", _one_tensor_pickle(1, name="n" * (8 << 20)), D)])


def case_legacy_conflicting_views() -> bytes:
    w = PickleWriter()
    w.empty_dict()
    w.mark()
    w.str("a")
    _tensor(w, 6, view=("v", 0, 2))
    w.str("b")
    _tensor(w, 6, view=("v", 2, 2))  # same view key, another view: torch returns the first for both
    w.out += b"u"  # SETITEMS
    out = bytearray([LEGACY])
    out += dumps_simple(nt.MAGIC_NUMBER) + dumps_simple(nt.PROTOCOL_VERSION)
    out += dumps_simple({"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}})
    out += w.finish() + dumps_simple(["0"])
    out += struct.pack("<q", 6) + np.arange(6, dtype="<f4").tobytes()
    return bytes(out)


CASES = {
    "zip-duplicate-data-pkl": (case_duplicate_data_pkl, "appears twice"),
    "zip-duplicate-byteorder": (case_duplicate_byteorder, "appears twice"),
    "zip-record-larger-than-declared": (case_record_larger_than_declared, "record size does not match"),
    "zip-record-smaller-than-declared": (case_record_smaller_than_declared, "record size does not match"),
    "zip-member-declares-huge-size": (case_zip_member_declares_huge_size, "record size does not match|deflate"),
    "npz-member-declares-huge-size": (case_npz_member_declares_huge_size, "deflate"),
    "npz-duplicate-member": (case_npz_duplicate_member, "appears twice"),
    "zip-long-tensor-name": (case_long_tensor_name, "characters"),
    "legacy-conflicting-view-keys": (case_legacy_conflicting_views, "two different views"),
}
_SUFFIX = {TORCH: (".pt", "torch"), LEGACY: (".pt", "torch-legacy"), NPZ: (".npz", "npz")}


def _input(name: str) -> bytes:
    path = os.path.join(REGRESSIONS, f"checkpoints-{name}.bin")
    if os.path.exists(path):
        with open(path, "rb") as f:
            return f.read()
    return CASES[name][0]()


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("detect", [False, True], ids=["given-format", "detected"])
def test_hostile_archive_is_refused_without_a_large_allocation(tmp_path, name, detect):
    data = _input(name)
    suffix, fmt = _SUFFIX[data[0]]
    path = tmp_path / ("in" + suffix)
    path.write_bytes(data[1:])
    tracemalloc.start()
    try:
        with pytest.raises(NNCodecError) as ei:
            read_checkpoint(path, format=None if detect else fmt)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    msg = str(ei.value)
    import re

    assert re.search(CASES[name][1], msg), msg[:500]
    assert "\n" not in msg and len(msg) < 1000, msg[:500]
    # the replay test's cap: the inputs are small, an allocation of a declared size would be GiBs
    assert peak < 32 << 20, f"{name}: {peak} bytes allocated"


def test_declared_huge_member_under_an_address_space_cap(tmp_path):
    # the zero-filled bytearray of the declared 3.75 GiB must never be allocated
    import subprocess

    for name in ("zip-member-declares-huge-size", "npz-member-declares-huge-size"):
        data = _input(name)
        suffix, fmt = _SUFFIX[data[0]]
        path = tmp_path / (name + suffix)
        path.write_bytes(data[1:])
        code = (
            "import resource\n"
            "resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20))\n"
            "from nncodec.errors import NNCodecError\n"
            "from nncodec.io import read_checkpoint\n"
            "try:\n"
            f"    read_checkpoint({str(path)!r}, format={fmt!r})\n"
            "except NNCodecError as e:\n"
            "    print('refused', type(e).__name__)\n"
        )
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                             cwd=os.path.dirname(HERE))
        assert res.returncode == 0 and res.stdout.startswith("refused CorruptError"), res.stderr[-2000:]


def test_an_honest_legacy_view_file_still_reads(tmp_path):
    # two tensors on two different view keys of one storage are fine
    data = bytearray(case_legacy_conflicting_views())
    i = data.rindex(b"X\x01\x00\x00\x00v")  # the second view key
    data[i + 5 : i + 6] = b"u"
    path = tmp_path / "ok.pt"
    path.write_bytes(bytes(data[1:]))
    ck = read_checkpoint(path, format="torch-legacy")
    assert ck.tensors["a"].tolist() == [0.0, 1.0] and ck.tensors["b"].tolist() == [2.0, 3.0]


def test_duplicate_members_refused_by_name_in_message(tmp_path):
    data = case_duplicate_data_pkl()
    path = tmp_path / "d.pt"
    path.write_bytes(data[1:])
    with pytest.raises(CorruptError, match="two meanings"):
        read_checkpoint(path)


if __name__ == "__main__" and "--write" in sys.argv:
    for name, (fn, _) in CASES.items():
        with open(os.path.join(REGRESSIONS, f"checkpoints-{name}.bin"), "wb") as f:
            f.write(fn())
        print("wrote", name)
