"""nncodec.safe_open: the safetensors.safe_open surface, and row slices that decode only the
pieces of a chunked record they touch."""

from __future__ import annotations

import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ml_dtypes

import nncodec
from nncodec import dtypes
from nncodec.codecs import Context, codec_class
from nncodec.errors import CorruptError, FormatError, NNCodecError, UsageError
from nncodec.pipeline import Pipeline
from tests.helpers import assert_same, sample

torch = pytest.importorskip("torch")
st_torch = pytest.importorskip("safetensors.torch")
from safetensors import safe_open as st_safe_open  # noqa: E402

import nncodec.torch as nt  # noqa: E402

RAW = Pipeline([codec_class("raw")()])


def planes(dt):
    return Pipeline([codec_class("planes").for_dtype(dt)])


# name -> (array, pipeline, rows per piece or None for a whole record)
def _specs():
    rng = np.random.default_rng(9)
    return {
        "a": (sample("float32", (37, 5), 1), RAW, 4),
        "b": (sample("float32", (37, 5), 2), planes("float32"), 3),
        "c": (sample("int16", (9, 4, 3), 3), RAW, 2),
        "d": (sample("bfloat16", (50,), 4), RAW, 7),
        "e": (sample("bool", (6, 3), 5), RAW, 1),
        "f": (sample("float32", (1, 6), 6), None, None),
        "g": (np.zeros((0, 3), np.float32), None, None),
        "h": (np.array(1.25, np.float64), None, None),
        "i": (sample("uint8", (40, 2, 2), 7), planes("uint8"), 5),
        "j": (sample("float16", (8, 0, 2), 8), None, None),
        "k": ((rng.standard_normal((13, 2)) + 1j * rng.standard_normal((13, 2))).astype(np.complex64), RAW, 3),
        "l": (rng.integers(0, 256, (11, 4), dtype=np.uint8).view(dtypes.to_numpy("float4_e2m1fn_x2")), RAW, 2),
        "m": (rng.integers(0, 256, (10, 3), dtype=np.uint8).view(dtypes.to_numpy("float8_e8m0fnu")),
              planes("float8_e8m0fnu"), 4),
    }


@pytest.fixture(scope="module")
def pieces_file(tmp_path_factory):
    """A file of small chunked records (pieces of a few rows) and whole ones, plus an alias."""
    path = tmp_path_factory.mktemp("safe_open") / "pieces.nnc"
    specs = _specs()
    with nncodec.Writer(path) as w:
        w.expect_aliases(["a"])
        for name, (arr, pipe, rows) in specs.items():
            if rows is None:
                w.add(name, arr)
            else:
                w.add_encoded(name, dtypes.from_numpy(arr.dtype), arr.shape, pipe,
                              pipe.encode_pieces(arr, Context(name=name), rows))
        w.add_alias("a.tied", "a")
    arrays = {n: s[0] for n, s in specs.items()}
    arrays["a.tied"] = arrays["a"]
    with nncodec.open(path) as r:
        for n, (arr, pipe, rows) in specs.items():
            assert (r._tensor_record(n).header.get("chunks") is not None) == (rows is not None), n
    return path, arrays


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    """A file the encoder wrote with a tensor of more than 2**20 elements: 3 pieces of 1048 rows."""
    path = tmp_path_factory.mktemp("safe_open_big") / "big.nnc"
    g = torch.Generator().manual_seed(0)
    t = {"big": torch.randn(2100, 1000, generator=g).bfloat16(), "small": torch.randn(10, 3, generator=g)}
    nt.save_file(t, path, metadata={"format": "pt"})
    with nncodec.open(path) as r:
        ch = r._tensor_record("big").header["chunks"]
        assert ch["rows"] == 1048 and len(ch["sizes"]) == 3
    return path, t


def _np(x):
    """A framework result as a NumPy array, bit for bit."""
    return nt.to_numpy(x) if isinstance(x, torch.Tensor) else x


# ------------------------------------------------------------------ the safetensors surface


