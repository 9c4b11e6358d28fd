"""Reading .nnc files from a remote store: ``http(s)://`` and, through fsspec, ``s3://``,
``gs://``, ``hf://`` ... (whatever fsspec backend is installed).

A remote file is read with range requests, never downloaded whole: opening it fetches the
first few KiB (file header, metadata record) and the last few (trailer, index); a tensor
then costs one request for its record (prefix, header and payload together, bounded by the
next record's offset in the index), a header alone (``Reader.spec``, ``Reader.info``) one
small request, and rows of a chunked record (``Reader.read_rows``, ``safe_open(...)
.get_slice``) one request for the record header and one for the pieces the rows meet.
Checksums are verified as for a local file: the whole record's, or each piece's.

A server that ignores ``Range`` headers would send the whole file for every request: such a
file is downloaded once, whole, into memory if it is at most :data:`FULL_DOWNLOAD_LIMIT`
bytes, and refused above that (download it and open the local copy).

Errors: a missing file (HTTP 404) or a refused request (other 4xx) is a
:class:`~nncodec.errors.UsageError` naming the URL; a network failure or a server error
(5xx) is a :class:`RemoteError` (an ``OSError``); a remote file shorter than it claims is
a :class:`~nncodec.errors.TruncatedError`; a flipped byte a
:class:`~nncodec.errors.CorruptError`. Without fsspec (or aiohttp, for http/https) a
:class:`~nncodec.errors.UsageError` names what to install: ``pip install fsspec aiohttp``
(the ``remote`` extra).
"""

from __future__ import annotations

import contextlib
import io
import re
import threading
import urllib.parse
import urllib.request

from .errors import CorruptError, TruncatedError, UsageError
from .format import container as C

__all__ = ["is_url", "local_path", "RemoteFile", "RemoteError", "FULL_DOWNLOAD_LIMIT"]

#: a file on a server without range support is downloaded whole up to this size (bytes)
FULL_DOWNLOAD_LIMIT = 32 << 20
#: bytes fetched from the start when a file is opened (file header, metadata record)
HEAD_BYTES = 4096
#: bytes fetched from the end when a file is opened (trailer, index); a larger index costs one more request
TAIL_BYTES = 16384
#: bytes fetched for a record header read without its payload; a larger header costs one more request
HEADER_PROBE = 16384

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+)://")
_INSTALL = "pip install fsspec aiohttp (or, in a checkout of nncodec, pip install '.[remote]')"


class RemoteError(ConnectionError):
    """A remote file could not be read: the network failed or the server reported an error."""


def is_url(path) -> bool:
    """True for ``scheme://...`` other than ``file://`` (a local path)."""
    if not isinstance(path, str):
        return False
    m = _SCHEME.match(path)
    return bool(m) and m.group(1).lower() != "file"


def local_path(path):
    """``file:///a/b.nnc`` -> ``/a/b.nnc``; anything else unchanged."""
    if isinstance(path, str) and path[:7].lower() == "file://":
        return urllib.request.url2pathname(urllib.parse.urlparse(path).path)
    return path


def _show(url: str) -> str:
    """The URL without user name, password or query string (which may hold credentials)."""
    try:
        p = urllib.parse.urlsplit(url)
        host = p.hostname or ""
        if p.port:
            host += f":{p.port}"
        return urllib.parse.urlunsplit((p.scheme, host, p.path, "", ""))
    except ValueError:
        return url.split("?", 1)[0]


def _aiohttp_errors():
    try:
        import aiohttp
    except ImportError:
        return None
    return aiohttp


class _NoRanges(Exception):
    """The server answered a range request with the whole file."""


