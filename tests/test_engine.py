"""The engine: chunked records (format 1.1), threads, the in-place safetensors decoder, and
limits that never refuse nncodec's own files."""

import hashlib
import io
import os

import numpy as np
import pytest

import nncodec
from nncodec import chunks as ch
from nncodec.cli import main
from nncodec.codecs import ArraySpec, Context, codec_class
from nncodec.errors import CorruptError, LimitError, UsageError
from nncodec.io import Checkpoint, safetensors as st
from nncodec.pipeline import Pipeline

from helpers import assert_same

MB = 1 << 20


def _model(seed=0):
    import ml_dtypes

    rng = np.random.default_rng(seed)
    return {
        "emb": (rng.standard_normal((6000, 384)) * 0.02).astype(np.float32),  # 3 pieces of 2730 rows
        "bf": (rng.standard_normal((4100, 300)) * 0.02).astype(ml_dtypes.bfloat16),  # 2 pieces
        "bias": rng.standard_normal(384).astype(np.float32),
        "small": (rng.standard_normal((16, 16)) * 0.1).astype(np.float32),
        "steps": np.arange(40, dtype=np.int64),
        "mask": np.arange(30) % 3 == 0,
    }


def _write(path, tensors, aliases=None):
    st.write(str(path), Checkpoint(tensors=tensors, aliases=aliases or {}, metadata={"note": "engine"}))


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


# ------------------------------------------------------------------ chunk layout


def test_rows_per_chunk():
    assert ch.rows_per_chunk((3000, 384)) == (1 << 20) // 384
    assert ch.rows_per_chunk((100, 384)) is None  # one piece
    assert ch.rows_per_chunk((5, 1 << 21)) == 1  # rows bigger than a chunk: one row per piece
    assert ch.rows_per_chunk(()) is None and ch.rows_per_chunk((1, 1 << 22)) is None
    assert ch.rows_per_chunk((4, 0)) is None
    assert ch.piece_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]


def test_large_tensors_are_chunked_and_small_ones_are_not(tmp_path):
    t = _model()
    _write(tmp_path / "m.safetensors", t)
    nncodec.encode_file(tmp_path / "m.safetensors", tmp_path / "m.nnc")
    with nncodec.open(tmp_path / "m.nnc") as r:
        tables = {n: r._tensor_record(n).header.get("chunks") for n in r.keys()}
        for n, a in t.items():
            assert_same(r[n], a)
    assert len(tables["emb"]["sizes"]) == 3 and tables["emb"]["rows"] == (1 << 20) // 384
    assert len(tables["bf"]["sizes"]) == 2
    assert all(tables[n] is None for n in ("bias", "small", "steps", "mask"))
    assert open(tmp_path / "m.nnc", "rb").read()[8:10] == bytes([1, 2])  # format 1.2


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_output_bytes_do_not_depend_on_threads(tmp_path, threads):
    t = _model()
    _write(tmp_path / "m.safetensors", t)
    ref = tmp_path / "ref.nnc"
    nncodec.encode_file(tmp_path / "m.safetensors", ref, threads=1)
    out = tmp_path / f"t{threads}.nnc"
    nncodec.encode_file(tmp_path / "m.safetensors", out, threads=threads)
    assert _sha(out) == _sha(ref)
    lossy1 = tmp_path / "l1.nnc"
    lossyn = tmp_path / "ln.nnc"
    nncodec.encode_file(tmp_path / "m.safetensors", lossy1, threads=1, bits=4)
    nncodec.encode_file(tmp_path / "m.safetensors", lossyn, threads=threads, bits=4)
    assert _sha(lossy1) == _sha(lossyn)
    # and decoding: the same bytes on any number of threads, in place or not
    back1, backn = tmp_path / "b1.safetensors", tmp_path / "bn.safetensors"
    nncodec.decode_file(lossy1, back1, threads=1)
    nncodec.decode_file(lossy1, backn, threads=threads)
    assert _sha(back1) == _sha(backn)