def test_surface_matches_safetensors(tmp_path):
    tensors = {n: nt.to_torch(a.copy()) for n, (a, _, _) in _specs().items()}
    src = tmp_path / "m.safetensors"
    st_torch.save_file(tensors, str(src), metadata={"format": "pt", "note": "x"})
    dst = tmp_path / "m.nnc"
    nncodec.encode_file(src, dst)
    keys = [slice(3, 9), 5, -1, (Ellipsis, 1), slice(None, None, 2), (slice(1, 30, 4), slice(None, None, 2)),
            (0, Ellipsis), slice(100, 200), (), Ellipsis, (slice(-3, None),), [0, 2]]
    compared = 0
    with st_safe_open(str(src), framework="pt") as ref, nncodec.safe_open(dst, framework="pt") as f:
        assert f.keys() == ref.keys()
        assert f.metadata() == ref.metadata() == {"format": "pt", "note": "x"}
        for name in ref.keys():
            want = ref.get_tensor(name)
            got = f.get_tensor(name)
            assert got.dtype == want.dtype, name
            assert_same(nt.to_numpy(got), nt.to_numpy(want))
            rs, s = ref.get_slice(name), f.get_slice(name)
            assert s.get_dtype() == rs.get_dtype(), name
            shape = s.get_shape()
            if name == "l":  # packed float4: safetensors counts values, torch (and nncodec) bytes of two
                shape[-1] *= 2
            assert shape == rs.get_shape(), name
            for k in keys:
                try:
                    w = rs[k]
                except Exception:  # an index safetensors refuses (e.g. on a 0-d tensor)
                    continue
                g = s[k]
                assert g.dtype == w.dtype and g.shape == w.shape, (name, k)
                assert_same(nt.to_numpy(g), nt.to_numpy(w))
                compared += 1
    assert compared > 80


def test_numpy_framework_and_aliases(pieces_file):
    path, arrays = pieces_file
    for fw in ("np", "numpy"):
        with nncodec.safe_open(path, framework=fw) as f:
            assert f.keys() == sorted(arrays)
            assert f.offset_keys()[-1] == "a.tied"
            assert "a" in f and "zz" not in f and len(f) == len(arrays)
            assert f.metadata() is None  # as safetensors, for a file without user metadata
            for name, arr in arrays.items():
                got = f.get_tensor(name)
                assert isinstance(got, np.ndarray)
                assert_same(got, arr)
            assert_same(f.get_slice("a.tied")[2:5], arrays["a"][2:5])
            everything = f.get_tensors()
            assert everything["a.tied"] is everything["a"]
            assert f.get_slice("d").get_dtype() == "BF16" and f.get_slice("e").get_dtype() == "BOOL"


def test_metadata_keeps_the_users_keys_only(tmp_path):
    p = tmp_path / "m.nnc"
    nt.save_file({"x": torch.ones(2)}, p, metadata={"format": "pt", "nncodec.mine": "1"})
    with nncodec.open(p) as r:
        assert "nncodec.source_format" in r.metadata
    with nncodec.safe_open(p) as f:
        assert f.metadata() == {"format": "pt", "nncodec.mine": "1"}


def test_pt_framework_gives_exact_torch_dtypes(pieces_file):
    path, arrays = pieces_file
    with nncodec.safe_open(path, framework="pt", device="cpu") as f:
        for name, arr in arrays.items():
            t = f.get_tensor(name)
            assert isinstance(t, torch.Tensor) and str(t.dtype) == f"torch.{dtypes.from_numpy(arr.dtype)}"
            assert_same(nt.to_numpy(t), arr)
        assert f.get_tensor("d").dtype is torch.bfloat16
        assert f.get_slice("d")[3:9].dtype is torch.bfloat16


# ------------------------------------------------------------------ slices against NumPy


def _entry(m):
    return st.one_of(
        st.integers(-m - 1, m),
        st.slices(m + 2),
        st.just(Ellipsis),
        st.none(),
        st.lists(st.integers(-m - 1, m), min_size=1, max_size=3),
    )


@st.composite
def _index(draw, shape):
    m = max(shape, default=1)
    items = draw(st.lists(_entry(m), max_size=len(shape) + 1))
    if len(items) == 1 and draw(st.booleans()):
        return items[0]
    return tuple(items)


@settings(max_examples=400)
@given(data=st.data())
def test_slices_equal_numpy_slicing(pieces_file, data):
    path, arrays = pieces_file
    name = data.draw(st.sampled_from(sorted(arrays)))
    arr = arrays[name]
    key = data.draw(_index(arr.shape))
    try:
        want = arr[key]
    except IndexError:
        want = None
    for fw in ("np", "pt"):
        with nncodec.safe_open(path, framework=fw, threads=1) as f:
            s = f.get_slice(name)
            if want is None:
                with pytest.raises(IndexError) as e:
                    s[key]
                assert isinstance(e.value, NNCodecError)
                continue
            got = s[key]
            assert_same(_np(got), np.asarray(want, dtype=arr.dtype))  # (a NumPy scalar drops the float4 tag)