@contextlib.contextmanager
def _translated(url: str, what: str):
    """fsspec's and aiohttp's exceptions as nncodec's (see the module docstring)."""
    import asyncio

    aio = _aiohttp_errors()
    try:
        yield
    except (UsageError, CorruptError, _NoRanges):
        raise
    except FileNotFoundError as e:
        cause = e.__cause__
        status = getattr(cause, "status", None)
        if status is None and cause is not None and not isinstance(cause, FileNotFoundError):
            raise RemoteError(f"{what}: cannot reach the server: {cause}") from None
        if status not in (None, 404):
            _status_error(what, status, getattr(cause, "message", ""))
        raise UsageError(f"{what}: not found (no file at this URL{', HTTP 404' if status == 404 else ''})") from None
    except PermissionError as e:
        raise UsageError(f"{what}: access denied ({e})") from None
    except ValueError as e:
        if "range requests" in str(e):
            raise _NoRanges() from None
        raise
    except (OSError, asyncio.TimeoutError) as e:
        raise RemoteError(f"{what}: network error: {e or type(e).__name__}") from None
    except Exception as e:
        if aio is not None and isinstance(e, aio.ClientResponseError):
            _status_error(what, e.status, e.message)
        if aio is not None and isinstance(e, aio.ClientPayloadError):
            raise TruncatedError(f"{what}: the connection ended before the bytes asked for arrived "
                                 f"(the remote file is shorter than the server says, or the transfer was cut)") from None
        if aio is not None and isinstance(e, aio.ClientError):
            raise RemoteError(f"{what}: network error: {e or type(e).__name__}") from None
        raise


def _status_error(what: str, status: int, message: str = ""):
    text = f"HTTP {status}" + (f" {message}" if message else "")
    if status == 404:
        raise UsageError(f"{what}: not found ({text})")
    if 400 <= status < 500:
        raise UsageError(f"{what}: the server refused the request ({text})")
    raise RemoteError(f"{what}: the server failed ({text})")


def _filesystem(url: str, what: str):
    try:
        import fsspec
    except ImportError:
        raise UsageError(f"{what}: reading a URL needs fsspec (and aiohttp for http/https): {_INSTALL}") from None
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as e:
        raise UsageError(f"{what}: the fsspec backend for this URL is not installed ({e}); for http/https: "
                         f"{_INSTALL}") from None
    except ValueError as e:
        if "protocol" in str(e).lower():
            raise UsageError(f"{what}: fsspec knows no backend for this URL's scheme ({e})") from None
        raise


