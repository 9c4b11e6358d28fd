"""Abuse cases: hostile inputs that must be refused cleanly (spec/SECURITY.md lists them).

Each test builds one kind of hostile input and checks that nncodec raises an
``nncodec.NNCodecError`` subclass -- never another exception, a crash, a hang,
a large allocation or silently wrong values -- and, for pickles, that no code
named by the file ran.
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
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest

import nncodec
from nncodec import CorruptError, LimitError, NNCodecError, TruncatedError, UnsafePickleError
from nncodec.format.constants import RECORD_PREFIX, TRAILER_SIZE
from nncodec.io import read_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from fuzz.nncfix import fix_crcs, records, set_header  # noqa: E402

MB = 1 << 20


# ----------------------------------------------------------------- helpers


def _small() -> bytes:
    return nncodec.encode_tensors(
        {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, 2, 3], np.int16)}, metadata={"k": "v"}
    )


def _both(data: bytes, tmp_path, exc=NNCodecError):
    """Both readers refuse ``data`` with ``exc``; return the two errors."""
    with pytest.raises(exc) as e1:
        nncodec.decode_bytes(data)
    p = tmp_path / "x.nnc"
    p.write_bytes(data)
    with pytest.raises(exc) as e2:
        with nncodec.open(p) as r:
            r.to_dict()
    return e1.value, e2.value


def _header(data: bytes, offset: int) -> dict:
    _, _, _, hlen, _, _, _ = RECORD_PREFIX.unpack_from(data, offset)
    return json.loads(data[offset + 24: offset + 24 + hlen])


def _tensor_offsets(data: bytes) -> list:
    return [pos for pos, kind, _, _ in records(data) if kind == ord("T")]


def _with_tensor_header(data: bytes, change) -> bytes:
    """Rewrite the first tensor's header with ``change(header)`` and rebuild index offsets and CRCs."""
    off = _tensor_offsets(data)[0]
    h = _header(data, off)
    change(h)
    return _rebuild(set_header(data, off, json.dumps(h).encode()))


def _rebuild(data: bytes) -> bytes:
    """Recompute the index (offsets) and trailer of a file whose records moved."""
    recs = records(data)
    idx_off = [pos for pos, kind, _, _ in recs if kind == ord("I")][-1]
    index = _header(data, idx_off)
    index["tensors"] = {_header(data, pos)["name"]: pos for pos, kind, _, _ in recs if kind == ord("T")}
    out = set_header(data, idx_off, json.dumps(index, separators=(",", ":")).encode())
    body = out[: len(out) - TRAILER_SIZE]
    idx_off = [pos for pos, kind, _, _ in records(body) if kind == ord("I")][-1]
    trailer = bytearray(out[len(out) - TRAILER_SIZE:])
    struct.pack_into("<Q", trailer, 0, idx_off)
    return fix_crcs(body + bytes(trailer))


