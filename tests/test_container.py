"""The container: records, index, trailer, streaming, lazy reading, damage detection."""

import io
import os
import struct
import zlib

import numpy as np
import pytest

import nncodec
from nncodec import dtypes
from nncodec.codecs.raw import Raw
from nncodec.codecs.zstd import Zstd
from nncodec.format.constants import FILE_MAGIC, TRAILER_SIZE
from nncodec.pipeline import Pipeline

from helpers import assert_same, sample

ALL = list(dtypes.DTYPE_NAMES)


def roundtrip(tensors, **kw):
    data = nncodec.encode_tensors(tensors, **kw)
    return data, nncodec.decode_bytes(data)


@pytest.mark.parametrize("dtype", ALL)
@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2), (1,), (7,), (64, 33), (5, 4, 3, 2)])
def test_roundtrip_every_dtype_and_shape(dtype, shape):
    a = sample(dtype, shape)
    _, out = roundtrip({"t": a})
    assert_same(out["t"], a)


@pytest.mark.parametrize("dtype", ["float32", "float64", "int16", "int64", "uint32", "float16"])
def test_big_endian_and_noncontiguous(dtype):
    a = sample(dtype, (40, 30))
    be = a.astype(a.dtype.newbyteorder(">"))
    nc = a[::2, ::-3]
    tr = a.T
    _, out = roundtrip({"be": be, "nc": nc, "tr": tr})
    assert_same(out["be"], a)
    assert_same(out["nc"], np.ascontiguousarray(nc))
    assert_same(out["tr"], np.ascontiguousarray(tr))


def test_metadata_names_and_order():
    names = ["b", "a", "ü/ñ.weight", "名前", "", "x" * 1000]
    t = {n: np.full((2,), i, np.float32) for i, n in enumerate(names)}
    data, out = roundtrip(t, metadata={"k": "v", "ключ": "значение"})
    assert list(out) == names
    s = nncodec.iter_decode(data)
    list(s)
    assert s.metadata == {"k": "v", "ключ": "значение"}


def test_aliases_stream_and_lazy(tmp_path):
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    data, out = roundtrip({"embed": w, "bias": np.ones(3), "head": w})
    assert out["head"] is out["embed"]
    p = tmp_path / "a.nnc"
    p.write_bytes(data)
    with nncodec.open(p) as r:
        assert r.keys() == ["embed", "bias", "head"]
        assert r.aliases() == {"head": "embed"}
        assert_same(r["head"], w)
        assert r.info("head").alias_of == "embed"


def test_writer_to_nonseekable_pipe():
    r, wfd = os.pipe()
    import threading

    arrays = {f"t{i}": sample("float32", (100, i + 1), seed=i) for i in range(5)}
    got = []

    def consume():
        with os.fdopen(r, "rb", buffering=0) as f:
            for name, a in nncodec.iter_decode(f):
                got.append((name, a))

    th = threading.Thread(target=consume)
    th.start()
    with os.fdopen(wfd, "wb", buffering=0) as f:
        class NoSeek:
            def write(self, b):
                return f.write(b)

        with nncodec.Writer(NoSeek()) as w:
            for n, a in arrays.items():
                w.add(n, a)
    th.join(30)
    assert [n for n, _ in got] == list(arrays)
    for n, a in got:
        assert_same(a, arrays[n])


def test_stream_decodes_before_the_end():
    """A stream reader yields the first tensor before the rest of the file has arrived."""
    data = nncodec.encode_tensors({"a": np.ones(10, np.float32), "b": np.zeros(1000, np.float32)})

    class Trickle(io.RawIOBase):
        def __init__(self):
            self.pos = 0
            self.max_pos = 0

        def readable(self):
            return True

        def readinto(self, b):
            n = min(len(b), 7, len(data) - self.pos)
            b[:n] = data[self.pos:self.pos + n]
            self.pos += n
            self.max_pos = self.pos
            return n

    src = Trickle()
    it = iter(nncodec.iter_decode(src))
    name, a = next(it)
    assert name == "a" and src.max_pos < len(data) // 2
    assert [n for n, _ in it] == ["b"]


def test_lazy_reader_reads_only_its_record(tmp_path):
    tensors = {f"t{i}": sample("float32", (50, 50), seed=i) for i in range(4)}
    p = tmp_path / "m.nnc"
    p.write_bytes(nncodec.encode_tensors(tensors))
    # damage t0's payload: reading t3 still works, reading t0 fails naming it
    with nncodec.open(p) as r:
        off = r._tensors["t0"]
    raw = bytearray(p.read_bytes())
    raw[off + 200] ^= 0x10
    p.write_bytes(raw)
    with nncodec.open(p) as r:
        assert_same(r["t3"], tensors["t3"])
        with pytest.raises(nncodec.CorruptError, match="t0"):
            r["t0"]


def test_empty_file_and_layout():
    data = nncodec.encode_tensors({})
    assert len(data) == 120  # spec/FORMAT.md section 10
    assert data[:8] == FILE_MAGIC and data[8:12] == bytes([1, 2, 0, 0])  # version 1.2
    assert data[12:16] == zlib.crc32(data[:12]).to_bytes(4, "little")
    assert nncodec.decode_bytes(data) == {}
    # every record starts 8-aligned and the trailer points at the index
    idx_off, flen, res, crc, magic = struct.unpack("<QQII8s", data[-TRAILER_SIZE:])
    assert flen == len(data) and idx_off % 8 == 0 and data[idx_off:idx_off + 3] == b"NRI"
    assert crc == zlib.crc32(data[-TRAILER_SIZE:-12])