class RemoteFile:
    """A remote file read by byte ranges; counts what it fetched (:attr:`bytes_fetched`,
    :attr:`requests`). The first and last few KiB are kept; everything else is fetched
    when asked for and not kept."""

    def __init__(self, url: str, *, full_download_limit: int | None = None):
        self.url = url
        self.what = _show(url)
        self.bytes_fetched = 0
        self.requests = 0
        self._lock = threading.Lock()
        self._limit = FULL_DOWNLOAD_LIMIT if full_download_limit is None else full_download_limit
        self._whole = None
        self._file = None
        self._pinned: list = []  # (start, bytes) kept for the life of the file
        fs, path = _filesystem(url, self.what)
        self._fs, self._path = fs, path
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        self._http = protocol in ("http", "https")
        if self._http and _aiohttp_errors() is None:
            raise UsageError(f"{self.what}: reading http/https URLs needs aiohttp: {_INSTALL}")
        with _translated(url, self.what):
            info = fs.info(path)
        if info.get("type") == "directory":
            raise UsageError(f"{self.what}: is a folder; a remote folder is not read, give the URL of one .nnc file")
        size = info.get("size")
        if not isinstance(size, int) or size < 0:
            raise UsageError(f"{self.what}: the server does not say how long the file is, so it cannot be read "
                             f"by ranges; download it and open the local copy")
        self.size = size
        if self._http:
            with _translated(url, self.what):
                self._file = fs.open(path, "rb", block_size=1 << 20, cache_type="none", size=size)
            if info.get("partial", True) is False:  # Accept-Ranges: none
                self._download_whole()

    # -- fetching

    def _download_whole(self) -> None:
        if self.size > self._limit:
            raise UsageError(
                f"{self.what}: the server ignores HTTP range requests, so reading any part of this "
                f"{self.size}-byte file would download all of it (more than the {self._limit}-byte limit "
                f"for that); download it (`curl -o model.nnc URL`) and open the local file")
        with _translated(self.url, self.what):
            data = self._fs.cat_file(self._path)
        self._count(len(data))
        if len(data) != self.size:
            raise TruncatedError(f"{self.what}: the server sent {len(data)} bytes of a file it says is "
                                 f"{self.size} bytes long (a cut-off transfer, or the file changed)")
        self._whole = memoryview(bytes(data))

    def _count(self, n: int) -> None:
        with self._lock:
            self.bytes_fetched += n
            self.requests += 1

    def fetch(self, start: int, end: int) -> memoryview:
        """Bytes ``start:end`` of the file (``0 <= start <= end <= size``), from one request."""
        if end <= start:
            return memoryview(b"")
        if self._whole is not None:
            return self._whole[start:end]
        try:
            with _translated(self.url, self.what):
                if self._file is not None:
                    data = self._file._fetch_range(start, end)
                else:
                    data = self._fs.cat_file(self._path, start=start, end=end)
        except _NoRanges:
            self._download_whole()
            return self._whole[start:end]
        self._count(len(data))
        if len(data) != end - start:
            if self._http and len(data) > end - start:
                self._download_whole()
                return self._whole[start:end]
            raise TruncatedError(
                f"{self.what}: asked for bytes {start}..{end - 1} of a {self.size}-byte file, got {len(data)}: "
                f"the remote file is shorter than the server says (truncated upload?) or changed while read")
        return memoryview(data)

    def read(self, start: int, end: int) -> memoryview:
        """Bytes ``start:end``: from the kept first/last bytes when they hold them, else fetched."""
        for s, b in self._pinned:
            if s <= start and end <= s + len(b):
                return b[start - s:end - s]
        return self.fetch(start, end)

    def pin(self, start: int, end: int) -> memoryview:
        data = self.fetch(start, end)
        self._pinned.append((start, data))
        return data

    def stream(self, block: int = 4 << 20):
        """The file as a readable stream from its start, fetched in ranges of ``block`` bytes or
        more (for reading in order, as ``iter_decode`` does)."""
        import io

        return io.BufferedReader(_RawStream(self), buffer_size=block)

    def close(self) -> None:
        self._pinned = []
        self._whole = None
        f, self._file = self._file, None
        if f is not None:
            with contextlib.suppress(Exception):
                f.close()

    # -- the parts every reader needs

    def open_index(self) -> int:
        """Fetch (and keep) the file header and metadata region and the trailer and index; check
        the file header and the trailer; return the index offset."""
        size, what = self.size, self.what
        if size == 0:
            raise TruncatedError(f"{what}: the remote file is empty (an interrupted upload?)")
        if size <= HEAD_BYTES + TAIL_BYTES:
            whole = self.pin(0, size)
            head, tail_start, tail = whole, 0, whole
        else:
            head = self.pin(0, HEAD_BYTES)
            tail_start = size - TAIL_BYTES
            tail = self.pin(tail_start, size)
        C.read_file_header(C.Source(head, what=what))
        index_offset = C.read_trailer(_Tail(size, tail_start, tail), what)
        if index_offset < tail_start:  # a large index: fetch the rest of it
            self.pin(index_offset, tail_start)
        return index_offset

    def source(self, offset: int, limit: int, span_end: int, *, lazy: bool = False) -> "RangeSource":
        return RangeSource(self, offset, limit, span_end, lazy)


class _RawStream(io.RawIOBase):
    """A raw readable stream over a :class:`RemoteFile` (see :meth:`RemoteFile.stream`)."""

    def __init__(self, rf: RemoteFile):
        super().__init__()
        self._rf = rf
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        view = memoryview(b).cast("B")
        n = min(view.nbytes, self._rf.size - self._pos)
        if n <= 0:
            return 0
        view[:n] = self._rf.fetch(self._pos, self._pos + n)
        self._pos += n
        return n