def _peak(fn) -> int:
    """Peak traced allocation (bytes) while ``fn`` runs; its NNCodecError is swallowed."""
    tracemalloc.start()
    try:
        fn()
    except NNCodecError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def _run_capped(code: str, mb: int = 1024) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter whose address space may grow by at most ``mb`` MiB."""
    prelude = textwrap.dedent(f"""
        import resource, sys
        sys.path.insert(0, {ROOT!r})
        import numpy, nncodec, nncodec.api, nncodec.io.torch, nncodec.io.npz, nncodec.io.safetensors
        from nncodec.codecs import planes, zstd
        vm = int(open('/proc/self/statm').read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (vm + ({mb} << 20), vm + ({mb} << 20)))
    """)
    env = dict(os.environ, NUMBA_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, env=env)


def test_helpers_keep_a_valid_file_valid():
    data = _small()
    assert _rebuild(data) == data
    assert fix_crcs(data) == data


# ----------------------------------------------------------------- record prefixes


def test_oversized_header_length(tmp_path):
    data = bytearray(_small())
    off = _tensor_offsets(data)[0]
    struct.pack_into("<I", data, off + 4, 0xFFFFFFF8)
    e1, e2 = _both(fix_crcs(data), tmp_path)
    assert isinstance(e1, LimitError) and isinstance(e2, LimitError)


@pytest.mark.parametrize("plen", [1 << 40, (1 << 64) - 8, 1 << 31])
def test_oversized_payload_length_is_not_allocated(tmp_path, plen):
    # the stream reader used to allocate the declared payload before reading it
    data = bytearray(_small())
    off = _tensor_offsets(data)[0]
    struct.pack_into("<Q", data, off + 8, plen)
    data = fix_crcs(data)
    assert _peak(lambda: nncodec.decode_bytes(data)) < 8 * MB
    _both(data, tmp_path, (TruncatedError, CorruptError))


def test_oversized_payload_length_under_a_memory_cap():
    data = bytearray(_small())
    off = _tensor_offsets(data)[0]
    struct.pack_into("<Q", data, off + 8, 1 << 40)
    r = _run_capped(f"""
        from fuzz.nncfix import fix_crcs
        try:
            nncodec.decode_bytes(fix_crcs({bytes(data)!r}))
        except nncodec.TruncatedError:
            print("refused")
    """, mb=512)
    assert r.stdout.strip() == "refused", r.stderr[-2000:]


def test_misaligned_header_and_nonzero_padding(tmp_path):
    data = bytearray(_small())
    off = _tensor_offsets(data)[0]
    hlen = struct.unpack_from("<I", data, off + 4)[0]
    struct.pack_into("<I", data, off + 4, hlen - 1)
    _both(fix_crcs(data), tmp_path, CorruptError)
    data = bytearray(_small())
    b_off = _tensor_offsets(data)[1]  # int16[3]: 6 payload bytes, 2 bytes of padding
    _, _, _, hlen, plen, _, _ = RECORD_PREFIX.unpack_from(data, b_off)
    data[b_off + 24 + hlen + plen] = 1
    _both(fix_crcs(data), tmp_path, CorruptError)


def test_unknown_record_kind_and_flags(tmp_path):
    for pos, val in ((2, ord("X")), (3, 1)):
        data = bytearray(_small())
        data[_tensor_offsets(data)[0] + pos] = val
        _both(fix_crcs(data), tmp_path, CorruptError)


# ----------------------------------------------------------------- index and trailer


def _with_index(data: bytes, change) -> bytes:
    recs = records(data)
    idx_off = [pos for pos, kind, _, _ in recs if kind == ord("I")][-1]
    index = _header(data, idx_off)
    change(index)
    out = set_header(data, idx_off, json.dumps(index).encode())
    return fix_crcs(out)


def test_index_offset_outside_the_file(tmp_path):
    data = _small()
    for bad in (len(data) + 8, 1 << 62, -8, 8, 17, "24", None, True):
        out = _with_index(data, lambda ix: ix["tensors"].__setitem__("a", bad))
        _both(out, tmp_path, CorruptError)


def test_index_offsets_overlapping(tmp_path):
    data = _small()
    offs = _tensor_offsets(data)
    out = _with_index(data, lambda ix: ix["tensors"].__setitem__("b", offs[0]))
    _both(out, tmp_path, CorruptError)
    out = _with_index(data, lambda ix: ix.__setitem__("tensors", {"b": offs[1], "a": offs[0]}))
    _both(out, tmp_path, CorruptError)


def test_index_points_into_a_record(tmp_path):
    data = _small()
    out = _with_index(data, lambda ix: ix["tensors"].__setitem__("b", _tensor_offsets(data)[0] + 24))
    _both(out, tmp_path, CorruptError)


def test_index_points_at_the_wrong_kind_of_record(tmp_path):
    blob = nncodec.encode_tensors({"a": np.ones(3, np.float32), "t": np.zeros(2, np.int8)}, metadata={"m": "1"})
    recs = records(blob)
    meta = [p for p, k, _, _ in recs if k == ord("M")][0]
    idx = [p for p, k, _, _ in recs if k == ord("I")][0]
    for target in (meta, idx):
        out = _with_index(blob, lambda ix: ix["tensors"].__setitem__("a", target))
        _both(out, tmp_path, CorruptError)
    # the trailer pointing at a tensor record instead of the index
    data = bytearray(blob)
    struct.pack_into("<Q", data, len(data) - TRAILER_SIZE, _tensor_offsets(blob)[1])
    _both(fix_crcs(data), tmp_path, CorruptError)


def test_index_entry_naming_another_tensor(tmp_path):
    data = _small()
    offs = _tensor_offsets(data)
    out = _with_index(data, lambda ix: ix.__setitem__("tensors", {"b": offs[0], "a": offs[1]}))
    _both(out, tmp_path, CorruptError)


def test_alias_cycles_and_dangling_aliases(tmp_path):
    data = _small()
    for aliases in ({"c": "c"}, {"c": "d", "d": "c"}, {"a": "b"}, {"c": "nope"}):
        out = _with_index(data, lambda ix: ix.__setitem__("aliases", aliases))
        _both(out, tmp_path, CorruptError)


def test_index_listing_more_records_than_the_limit(tmp_path):
    data = _small()
    p = tmp_path / "x.nnc"
    p.write_bytes(data)
    with pytest.raises(LimitError):
        nncodec.open(p, limits=nncodec.DEFAULT_LIMITS.replace(max_records=1))


# ----------------------------------------------------------------- headers


@pytest.mark.parametrize("change", [
    lambda h: h.__setitem__("shape", [-1]),
    lambda h: h.__setitem__("shape", [1.5]),
    lambda h: h.__setitem__("shape", [True]),
    lambda h: h.__setitem__("shape", "2x3"),
    lambda h: h.__setitem__("dtype", "complex128"),
    lambda h: h.__setitem__("name", 7),
    lambda h: h.__setitem__("pipeline", []),
    lambda h: h.__setitem__("pipeline", [{"name": "zstd"}]),
    lambda h: h.__setitem__("pipeline", [{"name": "raw"}, {"name": "raw"}]),
    lambda h: h.__setitem__("pipeline", [{"name": "raw", "configuration": {"x": 1}}]),
    lambda h: h.__setitem__("pipeline", [{"name": "no-such-codec"}]),
    lambda h: h.__setitem__("pipeline", [{"name": "raw"}] + [{"name": "zstd", "configuration": {"level": 3}}] * 100),
    lambda h: h.pop("pipeline"),
])
def test_malformed_tensor_header(tmp_path, change):
    _both(_with_tensor_header(_small(), change), tmp_path)


@pytest.mark.parametrize("text", [
    b'{"name":"a","name":"b"}', b'{"x":NaN}', b'{"x":-Infinity}', b"[1,2]", b"\xff\xfe", b"[" * 100000 + b"]" * 100000,
    b'{"x":' + b"9" * 100000 + b"}",
])
def test_hostile_json(tmp_path, text):
    data = _small()
    off = _tensor_offsets(data)[0]
    out = fix_crcs(set_header(data, off, text))
    _both(out, tmp_path)


# ----------------------------------------------------------------- decompression bombs


def _bomb(shape, dtype="float32", pipeline=None, payload=b"\0\0\0\0") -> bytes:
    data = _small()
    off = _tensor_offsets(data)[0]
    h = _header(data, off)
    h.update(shape=shape, dtype=dtype, pipeline=pipeline or [{"name": "raw"}])
    return _rebuild(set_header(data, off, json.dumps(h).encode(), payload))


_BOMB_PIPELINES = [
    [{"name": "raw"}],
    [{"name": "planes", "configuration": {"transform": "rotl1", "level": 3}}],
    [{"name": "raw"}, {"name": "zstd", "configuration": {"level": 3}}],
    [{"name": "ans", "configuration": {"precision": 14, "states": 8}}],
    [{"name": "zerorun", "configuration": {"precision": 14, "states": 8}}],
    [{"name": "scalar", "configuration": {"step": 0.1}}, {"name": "raw"}],
]


@pytest.mark.parametrize("pipeline", _BOMB_PIPELINES, ids=lambda p: "|".join(s["name"] for s in p))
# 32 GiB declared (over the 16 GiB max_tensor_bytes), over max_elements, and a product that overflows 64 bits
@pytest.mark.parametrize("shape", [[1 << 33], [1 << 23, 1 << 10], [1 << 41], [1 << 32, 1 << 32, 1 << 32]])
def test_tiny_file_declaring_a_huge_tensor(tmp_path, pipeline, shape):
    dtype = "int32" if pipeline[0]["name"] in ("ans", "zerorun") else "float32"
    data = _bomb(shape, dtype, pipeline)
    assert len(data) < 1024
    assert _peak(lambda: nncodec.decode_bytes(data)) < 8 * MB
    e1, e2 = _both(data, tmp_path)
    # refused for its size (LimitError) or, for a codec not installed, as unsupported
    assert isinstance(e1, (LimitError, nncodec.UnsupportedError)), e1


def _zstd_bomb(content: int = 64 * MB) -> bytes:
    """A 64-byte tensor whose zstd stage declares (and holds) ``content`` bytes of zeros."""
    import zstandard

    frame = zstandard.ZstdCompressor(write_content_size=True).compress(bytes(content))
    return _bomb([16], "float32", [{"name": "raw"}, {"name": "zstd", "configuration": {"level": 3}}], frame)


def test_zstd_frame_declaring_more_than_the_tensor_holds(tmp_path):
    _both(_zstd_bomb(), tmp_path, NNCodecError)


def test_zstd_bomb_is_refused_before_inflating():
    data = _zstd_bomb()
    assert len(data) < 8192
    assert _peak(lambda: nncodec.decode_bytes(data)) < 8 * MB


def test_decompression_bomb_under_a_memory_cap():
    data = _bomb([1 << 34], "float32")
    r = _run_capped(f"""
        try:
            nncodec.decode_bytes({data!r})
        except nncodec.LimitError:
            print("refused")
    """, mb=256)
    assert r.stdout.strip() == "refused", r.stderr[-2000:]


# ----------------------------------------------------------------- zero-length tensors


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8", "uint64", "bool"])
@pytest.mark.parametrize("shape", [(0,), (3, 0), (0, 0, 5)])
def test_zero_length_tensors_round_trip(dtype, shape):
    from nncodec import dtypes

    a = np.zeros(shape, dtypes.to_numpy(dtype))
    out = nncodec.decode_bytes(nncodec.encode_tensors({"e": a, "s": np.zeros((), dtypes.to_numpy(dtype))}))
    assert out["e"].shape == shape and out["e"].dtype == a.dtype
    assert out["s"].shape == ()


@pytest.mark.parametrize("pipeline", _BOMB_PIPELINES[:5], ids=lambda p: "|".join(s["name"] for s in p))
def test_zero_length_tensor_with_a_payload(tmp_path, pipeline):
    dtype = "int32" if pipeline[0]["name"] in ("ans", "zerorun") else "float32"
    data = _bomb([0, 4], dtype, pipeline, payload=b"\1" * 8)
    _both(data, tmp_path)


# ----------------------------------------------------------------- concatenation, truncation, bit flips


def test_concatenated_files(tmp_path):
    data = _small()
    _both(data + data, tmp_path, CorruptError)
    salvage = nncodec.iter_decode(data + data, salvage=True)
    assert [n for n, _ in salvage] == ["a", "b"] and isinstance(salvage.error, CorruptError)
    _both(data + b"\0" * 8, tmp_path, CorruptError)


def test_truncated_at_every_byte(tmp_path):
    data = _small()
    full = nncodec.decode_bytes(data)
    for n in range(len(data)):
        cut = data[:n]
        with pytest.raises(NNCodecError):
            nncodec.decode_bytes(cut)
        p = tmp_path / "t.nnc"
        p.write_bytes(cut)
        with pytest.raises(NNCodecError):
            nncodec.open(p).close()
        s = nncodec.iter_decode(cut, salvage=True)
        got = dict(s)
        assert isinstance(s.error, NNCodecError)
        for k, v in got.items():  # salvage keeps only whole, verified tensors
            assert v.tobytes() == full[k].tobytes()


def test_every_single_bit_flip_is_detected(tmp_path):
    data = _small()
    p = tmp_path / "f.nnc"
    for i in range(len(data)):
        for bit in range(8):
            b = bytearray(data)
            b[i] ^= 1 << bit
            b = bytes(b)
            with pytest.raises(NNCodecError):
                nncodec.decode_bytes(b)
            p.write_bytes(b)
            with pytest.raises(NNCodecError):
                with nncodec.open(p) as r:
                    r.to_dict()


# ----------------------------------------------------------------- codec payloads


def _codec_decode(pipeline, dtype, shape, payload):
    from nncodec.codecs import ArraySpec, Context
    from nncodec.pipeline import Pipeline

    return Pipeline.from_json(pipeline).decode(memoryview(payload), ArraySpec(dtype, shape), Context(name="t"))


_VARINT_HUGE = b"\xff" * 8 + b"\x7f"  # 2**63 - 1, the longest varint the specs allow
_PLANES = [{"name": "planes", "configuration": {"transform": "none", "level": 3}}]


@pytest.mark.parametrize("payload", [
    b"\1\2" + _VARINT_HUGE,  # huffman plane body length 2**63 - 1
    b"\1\3" + _VARINT_HUGE,  # context plane body length
    b"\1\2\x40" + b"\x00\xff" + b"\xff" * 128 + b"\0" * 61,  # 256 symbols, every code length 15
    b"\1\2\x04" + b"\x00\xff" + b"\x11",  # a table that ends early
    b"\1\2\x10" + b"\x00\x01\x11" + _VARINT_HUGE + b"\0" * 3,  # huge stream sizes
    b"\1\3\x08\x00\xff\xff" + b"\xff" * 4,  # context block: 256 tables, map entries out of range
    b"\1\4\x10" + b"\x28\xb5\x2f\xfd" + b"\xff" * 12,  # zstd plane, damaged frame
    b"\1" + b"\x05" * 4,  # unknown plane mode
    b"\1\1",  # const plane without its byte
    b"\x07",  # unknown layout
    b"\1\2" + b"\x80" * 12,  # a varint longer than 9 bytes
])
def test_planes_hostile_payloads(payload):
    with pytest.raises(NNCodecError):
        _codec_decode(_PLANES, "uint8", (64,), payload)
    with pytest.raises(NNCodecError):  # a large declared tensor changes nothing: refused the same way
        _codec_decode(_PLANES, "uint8", (1 << 20,), payload)


_ANS = pytest.importorskip  # (keeps flake8 quiet about the name below when ans is absent)


@pytest.mark.parametrize("codec", ["ans", "zerorun"])
@pytest.mark.parametrize("payload", [
    b"\1" + _VARINT_HUGE,  # rANS stream with an alphabet of 2**63 - 1 symbols
    b"\1\xff\x7f\x14" + _VARINT_HUGE,  # alphabet 16383, Exp-Golomb order 20, table length 2**63 - 1
    b"\1\x02\x00\x01\x07" + _VARINT_HUGE + b"\0",  # word count 2**63 - 1
    b"\1\x02\x00\x01\x07\x00" + _VARINT_HUGE,  # escape stream length 2**63 - 1
    b"\0" + _VARINT_HUGE,  # constant stream of a value no dtype holds
    b"\2",  # unknown mode
    _VARINT_HUGE,  # zerorun: nonzero count 2**63 - 1
])
def test_rans_hostile_payloads(codec, payload):
    pytest.importorskip("nncodec.codecs.ans")
    from nncodec.codecs import Context
    from nncodec.codecs.ans import Ans
    from nncodec.codecs.zerorun import ZeroRun
    from nncodec.codecs.base import ArraySpec

    c = (Ans if codec == "ans" else ZeroRun)()
    for shape in ((64,), (1 << 20,)):
        with pytest.raises(NNCodecError):
            c.decode(memoryview(payload), ArraySpec("int32", shape), Context(name="t"))


# ----------------------------------------------------------------- pickles (torch checkpoints)


_MARKER = "nncodec-hostile-marker"


class _Evil:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _evil_pickles(marker: str) -> dict:
    cmd = f"touch {marker}"
    import builtins
    import copyreg

    out = {
        "os.system": pickle.dumps(_Evil(os.system, (cmd,)), protocol=2),
        "os.system-protocol4": pickle.dumps(_Evil(os.system, (cmd,)), protocol=4),
        "builtins.eval": pickle.dumps(_Evil(builtins.eval, (f"open({marker!r}, 'w')",)), protocol=2),
        "builtins.exec": pickle.dumps(_Evil(builtins.exec, (f"open({marker!r}, 'w')",)), protocol=0),
        "subprocess.Popen": b"csubprocess\nPopen\n((S'touch'\nS'" + marker.encode() + b"'\nltR.",
        "copyreg._reconstructor": pickle.dumps(_Evil(copyreg._reconstructor, (_Evil, object, None)), protocol=2),
        "builtins.getattr": b"cbuiltins\ngetattr\n(cos\nsystem\nS'__call__'\ntR.",
        "INST-opcode": b"(S'touch " + marker.encode() + b"'\nios\nsystem\n.",
        "OBJ-opcode": b"(cos\nsystem\nS'touch " + marker.encode() + b"'\no.",
        "STACK_GLOBAL-posix": b"\x80\x04\x8c\x05posix\x8c\x06system\x93\x8c\x05touch\x85R.",
        "numpy-reconstruct": b"cnumpy.core.multiarray\n_reconstruct\n(cnumpy\nndarray\nK\x00\x85C\x01b\x87R.",
        "torch-load": b"ctorch\nload\n(S'" + marker.encode() + b"'\ntR.",
        "torch-hook": b"ctorch._utils\n_rebuild_tensor_v2\n(ctorch.hub\nload\n)R}\x88}tR.",
    }
    return out


def _torch_zip(pkl: bytes, members=()) -> bytes:
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/byteorder", b"little")
        for name, data in members:
            z.writestr(name, data)
        z.writestr("archive/version", b"3\n")
    return b.getvalue()


def _torch_legacy(pkl: bytes, tail: bytes = b"") -> bytes:
    from nncodec.io import torch as T

    return (pickle.dumps(T.MAGIC_NUMBER, protocol=2) + pickle.dumps(T.PROTOCOL_VERSION, protocol=2)
            + pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2) + pkl + tail)


@pytest.mark.parametrize("layout", ["zip", "legacy"])
@pytest.mark.parametrize("name", sorted(_evil_pickles("m")))
def test_forbidden_globals_never_run(tmp_path, layout, name):
    marker = str(tmp_path / _MARKER)
    pkl = _evil_pickles(marker)[name]
    p = tmp_path / "evil.pt"
    p.write_bytes(_torch_zip(pkl) if layout == "zip" else _torch_legacy(pkl))
    with pytest.raises(NNCodecError) as e:
        read_checkpoint(p)
    assert not os.path.exists(marker), "code named by the pickle ran"
    if name not in ("INST-opcode", "OBJ-opcode"):  # those may fail on the stack layout first
        assert isinstance(e.value, (UnsafePickleError, CorruptError))


def test_legacy_header_pickles_are_restricted_too(tmp_path):
    marker = str(tmp_path / _MARKER)
    p = tmp_path / "evil.pt"
    p.write_bytes(_evil_pickles(marker)["os.system"] + b"\0" * 64)
    with pytest.raises(NNCodecError):
        read_checkpoint(p, format="torch-legacy")
    assert not os.path.exists(marker)


def test_cyclic_and_shared_pickles(tmp_path):
    a = []
    a.append(a)
    d = {}
    d["self"] = d
    shared = ["x"] * 3
    for obj in (a, d, {"a": shared, "b": shared}):
        p = tmp_path / "c.pt"
        p.write_bytes(_torch_zip(pickle.dumps(obj, protocol=2)))
        ck = read_checkpoint(p)  # cycles are kept as references, not expanded
        assert ck.tensors == {}
    # a tuple that contains itself through a list
    t_pkl = b"\x80\x02]q\x00h\x00\x85q\x01a."
    p = tmp_path / "t.pt"
    p.write_bytes(_torch_zip(t_pkl))
    try:
        read_checkpoint(p)
    except NNCodecError:
        pass


@pytest.mark.parametrize("depth", [10_000, 200_000])
def test_deep_pickles(tmp_path, depth):
    pkl = b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."
    p = tmp_path / "d.pt"
    p.write_bytes(_torch_zip(pkl))
    with pytest.raises(NNCodecError):
        read_checkpoint(p)
    p.write_bytes(_torch_legacy(pkl))
    with pytest.raises(NNCodecError):
        read_checkpoint(p)


@pytest.mark.parametrize("opcode", [b"r\xf0\xff\xff\x3f", b"r\xff\xff\xff\xff", b"j\xff\xff\xff\x7f", b"q\xff"])
def test_pickle_with_huge_memo_indices(tmp_path, opcode):
    pkl = b"\x80\x02}" + opcode + b"."
    p = tmp_path / "m.pt"
    p.write_bytes(_torch_zip(pkl))
    assert _peak(lambda: read_checkpoint(p)) < 8 * MB
    get = b"\x80\x02" + (b"j\xf0\xff\xff\x3f" if opcode[:1] == b"r" else b"h\x05") + b"."
    p.write_bytes(_torch_zip(get))
    with pytest.raises(CorruptError):
        read_checkpoint(p)


def _tensor_pickle(size, stride, numel, offset=0) -> bytes:
    from nncodec.io._pickle import PickleWriter

    w = PickleWriter()
    w.empty_dict()
    w.mark()
    w.str("w")
    w.global_("torch._utils", "_rebuild_tensor_v2")
    w.mark()
    w.mark()
    w.str("storage")
    w.global_("torch", "FloatStorage")
    w.str("0")
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
    w.setitems()
    return w.finish()


@pytest.mark.parametrize("size,stride,numel,offset", [
    ((1 << 20, 1 << 20, 1 << 20), (1 << 40, 1 << 20, 1), 4, 0),  # 2**60 elements
    ((1 << 28,), (1,), 4, 0),  # a 1 GiB tensor over a 16-byte storage
    ((4,), (1 << 62,), 4, 0),  # a stride that reaches far past the storage
    ((2,), (1,), 1 << 40, 0),  # a storage declaring 2**40 elements
    ((2,), (1,), 4, 1 << 62),  # a storage offset past the end
])
def test_torch_huge_declared_shapes(tmp_path, size, stride, numel, offset):
    pkl = _tensor_pickle(size, stride, numel, offset)
    p = tmp_path / "h.pt"
    p.write_bytes(_torch_zip(pkl, [("archive/data/0", bytes(16))]))
    assert _peak(lambda: read_checkpoint(p)) < 8 * MB
    with pytest.raises(NNCodecError):
        read_checkpoint(p)
    p.write_bytes(_torch_legacy(pkl, pickle.dumps(["0"], protocol=2) + struct.pack("<q", numel) + bytes(16)))
    assert _peak(lambda: read_checkpoint(p)) < 8 * MB
    with pytest.raises(NNCodecError):
        read_checkpoint(p)


def _safetensors(header: dict, data: bytes = b"") -> bytes:
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


@pytest.mark.parametrize("header,data", [
    ({"w": {"dtype": "F32", "shape": [1 << 40], "data_offsets": [0, 1 << 42]}}, bytes(8)),
    ({"w": {"dtype": "F32", "shape": [1 << 31, 1 << 31], "data_offsets": [0, 8]}}, bytes(8)),
    ({"w": {"dtype": "F32", "shape": [1 << 32] * 3, "data_offsets": [0, 0]}}, b""),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "v": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, bytes(8)),
    ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, bytes(8)),
    ({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, bytes(4)),
    ({"w": {"dtype": "F32", "shape": [1] * 100, "data_offsets": [0, 4]}}, bytes(4)),
    ({"w": {"dtype": "BOOL", "shape": [2], "data_offsets": [0, 2]}}, b"\1\2"),
])
def test_safetensors_hostile_headers(tmp_path, header, data):
    p = tmp_path / "h.safetensors"
    p.write_bytes(_safetensors(header, data))
    assert _peak(lambda: read_checkpoint(p)) < 8 * MB
    with pytest.raises(NNCodecError):
        read_checkpoint(p)


def test_safetensors_huge_header_length(tmp_path):
    p = tmp_path / "h.safetensors"
    for n in ((1 << 64) - 1, 1 << 40, 100):
        p.write_bytes(struct.pack("<Q", n) + b"{}")
        with pytest.raises(NNCodecError):
            read_checkpoint(p, format="safetensors")


def _npy(shape, descr="<f4", data=b"") -> bytes:
    hdr = repr({"descr": descr, "fortran_order": False, "shape": tuple(shape)}).encode()
    hdr += b" " * ((-(10 + len(hdr) + 1)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr + data


@pytest.mark.parametrize("npy", [
    _npy((1 << 40,)), _npy((1 << 20, 1 << 20), data=bytes(16)), _npy((1 << 32,) * 3), _npy((4,), data=bytes(8)),
    _npy((2,), "|O", bytes(16)), _npy((2,), "<c16", bytes(32)), _npy((2,), "|b1", b"\1\7"), b"\x93NUMPY\x09\x00",
    b"\x93NUMPY\x01\x00\xff\xff" + b"{" * 65535,
])
def test_npz_huge_declared_shapes_and_bad_headers(tmp_path, npy):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w") as z:
        z.writestr("w.npy", npy)
    p = tmp_path / "h.npz"
    p.write_bytes(b.getvalue())
    assert _peak(lambda: read_checkpoint(p)) < 8 * MB
    with pytest.raises(NNCodecError):
        read_checkpoint(p)


def _patch_zip_size(blob: bytes, size: int) -> bytes:
    """Make every member of a zip claim ``size`` uncompressed bytes (local and central headers)."""
    b = bytearray(blob)
    i = 0
    while (i := b.find(b"PK\x03\x04", i)) >= 0:
        struct.pack_into("<I", b, i + 22, size)
        i += 4
    i = 0
    while (i := b.find(b"PK\x01\x02", i)) >= 0:
        struct.pack_into("<I", b, i + 24, size)
        i += 4
    return bytes(b)


def _deflated_zip(members) -> bytes:
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members:
            z.writestr(name, data)
    return b.getvalue()


@pytest.mark.parametrize("claimed", [0xFFFFFFF0, 100 * MB, 3])
def test_zip_bombs(tmp_path, claimed):
    # members whose declared size is far over what their compressed bytes can hold, or under what they hold
    npy = _npy((4 * MB,), "|u1", bytes(4 * MB))
    p = tmp_path / "bomb.npz"
    p.write_bytes(_patch_zip_size(_deflated_zip([("w.npy", npy)]), claimed))
    assert _peak(lambda: read_checkpoint(p)) < 3 * claimed + 16 * MB if claimed < 1 << 30 else True
    with pytest.raises(NNCodecError):
        read_checkpoint(p)
    pkl = _tensor_pickle((4 * MB,), (1,), 4 * MB)
    p = tmp_path / "bomb.pt"
    p.write_bytes(_patch_zip_size(_deflated_zip([("archive/data.pkl", pkl), ("archive/data/0", bytes(16 * MB))]), claimed))
    with pytest.raises(NNCodecError):
        read_checkpoint(p)


def test_real_zip_bomb_is_refused_before_inflating(tmp_path):
    # 1 GiB of zeros deflates to about 1 MiB: the expansion is under deflate's ceiling (1032:1), so
    # the member is refused only because its npy header does not account for its bytes
    zeros = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = b"".join(zeros.compress(bytes(64 * MB)) for _ in range(1)) + zeros.flush()
    assert len(body) < 128 * 1024
    npz = _patch_zip_size(_deflated_zip([("w.npy", _npy((8,), "<f4", bytes(32)))]), 64 * MB)
    p = tmp_path / "bomb.npz"
    p.write_bytes(npz)
    with pytest.raises(NNCodecError):
        read_checkpoint(p)


def test_every_abuse_case_has_a_test():
    """spec/SECURITY.md names, for each abuse case, the test that shows it is stopped."""
    text = open(os.path.join(ROOT, "spec", "SECURITY.md"), encoding="utf-8").read()
    import glob
    import re

    sources = "".join(open(f, encoding="utf-8").read()
                      for f in glob.glob(os.path.join(ROOT, "tests", "**", "*.py"), recursive=True))
    for name in set(re.findall(r"`(?:[\w/.]+::)?(test_[a-z0-9_]+)`", text)) | set(re.findall(r"::(test_[a-z0-9_]+)", text)):
        known = (f"def {name}(" in sources or os.path.exists(os.path.join(ROOT, "tests", name + ".py"))
                 or os.path.exists(os.path.join(ROOT, "tests", "regressions", name + ".py")))
        assert known, f"spec/SECURITY.md names {name}, which does not exist"