def test_in_place_safetensors_decoder_matches_the_generic_writer(tmp_path):
    t = _model()
    _write(tmp_path / "m.safetensors", t, aliases={"tied": "emb"})
    for opts in ({}, {"bits": 3}):
        nnc = tmp_path / "m.nnc"
        nncodec.encode_file(tmp_path / "m.safetensors", nnc, **opts)
        fast = tmp_path / "fast.safetensors"
        nncodec.decode_file(nnc, fast, threads=2)
        # the generic path: every tensor gathered, then the safetensors writer
        with nncodec.open(nnc) as r:
            ck = Checkpoint(tensors={n: r[n] for n in r._tensors}, aliases=r.aliases(), metadata=r.metadata)
        generic = tmp_path / "generic.safetensors"
        st.write(str(generic), ck)
        assert _sha(fast) == _sha(generic)
        if not opts:
            assert _sha(fast) == _sha(tmp_path / "m.safetensors")  # lossless: the original file


def test_stream_reader_and_reader_decode_chunked_records(tmp_path):
    t = _model()
    data = nncodec.encode_tensors(t)
    for name, arr in nncodec.iter_decode(io.BytesIO(data), threads=2):
        assert_same(arr, t[name])
    (tmp_path / "m.nnc").write_bytes(data)
    with nncodec.open(tmp_path / "m.nnc", threads=2) as r:
        lv = r.levels("emb")  # lossless: the serializer's output is the tensor
        assert_same(lv, t["emb"])


class _BadPieces(ch.Pieces):
    def __init__(self, pieces, table):
        object.__setattr__(self, "rows", pieces.rows)
        object.__setattr__(self, "parts", pieces.parts)
        object.__setattr__(self, "crcs", None)
        object.__setattr__(self, "_table", table)

    def table(self):
        return self._table


def _file_with_table(mutate) -> bytes:
    a = (np.random.default_rng(1).standard_normal((20, 6)) * 0.1).astype(np.float32)
    pipe = Pipeline([codec_class("planes").for_dtype("float32")])
    pieces = pipe.encode_pieces(a, Context(name="w"), 7)
    table = pieces.table()
    mutate(table)
    buf = io.BytesIO()
    with nncodec.Writer(buf) as w:
        w.add_encoded("w", "float32", a.shape, pipe, _BadPieces(pieces, table))
    return buf.getvalue()


@pytest.mark.parametrize("mutate, match", [
    (lambda t: t.update(rows=0), "rows"),
    (lambda t: t.update(rows=20), "rows"),
    (lambda t: t.update(rows=True), "rows"),
    (lambda t: t.update(rows=6), "sizes"),  # 4 pieces declared by rows, 3 sizes
    (lambda t: t["sizes"].__setitem__(0, t["sizes"][0] + 1), "add up"),
    (lambda t: t["sizes"].__setitem__(0, -1), "sizes"),
    (lambda t: t.pop("crc32"), "exactly"),
    (lambda t: t.update(extra=1), "exactly"),
    (lambda t: t["crc32"].__setitem__(1, "x"), "crc32"),
])
def test_bad_chunk_tables_are_refused_naming_the_field(mutate, match):
    data = _file_with_table(mutate)
    with pytest.raises(CorruptError, match=match):
        nncodec.decode_bytes(data)


def test_chunk_sizes_that_move_a_piece_boundary_are_refused():
    def shift(t):
        t["sizes"][0] += 5
        t["sizes"][1] -= 5

    with pytest.raises(CorruptError, match="'w'"):
        nncodec.decode_bytes(_file_with_table(shift))


