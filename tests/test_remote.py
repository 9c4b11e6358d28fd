"""Remote .nnc files (nncodec.remote): read over HTTP from a server on 127.0.0.1 that
serves single byte ranges and counts the bytes it sends."""

from __future__ import annotations

import http.server
import os
import re
import threading

import numpy as np
import pytest

pytest.importorskip("fsspec")
pytest.importorskip("aiohttp")

import nncodec  # noqa: E402
from nncodec import remote  # noqa: E402
from nncodec.errors import CorruptError, TruncatedError, UsageError  # noqa: E402
from nncodec.pipeline import Pipeline  # noqa: E402


class _Handler(http.server.BaseHTTPRequestHandler):
    """GET and HEAD of files under ``server.root``; ``Range: bytes=a-b`` (single ranges) unless
    ``server.ranges`` is False; every body byte sent is counted in ``server.sent``."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def handle(self):
        try:
            super().handle()
        except (ConnectionResetError, BrokenPipeError):  # a client that hung up
            pass

    def _target(self):
        path = os.path.join(self.server.root, self.path.split("?", 1)[0].lstrip("/"))
        return path if os.path.isfile(path) else None

    def _send(self, head_only: bool):
        path = self._target()
        if path is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        size = os.path.getsize(path)
        start, end = 0, size
        rng = self.headers.get("Range")
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng or "")
        if self.server.ranges and m and not head_only:
            a, b = m.group(1), m.group(2)
            if a == "":
                start, end = max(size - int(b), 0), size
            else:
                start, end = int(a), min(int(b) + 1 if b else size, size)
            if start >= size or end <= start:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        else:
            self.send_response(200)
        if self.server.ranges:
            self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start))
        self.end_headers()
        if head_only:
            return
        with open(path, "rb") as f:
            f.seek(start)
            left = end - start
            try:
                while left:
                    block = f.read(min(left, 1 << 20))
                    self.wfile.write(block)
                    with self.server.lock:
                        self.server.sent += len(block)
                        self.server.gets += 1 if left == end - start else 0
                    left -= len(block)
            except (BrokenPipeError, ConnectionResetError):
                pass

    def do_HEAD(self):
        self._send(True)

    def do_GET(self):
        self._send(False)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: str, ranges: bool = True):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.ranges = ranges
        self.sent = 0
        self.gets = 0
        self.lock = threading.Lock()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"

    def reset(self) -> None:
        with self.lock:
            self.sent = 0
            self.gets = 0


def _serve(root, ranges=True):
    srv = _Server(str(root), ranges)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    return srv


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A small file (metadata, an alias, a chunked tensor) and a ~64 MB file of 2 MB tensors."""
    root = tmp_path_factory.mktemp("remote")
    rng = np.random.default_rng(0)
    small = {
        "emb": rng.integers(0, 256, (4096, 512), dtype=np.uint8),  # 2 MiB: 2 chunks of 2^20 elements
        "w": rng.standard_normal((64, 32)).astype(np.float32),
        "b": np.zeros(7, np.float16),
    }
    small["tied"] = small["w"]
    (root / "small.nnc").write_bytes(nncodec.encode_tensors(small, metadata={"who": "test"}))
    raw = Pipeline.from_json([{"name": "raw"}])
    with nncodec.Writer(str(root / "big.nnc"), metadata={"kind": "big"}) as w:
        for i in range(32):
            a = rng.integers(0, 2**31, 2 << 18, dtype=np.int32).reshape(512, 1024)  # 2 MiB
            w.add(f"layer{i}.weight", a, pipeline=raw)
    srv = _serve(root)
    yield root, small, srv
    srv.shutdown()
    srv.server_close()


def test_is_url():
    assert remote.is_url("https://h/x.nnc") and remote.is_url("s3://b/k.nnc") and remote.is_url("hf://a/b")
    assert not remote.is_url("file:///tmp/x.nnc") and not remote.is_url("/tmp/x.nnc")
    assert not remote.is_url("C:\\x.nnc") and not remote.is_url(os.path)
    assert remote.local_path("file:///tmp/a%20b.nnc") == "/tmp/a b.nnc"