def test_slices_of_the_encoders_chunked_record(big_file):
    path, t = big_file
    ref = t["big"]
    keys = [slice(10, 20), slice(1000, 1100), slice(2096, None), 5, -1, slice(None, None, 1000),
            slice(1500, 1400, -1), (slice(1040, 1060), slice(3, 900, 7)), (Ellipsis, 3), [1, 2099, 1048]]
    with nncodec.safe_open(path, framework="pt") as f:
        s = f.get_slice("big")
        assert s.get_shape() == [2100, 1000] and s.get_dtype() == "BF16"
        for k in keys:
            want = nt.to_numpy(ref)[k]
            assert_same(nt.to_numpy(s[k]), want)
        assert torch.equal(f.get_slice("big")[7:9], ref[7:9])


def _count_pieces(monkeypatch):
    calls = []
    real = Pipeline.decode_piece

    def counting(self, data, s, ctx, out=None):
        calls.append(s.shape[0])
        return real(self, data, s, ctx, out)

    monkeypatch.setattr(Pipeline, "decode_piece", counting)
    return calls


@pytest.mark.parametrize("key, pieces", [
    (slice(10, 20), 1), (slice(1000, 1100), 2), (slice(2096, None), 1), (5, 1), (slice(1500, 1400, -1), 1),
    (slice(None, None, 1000), 2), ([3, 2099], 3), (slice(0, 0), 0), (slice(None), 3), ((Ellipsis, 3), 3),
])
def test_a_slice_decodes_only_the_pieces_it_touches(big_file, monkeypatch, key, pieces):
    path, t = big_file
    with nncodec.safe_open(path, framework="np", threads=1) as f:
        s = f.get_slice("big")
        calls = _count_pieces(monkeypatch)
        got = s[key]
    assert len(calls) == pieces
    assert_same(got, nt.to_numpy(t["big"])[key])