def test_chunk_table_on_a_whole_tensor_codec_is_refused():
    a = np.arange(20 * 6, dtype=np.float32).reshape(20, 6)
    pipe = Pipeline([codec_class("raw")()])
    pieces = pipe.encode_pieces(a, Context(name="w"), 7)
    # a record claiming chunks for a codec that codes whole tensors (bloomier's serializer)
    spec = ArraySpec("float32", (20, 6))
    bloom = Pipeline([codec_class("prune")(sparsity=0.5), codec_class("bloomier")(4, 8)])
    with pytest.raises(CorruptError, match="whole tensors"):
        bloom.decode(memoryview(b"".join(pieces.parts)), spec, Context(name="w"), chunks=pieces.table())


def test_piece_crc_check():
    a = np.arange(40, dtype=np.float32).reshape(10, 4)
    pipe = Pipeline([codec_class("raw")()])
    pieces = pipe.encode_pieces(a, Context(name="w"), 3)
    table = ch.parse_table(pieces.table(), a.shape, pieces.nbytes, "w")
    payload = bytearray(b"".join(pieces.parts))
    ch.check_piece_crc(table.piece(payload, 1), table, 1, "w")
    payload[table.offsets[1]] ^= 1
    with pytest.raises(CorruptError, match="chunk 1"):
        ch.check_piece_crc(table.piece(payload, 1), table, 1, "w")


def test_crc32_combine():
    import zlib

    rng = np.random.default_rng(9)
    parts = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (0, 1, 7, 4096, 70001)]
    pieces = ch.Pieces(1, tuple(parts))
    assert pieces.payload_crc() == zlib.crc32(b"".join(parts))
    assert ch.crc32_combine(zlib.crc32(b"ab"), zlib.crc32(b"cd"), 2) == zlib.crc32(b"abcd")


def test_threads_argument_is_checked():
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(UsageError, match="threads"):
            ch.resolve_threads(bad)
    assert ch.resolve_threads(None) >= 1


# ------------------------------------------------------------------ limits


def _constant_models(tmp_path):
    n = 4096  # 4096 x 4096 float32: 64 MiB each
    const = np.full((n, n), 0.125, np.float32)
    zero = np.zeros((n, n), np.float32)
    return const, zero


def test_constant_and_zero_64mb_tensors_decode_with_default_limits(tmp_path):
    const, zero = _constant_models(tmp_path)
    src = tmp_path / "c.safetensors"
    _write(src, {"const": const, "lora_B": zero})
    nnc = tmp_path / "c.nnc"
    nncodec.encode_file(src, nnc)
    assert os.path.getsize(nnc) < 64 * 1024  # 128 MiB of tensors in a few KiB
    back = tmp_path / "back.safetensors"
    nncodec.decode_file(nnc, back)  # default limits
    assert _sha(back) == _sha(src)
    with nncodec.open(nnc) as r:
        assert_same(r["lora_B"], zero)
    assert dict(nncodec.iter_decode(str(nnc)))["const"][4095, 4095] == np.float32(0.125)
    assert main(["compare", str(src), str(nnc), "--json"]) == 0
    assert main(["decode", str(nnc), str(tmp_path / "cli.safetensors"), "-q"]) == 0
    assert _sha(tmp_path / "cli.safetensors") == _sha(src)


def test_unchanged_64mb_tensor_in_an_update_patches_with_default_limits(tmp_path):
    rng = np.random.default_rng(3)
    emb = (rng.standard_normal((4096, 4096)) * 0.02).astype(np.float32)  # unchanged by the fine-tune
    head = (rng.standard_normal((64, 64)) * 0.02).astype(np.float32)
    base, new = tmp_path / "base.safetensors", tmp_path / "new.safetensors"
    _write(base, {"emb": emb, "head": head})
    _write(new, {"emb": emb, "head": head + np.float32(0.001)})
    upd = tmp_path / "u.nnc"
    assert main(["diff", str(base), str(new), str(upd), "-q"]) == 0
    assert os.path.getsize(upd) < 64 * 1024
    out = tmp_path / "patched.safetensors"
    assert main(["patch", str(base), str(upd), str(out), "-q"]) == 0
    assert _sha(out) == _sha(new)