class _Tail:
    """The last bytes of a remote file, indexed as the whole file (for container.read_trailer)."""

    def __init__(self, size: int, start: int, data: memoryview):
        self._size, self._start, self._data = size, start, data

    def __len__(self):
        return self._size

    def __getitem__(self, key):
        a, b, _ = key.indices(self._size)
        return self._data[a - self._start:b - self._start]


class RangeSource(C.Source):
    """The bytes of one record of a remote file, as :func:`container.read_record` reads them.

    Eager (``lazy=False``): ``offset:span_end`` (the record and any alias records before the
    next tensor record) is fetched in one request when the source is made; reads beyond it
    fetch what they need. Lazy: only the prefix and header are fetched (``HEADER_PROBE``
    bytes, more if the header is longer); the payload comes back as a :class:`LazyPayload`,
    fetched by the slices asked for, and its padding is checked when its last bytes are
    fetched."""

    def __init__(self, rf: RemoteFile, offset: int, limit: int, span_end: int, lazy: bool):
        super().__init__(buf=b"", pos=offset, what=rf.what)
        self._rf = rf
        self._limit = limit
        self._lazy = lazy
        self._payload = None
        end = min(span_end, limit)
        if lazy:
            end = min(end, offset + HEADER_PROBE)
        self._start = offset
        self._win = rf.read(offset, max(end, offset))

    def read(self, n: int, field: str):
        end = self.pos + n
        if end > self._limit:
            raise TruncatedError(
                f"{self.what}: truncated: {field} needs {n} bytes at offset {self.pos}, "
                f"the file has {max(self._limit - self.pos, 0)} left (incomplete download or copy?)")
        # container.read_record names its reads "record prefix", "record header",
        # "payload of ...", "record padding"; a lazy source defers the last two
        if self._lazy and field.startswith("payload"):
            self._payload = LazyPayload(self._rf, self.pos, n)
            self.pos = end
            return self._payload
        if self._lazy and field == "record padding" and self._payload is not None:
            self._payload.pad = n
            self.pos = end
            return bytes(n)
        a = self.pos - self._start
        if a >= 0 and end - self._start <= len(self._win):
            out = self._win[a:a + n]
        else:
            out = self._rf.read(self.pos, end)
        self.pos = end
        return out

    def at_eof(self) -> bool:
        return self.pos >= self._limit


class LazyPayload:
    """The payload of a remote record, not fetched yet: ``nbytes``, ``len()`` and slicing
    (``p[a:b]`` fetches those bytes in one request and returns a memoryview)."""

    def __init__(self, rf: RemoteFile, offset: int, nbytes: int):
        self._rf = rf
        self.offset = offset
        self.nbytes = nbytes
        self.pad = 0

    def __len__(self) -> int:
        return self.nbytes

    def __getitem__(self, key) -> memoryview:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("a remote payload is sliced with [a:b] only")
        a, b, _ = key.indices(self.nbytes)
        b = max(a, b)
        pad = self.pad if b == self.nbytes else 0
        data = self._rf.read(self.offset + a, self.offset + b + pad)
        if pad:
            if any(data[b - a:]):
                raise CorruptError(f"{self._rf.what}: record at offset {self.offset}: padding bytes after the "
                                   f"payload are not zero")
            data = data[:b - a]
        return data

    def fetch(self) -> memoryview:
        """The whole payload (and its padding checked)."""
        return self[:]


def materialize(rec: C.Record) -> C.Record:
    """``rec`` with a :class:`LazyPayload` replaced by its bytes (one request)."""
    if isinstance(rec.payload, LazyPayload):
        import dataclasses

        return dataclasses.replace(rec, payload=rec.payload.fetch())
    return rec