def test_open_url_equals_local(files):
    root, small, srv = files
    with nncodec.open(str(root / "small.nnc")) as loc, nncodec.open(srv.url("small.nnc")) as r:
        assert r.keys() == loc.keys()
        assert r.metadata == loc.metadata and r.aliases() == loc.aliases()
        assert r.file_size == os.path.getsize(root / "small.nnc")
        for n in loc.keys():
            np.testing.assert_array_equal(r[n], loc[n])
            assert r.spec(n) == loc.spec(n)
            i, j = r.info(n), loc.info(n)
            assert (i.stored_bytes, i.record_bytes, i.alias_of) == (j.stored_bytes, j.record_bytes, j.alias_of)
        np.testing.assert_array_equal(r.read_rows("emb", 100, 3000), small["emb"][100:3000])
        assert r.remote.bytes_fetched > 0
    with nncodec.open("file://" + str(root / "small.nnc")) as r:  # file:// is a local path
        assert r.remote is None and r.keys() == list(small)[:3] + ["tied"]


def test_one_tensor_of_a_large_file_costs_its_record(files):
    root, _, srv = files
    size = os.path.getsize(root / "big.nnc")
    assert size > 60 << 20
    srv.reset()
    with nncodec.open(srv.url("big.nnc")) as r:
        opened = srv.sent
        index_bytes = size - r._index_offset
        assert opened <= remote.HEAD_BYTES + remote.TAIL_BYTES + index_bytes
        info = nncodec.open(str(root / "big.nnc")).info("layer17.weight")
        arr = r["layer17.weight"]
        assert arr.shape == (512, 1024)
        sent = srv.sent
    assert r.remote.bytes_fetched == sent
    # the record (plus at most the alias records before the next tensor), the trailer, the index
    assert info.record_bytes <= sent - opened <= info.record_bytes + 64
    assert sent <= info.record_bytes + (64 << 10) + index_bytes
    print(f"\nremote: {size} byte file, one {info.record_bytes} byte record: {sent} bytes served "
          f"({opened} to open)")


def test_safe_open_slice_fetches_touched_pieces(files):
    root, small, srv = files
    with nncodec.safe_open(str(root / "small.nnc"), framework="np") as loc:
        want = loc.get_slice("emb")[10:20, 5:9]
    srv.reset()
    with nncodec.safe_open(srv.url("small.nnc"), framework="np") as f:
        opened = srv.sent
        assert sorted(f.keys()) == f.keys() and f.metadata() == {"who": "test"}
        sl = f.get_slice("emb")
        assert sl.get_shape() == [4096, 512]
        got = sl[10:20, 5:9]
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got, small["emb"][10:20, 5:9])
        spent = srv.sent - opened
        with nncodec.open(str(root / "small.nnc")) as loc:
            rec = loc._tensor_record("emb", verify=False)
            sizes = rec.header["chunks"]["sizes"]
        assert len(sizes) == 2
        # the header probe and the first piece, not the second
        assert spent <= remote.HEADER_PROBE + sizes[0] + 64
        assert spent < remote.HEADER_PROBE + sizes[0] + sizes[1] // 2
        np.testing.assert_array_equal(f.get_tensor("tied"), small["w"])


def test_cli_decode_and_info_url(files, tmp_path, capsys):
    from nncodec.cli import main

    root, small, srv = files
    out, ref = tmp_path / "out.safetensors", tmp_path / "ref.safetensors"
    assert main(["decode", "-q", srv.url("small.nnc"), str(out)]) == 0
    assert main(["decode", "-q", str(root / "small.nnc"), str(ref)]) == 0
    assert out.read_bytes() == ref.read_bytes()
    salvaged = tmp_path / "salvaged.safetensors"  # read in order, in large ranges
    assert main(["decode", "-q", "--salvage", srv.url("small.nnc"), str(salvaged)]) == 0
    assert salvaged.read_bytes() == ref.read_bytes()
    npz = tmp_path / "out.npz"
    assert main(["decode", "-q", srv.url("small.nnc"), str(npz)]) == 0
    with np.load(npz) as z:
        np.testing.assert_array_equal(z["emb"], small["emb"])
    capsys.readouterr()
    assert main(["info", "--json", srv.url("small.nnc")]) == 0
    import json

    doc = json.loads(capsys.readouterr().out)
    assert doc["file_bytes"] == os.path.getsize(root / "small.nnc")
    assert [t["name"] for t in doc["tensors"]] == ["emb", "w", "b", "tied"]