def test_max_tensor_size_refuses_before_decoding_and_can_be_raised(tmp_path, capsys):
    t = {"w": np.zeros((512, 1024), np.float32)}  # 2 MiB
    _write(tmp_path / "m.safetensors", t)
    nnc = tmp_path / "m.nnc"
    nncodec.encode_file(tmp_path / "m.safetensors", nnc)
    out = tmp_path / "out.safetensors"
    assert main(["decode", str(nnc), str(out), "--max-tensor-size", "1M"]) == 1
    err = capsys.readouterr().err
    assert "max_tensor_bytes" in err and "'w'" in err and "--max-tensor-size" in err
    assert not out.exists()
    assert main(["decode", str(nnc), str(out), "--max-tensor-size", "4MiB", "-q"]) == 0
    small = nncodec.DEFAULT_LIMITS.replace(max_tensor_bytes=MB)
    with pytest.raises(LimitError, match="max_tensor_bytes"):
        with nncodec.open(nnc, limits=small) as r:
            r["w"]
    with pytest.raises(SystemExit) as e:
        main(["decode", str(nnc), str(out), "--max-tensor-size", "lots"])
    assert e.value.code == 2 and "not a size" in capsys.readouterr().err


def test_cli_threads_give_the_same_file(tmp_path):
    _write(tmp_path / "m.safetensors", _model())
    a, b = tmp_path / "a.nnc", tmp_path / "b.nnc"
    assert main(["encode", str(tmp_path / "m.safetensors"), str(a), "--threads", "1", "-q"]) == 0
    assert main(["encode", str(tmp_path / "m.safetensors"), str(b), "--threads", "2", "-q"]) == 0
    assert _sha(a) == _sha(b)
    with pytest.raises(SystemExit) as e:
        main(["encode", str(tmp_path / "m.safetensors"), str(b), "--threads", "0"])
    assert e.value.code == 2


# ------------------------------------------------------------------ stream reader memory


def test_stream_reader_keeps_only_alias_targets(tmp_path):
    import gc
    import weakref

    rng = np.random.default_rng(5)
    t = {f"layer{i}": rng.standard_normal((64, 64)).astype(np.float32) for i in range(6)}
    t["tied"] = t["layer1"]  # the same array: an alias of layer1
    data = nncodec.encode_tensors(t)
    refs = {}
    stream = nncodec.iter_decode(io.BytesIO(data))
    for name, arr in stream:
        if name == "tied":
            assert arr is refs["layer1"]()  # the target was kept for its alias
            continue
        assert_same(arr, t[name])
        refs[name] = weakref.ref(arr)
        del arr
        gc.collect()
        # every tensor yielded before the one just read is gone, except the alias target
        for prev in list(refs)[:-1]:
            assert (refs[prev]() is not None) == (prev == "layer1"), prev
    assert stream.aliases == {"tied": "layer1"}


def test_writer_asks_for_alias_targets_to_be_named(tmp_path):
    a = np.ones((4, 4), np.float32)
    buf = io.BytesIO()
    with nncodec.Writer(buf) as w:
        w.add("x", a)
        w.add_alias("x2", "x")  # the tensor just added: always allowed
        w.add("y", a * 2)
        with pytest.raises(UsageError, match="expect_aliases"):
            w.add_alias("x3", "x")
    out = nncodec.decode_bytes(buf.getvalue())
    assert out["x2"] is out["x"]
    buf = io.BytesIO()
    with nncodec.Writer(buf) as w:
        w.expect_aliases(["x"])
        w.add("x", a)
        w.add("y", a * 2)
        w.add_alias("x3", "x")
    out = nncodec.decode_bytes(buf.getvalue())
    assert out["x3"] is out["x"]