def test_deterministic_bytes():
    t = {"w": sample("float32", (300, 20)), "i": sample("int64", (50,))}
    assert nncodec.encode_tensors(t) == nncodec.encode_tensors(t)


def test_explicit_pipelines():
    a = sample("float32", (100, 10))
    buf = io.BytesIO()
    with nncodec.Writer(buf) as w:
        w.add("raw", a, pipeline=Pipeline([Raw()]))
        w.add("z", a, pipeline=Pipeline([Raw(), Zstd(5)]))
    out = nncodec.decode_bytes(buf.getvalue())
    assert_same(out["raw"], a)
    assert_same(out["z"], a)


def test_writer_refuses_bad_use(tmp_path):
    w = nncodec.Writer(io.BytesIO())
    w.add("a", np.ones(2))
    with pytest.raises(nncodec.UsageError, match="already"):
        w.add("a", np.ones(2))
    with pytest.raises(nncodec.UsageError, match="has not been added"):
        w.add_alias("b", "nope")
    with pytest.raises(nncodec.UnsupportedError):
        w.add("c", np.ones(2, np.complex128))
    with pytest.raises(nncodec.UsageError):
        w.add("\ud800", np.ones(2))
    w.close()
    with pytest.raises(nncodec.UsageError, match="closed"):
        w.add("d", np.ones(2))


def test_writer_path_is_atomic(tmp_path):
    p = tmp_path / "out.nnc"
    with pytest.raises(RuntimeError):
        with nncodec.Writer(p) as w:
            w.add("a", np.ones(100, np.float32))
            raise RuntimeError("boom")
    assert not p.exists()
    assert os.listdir(tmp_path) == []
    with nncodec.Writer(p) as w:
        w.add("a", np.ones(100, np.float32))
    assert nncodec.open(p).keys() == ["a"]


# ------------------------------------------------------------------ damage


def _file(tmp_path, data):
    p = tmp_path / "f.nnc"
    p.write_bytes(bytes(data))
    return p


def _decode_all_ways(tmp_path, data):
    """Decode with both readers; return the exceptions (None where it decoded)."""
    errs = []
    for how in ("stream", "lazy"):
        try:
            if how == "stream":
                nncodec.decode_bytes(bytes(data))
            else:
                with nncodec.open(_file(tmp_path, data)) as r:
                    r.to_dict()
            errs.append(None)
        except nncodec.NNCodecError as e:
            errs.append(e)
    return errs


def test_every_single_bit_flip_is_detected(tmp_path):
    t = {"w": sample("float32", (8, 8)), "b": sample("int8", (5,))}
    data = nncodec.encode_tensors(t, metadata={"m": "x"})
    for pos in range(len(data)):
        bad = bytearray(data)
        bad[pos] ^= 1 << (pos % 8)
        for e in _decode_all_ways(tmp_path, bad):
            assert e is not None, f"flip at byte {pos} went undetected"


def test_every_truncation_is_detected(tmp_path):
    data = nncodec.encode_tensors({"w": sample("float32", (8, 8)), "a": np.ones(3)})
    for n in range(len(data)):
        for e in _decode_all_ways(tmp_path, data[:n]):
            assert isinstance(e, nncodec.NNCodecError), n
    with pytest.raises(nncodec.TruncatedError, match="salvage"):
        nncodec.open(_file(tmp_path, data[:-1]))


def test_concatenated_files_are_refused(tmp_path):
    data = nncodec.encode_tensors({"w": np.ones(4)})
    with pytest.raises(nncodec.CorruptError, match="concatenated|follows"):
        nncodec.decode_bytes(data + data)
    with pytest.raises(nncodec.NNCodecError):
        nncodec.open(_file(tmp_path, data + data))


def test_salvage_keeps_tensors_before_damage():
    t = {f"t{i}": sample("float32", (20, 20), seed=i) for i in range(4)}
    data = nncodec.encode_tensors(t)
    cut = data[: len(data) * 3 // 4]
    s = nncodec.iter_decode(cut, salvage=True)
    got = dict(s)
    assert isinstance(s.error, nncodec.TruncatedError)
    assert 1 <= len(got) < 4
    for n, a in got.items():
        assert_same(a, t[n])
    with pytest.raises(nncodec.TruncatedError):
        nncodec.decode_bytes(cut)


def test_not_an_nnc_file(tmp_path):
    with pytest.raises(nncodec.FormatError, match="not an nncodec file"):
        nncodec.decode_bytes(b"hello world, this is text" * 3)
    data = nncodec.encode_tensors({"w": np.ones(4)})
    text_mode = data.replace(b"\r\n", b"\n")
    with pytest.raises(nncodec.FormatError, match="text-mode"):
        nncodec.decode_bytes(text_mode)
    with pytest.raises(nncodec.TruncatedError, match="empty"):
        nncodec.open(_file(tmp_path, b""))


def test_newer_major_version_refused():
    data = bytearray(nncodec.encode_tensors({}))
    data[8] = 2
    data[12:16] = zlib.crc32(data[:12]).to_bytes(4, "little")
    with pytest.raises(nncodec.UnsupportedError, match="upgrade"):
        nncodec.decode_bytes(bytes(data))