def test_missing_file_and_bad_host(files, tmp_path, capsys):
    from nncodec.cli import main

    _, _, srv = files
    with pytest.raises(UsageError, match="not found"):
        nncodec.open(srv.url("nope.nnc"))
    out = tmp_path / "o.safetensors"
    assert main(["decode", srv.url("nope.nnc"), str(out)]) == 2
    assert "nope.nnc" in capsys.readouterr().err and not out.exists()
    assert not list(tmp_path.iterdir())  # no half-written output
    # nothing listens on the port of a closed server
    s = _Server(str(tmp_path))
    url = s.url("x.nnc")
    s.server_close()
    with pytest.raises(remote.RemoteError, match="cannot reach|network"):
        nncodec.open(url)


def test_large_index_metadata_and_headers(tmp_path):
    """An index past the 16 KiB tail, metadata past the 4 KiB head and a record header past the
    16 KiB probe each cost one more request, and read the same as locally."""
    rng = np.random.default_rng(3)
    tensors = {f"block{i:04d}.with.a.long.name.weight": rng.standard_normal(3).astype(np.float32)
               for i in range(1500)}
    wide = "wide." + "n" * 20000  # a record header longer than the probe
    tensors[wide] = rng.integers(0, 256, (300, 8192), dtype=np.uint8)  # 3 pieces
    md = {"notes": "x" * 20000}
    (tmp_path / "m.nnc").write_bytes(nncodec.encode_tensors(tensors, metadata=md))
    srv = _serve(tmp_path)
    try:
        with nncodec.open(str(tmp_path / "m.nnc")) as loc, nncodec.open(srv.url("m.nnc")) as r:
            assert size_ok(loc, r)
            assert r.metadata == md and r.keys() == loc.keys()
            assert len(loc._tensor_record(wide, verify=False).header["chunks"]["sizes"]) == 3
            assert r.spec(wide) == loc.spec(wide)
            np.testing.assert_array_equal(r.read_rows(wide, 7, 9), tensors[wide][7:9])
            np.testing.assert_array_equal(r.read_rows(wide, 100, 290), tensors[wide][100:290])
            np.testing.assert_array_equal(r[wide], tensors[wide])
            name = "block0777.with.a.long.name.weight"
            np.testing.assert_array_equal(r[name], tensors[name])
    finally:
        srv.shutdown()
        srv.server_close()


def size_ok(loc, r) -> bool:
    return r.file_size == loc.file_size and r.remote.requests >= 3


def test_server_without_ranges(files, monkeypatch):
    root, small, _ = files
    srv = _serve(root, ranges=False)
    try:
        with pytest.raises(UsageError, match="ignores HTTP range requests"):
            nncodec.open(srv.url("big.nnc"))
        assert srv.sent < 8 << 20  # refused without downloading the file
        with nncodec.open(srv.url("small.nnc")) as r:  # small: downloaded whole, once
            np.testing.assert_array_equal(r["emb"], small["emb"])
            assert r.remote.bytes_fetched <= 2 * os.path.getsize(root / "small.nnc")
        monkeypatch.setattr(remote, "FULL_DOWNLOAD_LIMIT", 1000)
        with pytest.raises(UsageError, match="curl"):
            nncodec.open(srv.url("small.nnc"))
    finally:
        srv.shutdown()
        srv.server_close()


def test_corrupt_and_truncated_remote(files, tmp_path):
    root, small, _ = files
    data = bytearray((root / "small.nnc").read_bytes())
    with nncodec.open(str(root / "small.nnc")) as loc:
        info = loc.info("w")
        off = loc._tensors["w"]
    bad = bytearray(data)
    bad[off + info.record_bytes - 40] ^= 0x10  # inside w's payload
    (tmp_path / "bad.nnc").write_bytes(bytes(bad))
    (tmp_path / "cut.nnc").write_bytes(bytes(data[: len(data) - 100]))
    srv = _serve(tmp_path)
    try:
        with nncodec.open(srv.url("bad.nnc")) as r:
            np.testing.assert_array_equal(r["b"], small["b"])
            with pytest.raises(CorruptError, match="checksum"):
                r["w"]
        with pytest.raises(TruncatedError):
            nncodec.open(srv.url("cut.nnc"))
        with nncodec.safe_open(srv.url("bad.nnc"), framework="np") as f:
            with pytest.raises(CorruptError):
                f.get_slice("w")[0:2]
    finally:
        srv.shutdown()
        srv.server_close()


def test_missing_fsspec(monkeypatch):
    import builtins

    real = builtins.__import__

    def fake(name, *a, **k):
        if name == "fsspec" or name.startswith("fsspec."):
            raise ImportError("no fsspec")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(UsageError, match=r"pip install fsspec aiohttp"):
        nncodec.open("https://127.0.0.1:9/x.nnc")