@pytest.mark.parametrize("tensor", ["emb", "small"])  # a chunked record, a whole one
def test_in_place_decoder_detects_a_flipped_payload_bit(tmp_path, tensor):
    _write(tmp_path / "m.safetensors", _model())
    nnc = tmp_path / "m.nnc"
    nncodec.encode_file(tmp_path / "m.safetensors", nnc)
    with nncodec.open(nnc) as r:
        rec = r._tensor_record(tensor)
        at = rec.end - 8 - (rec.end - rec.offset) // 4  # inside the payload
    raw = bytearray(nnc.read_bytes())
    raw[at] ^= 0x04
    nnc.write_bytes(raw)
    out = tmp_path / "out.safetensors"
    for threads in (1, 2):
        with pytest.raises(CorruptError, match=f"{tensor}.*checksum"):
            nncodec.decode_file(nnc, out, threads=threads)
        assert not out.exists()


# ------------------------------------------------------------------ bounded memory


def _rss_kb() -> int:
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0])


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc (Linux)")
def test_released_input_pages_leave_rss_and_values_unchanged(tmp_path):
    from nncodec._memory import release_array

    rng = np.random.default_rng(11)
    t = {f"w{i}": rng.standard_normal((1024, 2048)).astype(np.float32) for i in range(8)}  # 64 MiB
    _write(tmp_path / "m.safetensors", t)
    del t
    ck = st.read(str(tmp_path / "m.safetensors"))
    sums = {n: float(a.sum(dtype=np.float64)) for n, a in ck.tensors.items()}  # touches every page
    before = _rss_kb()
    for a in ck.tensors.values():
        release_array(a)
    assert before - _rss_kb() > 48 * 1024  # most of the 64 MiB went back
    assert {n: float(a.sum(dtype=np.float64)) for n, a in ck.tensors.items()} == sums
    release_array(np.ones(10))  # not a mapping: nothing happens