def test_a_damaged_piece_spoils_only_the_slices_that_touch_it(big_file, tmp_path):
    path, t = big_file
    bad = tmp_path / "bad.nnc"
    shutil.copy(path, bad)
    with nncodec.open(path) as r:
        rec = r._tensor_record("big")
        table = nncodec.chunks.parse_table(rec.header["chunks"], (2100, 1000), rec.payload.nbytes, "big")
        piece = bytes(table.piece(rec.payload, 2))
    data = bytearray(bad.read_bytes())
    at = data.find(piece)
    assert at > 0 and data.find(piece, at + 1) < 0
    data[at + len(piece) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    ref = nt.to_numpy(t["big"])
    with nncodec.safe_open(bad, framework="np") as f:
        s = f.get_slice("big")
        assert s.get_shape() == [2100, 1000]  # the header is intact
        assert_same(s[0:2000], ref[0:2000])  # pieces 0 and 1 only
        assert_same(s[1048:1050, 5], ref[1048:1050, 5])
        with pytest.raises(CorruptError, match="chunk 2"):
            s[2097:2099]
        with pytest.raises(CorruptError, match="checksum"):
            f.get_tensor("big")
        assert_same(f.get_tensor("small"), nt.to_numpy(t["small"]))
    with nncodec.open(bad) as r:
        assert_same(r.read_rows("big", 5, 1500), ref[5:1500])
        with pytest.raises(CorruptError):
            r.read_rows("big", 0, 2100)
    with pytest.raises(CorruptError):
        nt.load_file(bad)


def test_lossy_records_slice_the_decoded_tensor(tmp_path, monkeypatch):
    g = torch.Generator().manual_seed(1)
    t = {"w": torch.randn(1100, 1000, generator=g), "s": torch.randn(64, 48, generator=g)}
    p = tmp_path / "lossy.nnc"
    nt.save_file(t, p, max_error=0.01)
    full = nt.load_file(p)
    with nncodec.safe_open(p, framework="pt") as f:
        with nncodec.open(p) as r:  # a chunked record with an array->array stage (the quantizer)
            rec = r._tensor_record("w")
            assert rec.header.get("chunks") and r.info("w").pipeline.array_stages
        for name in t:
            for k in (slice(3, 9), (slice(60, 2, -5), 4), 0, (Ellipsis, slice(1, None, 3))):
                got = f.get_slice(name)[k].numpy()
                assert_same(got, full[name].numpy()[k])
                assert np.abs(got - t[name].numpy()[k]).max() <= 0.01 * (1 + 1e-6)
    calls = _count_pieces(monkeypatch)
    with nncodec.safe_open(p, framework="np", threads=1) as f:
        f.get_slice("w")[3:9]
    assert len(calls) == 2  # a lossy record decodes whole: both pieces


# ------------------------------------------------------------------ threads


def test_one_object_serves_many_threads(big_file, pieces_file):
    path, t = big_file
    ref = nt.to_numpy(t["big"])
    rng = np.random.default_rng(0)
    jobs = []
    for _ in range(48):
        a = int(rng.integers(0, 2100))
        b = int(rng.integers(a, min(2100, a + 300) + 1))
        jobs.append((a, b))
    with nncodec.safe_open(path, framework="pt") as f:
        def work(ab):
            a, b = ab
            if a % 7 == 0:
                return ab, nt.to_numpy(f.get_tensor("small"))
            return ab, nt.to_numpy(f.get_slice("big")[a:b])

        with ThreadPoolExecutor(8) as ex:
            for (a, b), got in ex.map(work, jobs):
                want = nt.to_numpy(t["small"]) if a % 7 == 0 else ref[a:b]
                assert_same(got, want)


def test_close_waits_for_reads_in_flight(big_file):
    path, t = big_file
    f = nncodec.safe_open(path, framework="np")
    started, results = threading.Event(), []

    def read():
        r = f._acquire()  # a read in flight, as get_slice holds it
        started.set()
        try:
            results.append(r.read_rows("big", 0, 1200))
        finally:
            f._release()

    th = threading.Thread(target=read)
    th.start()
    started.wait()
    f.close()
    th.join()
    assert_same(results[0], nt.to_numpy(t["big"])[:1200])
    with pytest.raises(UsageError, match="closed"):
        f.get_tensor("big")
    f.close()  # twice is fine


# ------------------------------------------------------------------ errors


def test_errors_name_the_problem(pieces_file, tmp_path):
    path, _ = pieces_file
    with pytest.raises(UsageError, match="'pt'.*'np'") as e:
        nncodec.safe_open(path, framework="tf")
    assert "tf" in str(e.value)
    with pytest.raises(UsageError, match="framework"):
        nncodec.safe_open(path, framework=None)
    with pytest.raises(UsageError, match="cpu"):
        nncodec.safe_open(path, framework="np", device="cuda:0")
    with pytest.raises(UsageError, match="device"):
        nncodec.safe_open(path, framework="pt", device="no-such-device")
    with nncodec.safe_open(path, framework="np") as f:
        for get in (f.get_tensor, f.get_slice):
            with pytest.raises(KeyError, match="nope") as e:
                get("nope")
            assert isinstance(e.value, NNCodecError) and "'nope'" in str(e.value)
        s = f.get_slice("c")  # shape (9, 4, 3)
        assert len(s) == 9
        for bad in (1.5, "a", True, slice(0, 2, 0), slice(0.5, 2), {1}, [0.5]):
            with pytest.raises(UsageError):
                s[bad]
        for bad in ((Ellipsis, Ellipsis), (0, 0, 0, 0), 9, -10, (0, 4), [0, 9], ([0, 1], [0, 1, 2])):
            with pytest.raises(IndexError) as e:
                s[bad]
            assert isinstance(e.value, NNCodecError)
        with pytest.raises(IndexError):
            f.get_slice("h")[0]  # 0-d
        assert_same(f.get_slice("h")[...], np.array(1.25))
        with pytest.raises(TypeError):
            len(f.get_slice("h"))
        with nncodec.open(path) as r:
            for a, b in ((3, 2), (0, 10), (-1, 2)):
                with pytest.raises(UsageError, match="rows"):
                    r.read_rows("c", a, b)
            with pytest.raises(UsageError, match="0-dimensional"):
                r.read_rows("h", 0, 0)
            with pytest.raises(UsageError, match="integers"):
                r.read_rows("c", 0.0, 2)
            with pytest.raises(KeyError):
                r.read_rows("nope", 0, 1)
    st_path = tmp_path / "x.safetensors"
    st_torch.save_file({"x": torch.ones(2)}, str(st_path))
    with pytest.raises(FormatError):
        nncodec.safe_open(st_path)
    with pytest.raises(UsageError, match="cannot open"):
        nncodec.safe_open(tmp_path / "missing.nnc")
    with pytest.raises(UsageError, match="path"):
        nncodec.safe_open(b"bytes")


def test_read_rows_matches_slicing_for_every_range(pieces_file):
    path, arrays = pieces_file
    with nncodec.open(path) as r:
        for name, arr in arrays.items():
            if arr.ndim == 0:
                continue
            n = arr.shape[0]
            for a in range(n + 1):
                for b in range(a, n + 1):
                    got = r.read_rows(name, a, b)
                    assert_same(got, arr[a:b])
                    assert got.flags.writeable and got.flags.c_contiguous
    assert ml_dtypes.bfloat16 == arrays["d"].dtype