def _peak_rss_of(cmd) -> int:
    import subprocess
    import sys

    code = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    r = subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True, check=True)
    return int(r.stdout.split()[-1])


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc (Linux)")
def test_encode_and_decode_peak_memory_is_bounded_by_chunks_not_the_file(tmp_path):
    import sys

    rng = np.random.default_rng(12)
    # 256 MiB of float32 in 16 tensors of 16 MiB: whole-file holding would need > 256 MiB
    base = rng.standard_normal((1024, 4096)).astype(np.float32)
    t = {f"w{i}": np.roll(base, i, axis=0) for i in range(16)}
    src = tmp_path / "m.safetensors"
    _write(src, t)
    del t, base
    idle = _peak_rss_of([sys.executable, "-c", "import nncodec.files, nncodec.codecs.planes, numba"]) // 1024
    nnc, back = tmp_path / "m.nnc", tmp_path / "back.safetensors"
    enc = _peak_rss_of([sys.executable, "-m", "nncodec", "encode", str(src), str(nnc), "-q"]) // 1024
    dec = _peak_rss_of([sys.executable, "-m", "nncodec", "decode", str(nnc), str(back), "-q"]) // 1024
    assert _sha(back) == _sha(src)
    assert enc - idle < 160, (enc, idle)  # MiB above an idle interpreter
    assert dec - idle < 160, (dec, idle)
    cmp = _peak_rss_of([sys.executable, "-m", "nncodec", "compare", str(src), str(nnc)]) // 1024
    assert cmp - idle < 160, (cmp, idle)  # one tensor of each side at a time, float64 in blocks


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc (Linux)")
@pytest.mark.parametrize("fmt", ["torch", "torch-legacy"])
def test_torch_checkpoints_are_mapped_when_read_and_streamed_when_written(tmp_path, fmt):
    import sys

    from nncodec.io.torch import writer

    rng = np.random.default_rng(13)
    base = rng.standard_normal((1024, 4096)).astype(np.float32)
    t = {f"w{i}": np.roll(base, i, axis=0) for i in range(16)}  # 256 MiB
    src = tmp_path / "m.pt"
    writer.write(src, Checkpoint(tensors=t), format=fmt)
    del t
    idle = _peak_rss_of([sys.executable, "-c", "import nncodec.files, nncodec.codecs.planes, numba"]) // 1024
    nnc = tmp_path / "m.nnc"
    enc = _peak_rss_of([sys.executable, "-m", "nncodec", "encode", str(src), str(nnc), "-q"]) // 1024
    with nncodec.open(nnc) as r:
        assert np.array_equal(r["w3"], np.roll(base, 3, axis=0))
    # copying every storage (or keeping the pages read for the zip CRC) would hold 256 MiB
    assert enc - idle < 160, (enc, idle)
    # and back: the torch writer loads, writes and lets go of one tensor at a time
    back = tmp_path / "back.pt"
    dec = _peak_rss_of([sys.executable, "-m", "nncodec", "decode", str(nnc), str(back), "-q"]) // 1024
    assert _sha(back) == _sha(src)
    assert dec - idle < 160, (dec, idle)
    npz = tmp_path / "back.npz"
    dec = _peak_rss_of([sys.executable, "-m", "nncodec", "decode", str(nnc), str(npz), "-q"]) // 1024
    with np.load(npz) as z:
        assert np.array_equal(z["w15"], np.roll(base, 15, axis=0))
    assert dec - idle < 160, (dec, idle)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_threads_work_in_a_forked_child(tmp_path):
    t = _model()
    data = nncodec.encode_tensors(t)
    nncodec.decode_bytes(data)  # the parent's pool exists now
    (tmp_path / "m.nnc").write_bytes(data)
    pid = os.fork()
    if pid == 0:  # the child: a pool of the parent's would hang here
        code = 1
        try:
            with nncodec.open(tmp_path / "m.nnc", threads=2) as r:
                code = 0 if np.array_equal(r["emb"], t["emb"]) else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_patch_streams_safetensors_with_tied_weights(tmp_path):
    t = _model()
    base, new = tmp_path / "base.safetensors", tmp_path / "new.safetensors"
    _write(base, t, aliases={"tied": "emb"})
    t2 = dict(t, small=t["small"] + np.float32(0.5), emb=t["emb"] * np.float32(1.001))
    _write(new, t2, aliases={"tied": "emb"})
    upd, out = tmp_path / "u.nnc", tmp_path / "out.safetensors"
    assert main(["diff", str(base), str(new), str(upd), "-q"]) == 0
    assert main(["patch", str(base), str(upd), str(out), "-q"]) == 0
    assert _sha(out) == _sha(new)
    assert not list(tmp_path.glob("*.data"))  # the spill file is gone


def test_atomic_outputs_fsync_only_what_replaces_a_file(tmp_path, monkeypatch):
    from nncodec import _atomic

    synced = []
    real = os.fsync
    monkeypatch.setattr(_atomic.os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    dst = tmp_path / "out.bin"
    with _atomic.atomic_path(dst) as tmp:
        # the name is reserved but the file is not there: the writer creates it (no truncation)
        assert not os.path.exists(tmp) and os.path.dirname(tmp) == str(tmp_path)
        with open(tmp, "wb") as f:
            f.write(b"new")
    assert dst.read_bytes() == b"new" and synced == []  # a new path: nothing to lose, no flush
    with _atomic.atomic_path(dst) as tmp:
        with open(tmp, "wb") as f:
            f.write(b"newer")
    assert dst.read_bytes() == b"newer" and len(synced) == 1  # replacing: flushed before the rename
    with pytest.raises(RuntimeError):
        with _atomic.atomic_path(dst) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"partial")
            raise RuntimeError("interrupted")
    assert dst.read_bytes() == b"newer" and os.listdir(tmp_path) == ["out.bin"]
    with pytest.raises(RuntimeError):  # failing before the writer created the file leaves nothing either
        with _atomic.atomic_path(tmp_path / "other.bin"):
            raise RuntimeError("early")
    assert os.listdir(tmp_path) == ["out.bin"]
