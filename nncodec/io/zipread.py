"""The checked zip reader both zip-based formats (torch zip checkpoints, .npz) use.

A zip archive from a stranger is read under three rules:

* **one meaning per file**: member names must be unique (two ``archive/data.pkl``
  or two ``byteorder`` members would let nncodec and torch, which reads the
  last copy, see different files) and free of NUL bytes (Python's zipfile cuts
  a name at a NUL, other readers do not);
* **never allocate what a header merely claims**: a member's declared size is
  checked against the bytes the file really holds (stored members), against
  what deflate can produce from its compressed bytes (at most
  :data:`DEFLATE_MAX_RATIO` times, plus :data:`DEFLATE_SLACK`), against
  ``limits.max_expansion`` and, when the caller knows it, against the size the
  content must have (:meth:`ZipReader.read` ``expect``). Data then inflates in
  a stream, so memory follows the bytes actually produced. A stored member
  (torch's default) is not read at all: :meth:`ZipReader.view` returns a
  read-only view of its bytes in a map of the file, after its local header,
  its place in the file and its CRC-32 have been checked;
* **only nncodec errors leave**: whatever zipfile or zlib raise becomes a
  :class:`~nncodec.errors.CorruptError` (or a subclass) with a bounded message.
"""

from __future__ import annotations

import mmap
import struct
import zipfile
import zlib

from .._memory import release
from ..errors import CorruptError, LimitError, NNCodecError, TruncatedError, UnsupportedError, describe
from ..format.constants import Limits

#: what the zipfile module raises on a damaged or hostile archive
ZIP_ERRORS = (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError, UnicodeError,
              IndexError, KeyError, OverflowError, struct.error, zlib.error)  # fmt: skip

#: deflate cannot expand data more than this (a 258-byte match coded in 2 bits)
DEFLATE_MAX_RATIO = 1032
#: allowance for the block headers of a tiny deflate stream
DEFLATE_SLACK = 1 << 10
#: the local file header before a member's name (its fixed part, in bytes)
LOCAL_HEADER = 30

_READ_CHUNK = 16 << 20
#: a local file header: signature, versions, flags, method, time, date, CRC, sizes, name and extra lengths
_LOCAL = struct.Struct("<4s2B4HL2L2H")


def deflate_bound(compressed: int) -> int:
    """The most bytes a deflate stream of ``compressed`` bytes can inflate to."""
    return compressed * DEFLATE_MAX_RATIO + DEFLATE_SLACK


def member_name(name: str) -> str:
    """A member name for an error message: at most 80 characters, with its length when cut."""
    return describe(name, 80)


class ZipReader:
    """A zip archive opened for checked reading (see the module docstring).

    ``kind`` names the archive in messages ("zip archive", ".npz archive").
    Raises :class:`~nncodec.errors.TruncatedError` when the central directory
    cannot be read, :class:`~nncodec.errors.CorruptError` for duplicate or
    NUL-carrying member names.
    """

    def __init__(self, path, limits: Limits, *, file_size: int, kind: str = "zip archive"):
        self.path = path
        self.limits = limits
        self.file_size = file_size
        self._mm = None
        try:
            self._zf = zipfile.ZipFile(path)
        except zipfile.BadZipFile as e:
            raise TruncatedError(
                f"{path}: a {kind} without a readable central directory ({str(e)[:200]}); "
                f"the file is truncated or damaged"
            ) from None
        except ZIP_ERRORS as e:
            raise CorruptError(f"{path}: an unreadable {kind} ({type(e).__name__}: {str(e)[:200]})") from None
        try:
            self.infos = self._zf.infolist()
            if len(self.infos) > limits.max_records + 16:
                raise LimitError(f"{path}: {len(self.infos)} members exceed max_records={limits.max_records}")
            self._by_name: dict = {}
            for info in self.infos:
                if "\x00" in info.orig_filename:
                    raise CorruptError(
                        f"{path}: member {member_name(info.orig_filename)} has a NUL byte in its name; zip readers "
                        f"disagree on where such a name ends, so the file has two meanings"
                    )
                if info.filename in self._by_name:
                    raise CorruptError(
                        f"{path}: member {member_name(info.filename)} appears twice in the archive; readers differ on "
                        f"which copy they use (torch takes the last), so the file has two meanings"
                    )
                self._by_name[info.filename] = info
        except BaseException:
            self._zf.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self._zf.close()
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:
                pass  # views of it are in use: the map goes when the last of them does
            self._mm = None

    def get(self, name: str) -> zipfile.ZipInfo | None:
        return self._by_name.get(name)

    def open(self, info: zipfile.ZipInfo, *, expect: int | None = None) -> "MemberReader":
        """A stream over one member's content, after its declared sizes have been checked.

        ``expect`` is the size the content must have (a storage's element count
        times its item size): any other declared size is refused before a byte
        is inflated.
        """
        what = self._check(info, expect)
        try:
            f = self._zf.open(info)
        except NNCodecError:
            raise
        except NotImplementedError as e:
            raise UnsupportedError(f"{what}: {str(e)[:200]}") from None
        except ZIP_ERRORS as e:
            raise CorruptError(f"{what}: {type(e).__name__}: {str(e)[:200]}") from None
        return MemberReader(f, what, info.file_size, stored=info.compress_type == zipfile.ZIP_STORED)

    def _check(self, info: zipfile.ZipInfo, expect: int | None) -> str:
        """Check a member's declared sizes (see :meth:`open`); returns its name for messages."""
        what = f"{self.path}: zip member {member_name(info.filename)}"
        if info.header_offset + LOCAL_HEADER + info.compress_size > self.file_size:
            raise TruncatedError(f"{what} declares {info.compress_size} bytes past the end of the file (truncated?)")
        if expect is not None and info.file_size != expect:
            raise CorruptError(
                f"{what}: record size {info.file_size} does not match the expected size {expect} "
                f"(from the pickle's element count and item size); the file is damaged"
            )
        if info.compress_type == zipfile.ZIP_STORED:
            if info.compress_size != info.file_size:
                raise CorruptError(f"{what}: stored member with size {info.file_size} != compressed size {info.compress_size}")
        else:
            limit = self.limits
            if info.file_size > max(info.compress_size * limit.max_expansion, limit.min_expansion_floor):
                raise LimitError(
                    f"{what} expands {info.compress_size} bytes to {info.file_size}, over "
                    f"max_expansion={limit.max_expansion}; raise the limit if the file is trusted"
                )
            if info.compress_type == zipfile.ZIP_DEFLATED and info.file_size > deflate_bound(info.compress_size):
                raise CorruptError(
                    f"{what} declares {info.file_size} bytes from {info.compress_size} compressed bytes; deflate "
                    f"expands at most {DEFLATE_MAX_RATIO}x, so the declared size is false"
                )
        return what

    def view(self, info: zipfile.ZipInfo, *, expect: int | None = None) -> memoryview | None:
        """A stored member's bytes as a read-only view into a map of the file, or None for a
        compressed (or encrypted) member, which :meth:`read` inflates.

        The checks of :meth:`open` apply, plus those zipfile makes when it opens a
        member: the local header must have its signature and the member's name, and
        the data it points to must lie inside the file. The CRC-32 is checked over
        the view before it is returned. Nothing is copied: the pages are read when
        used, and the map lives as long as an array made from the view.
        """
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
            return None
        what = self._check(info, expect)
        mm = self._map()
        off = info.header_offset
        if off + LOCAL_HEADER > self.file_size:
            raise TruncatedError(f"{what}: its local header at offset {off} is past the end of the file (truncated?)")
        fields = _LOCAL.unpack(mm[off : off + LOCAL_HEADER])
        if fields[0] != b"PK\x03\x04":
            raise CorruptError(f"{what}: no local file header at offset {off} (bad magic number); the file is damaged")
        name_len, extra_len = fields[-2], fields[-1]
        raw = mm[off + LOCAL_HEADER : off + LOCAL_HEADER + name_len]
        try:
            local = raw.decode("utf-8" if fields[3] & 0x800 else "cp437")
        except UnicodeDecodeError:
            local = None
        if local != info.orig_filename:
            raise CorruptError(
                f"{what}: the local header names {member_name(raw.decode('utf-8', 'replace'))}; the central directory and "
                f"the local header differ, so the file has two meanings"
            )
        start = off + LOCAL_HEADER + name_len + extra_len
        size = info.file_size
        if start + size > self.file_size:
            raise TruncatedError(f"{what}: its {size} bytes at offset {start} run past the end of the file (truncated?)")
        whole = memoryview(mm)
        try:
            data = whole[start : start + size]
        finally:
            whole.release()
        crc = 0
        for pos in range(0, size, _READ_CHUNK):
            part = data[pos : pos + _READ_CHUNK]
            crc = zlib.crc32(part, crc)
            part.release()
            # the pages were read for the check only: give them back, the user reads them again
            release(mm, start + pos, min(_READ_CHUNK, size - pos))
        if crc != info.CRC:
            data.release()
            raise CorruptError(f"{what}: bad CRC-32 ({crc:08x}, the directory says {info.CRC:08x}); the file is damaged")
        return data

    def _map(self) -> mmap.mmap:
        if self._mm is None:
            with open(self.path, "rb") as f:
                self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return self._mm

    def read(self, info: zipfile.ZipInfo, *, expect: int | None = None) -> bytearray:
        """The whole (CRC-checked) content of one member; see :meth:`open`."""
        with self.open(info, expect=expect) as m:
            return m.finish(bytearray())


class MemberReader:
    """Reads one member in a stream; the total never exceeds the declared size."""

    def __init__(self, f, what: str, size: int, *, stored: bool):
        self._f = f
        self.what = what
        self.size = size
        self._stored = stored
        self.pos = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()

    def _call(self, fn, *a):
        try:
            return fn(*a)
        except NNCodecError:
            raise
        except EOFError:
            raise TruncatedError(f"{self.what} ends early (truncated?)") from None
        except NotImplementedError as e:
            raise UnsupportedError(f"{self.what}: {str(e)[:200]}") from None
        except ZIP_ERRORS as e:
            raise CorruptError(f"{self.what}: {type(e).__name__}: {str(e)[:200]}") from None

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes (fewer only at the declared end)."""
        n = min(n, self.size - self.pos)
        out = bytearray()
        while len(out) < n:
            chunk = self._call(self._f.read, min(n - len(out), _READ_CHUNK))
            if not chunk:
                raise TruncatedError(f"{self.what} ends after {self.pos + len(out)} of {self.size} bytes (truncated?)")
            out += chunk
        self.pos += len(out)
        return bytes(out)

    def finish(self, buf: bytearray) -> bytearray:
        """``buf`` followed by the rest of the member, after its CRC-32 has been checked."""
        left = self.size - self.pos
        if self._stored and left:
            # a stored member's bytes are in the file (checked against its size): read them in place
            start = len(buf)
            out = bytearray(start + left)
            out[:start] = buf
            buf = out
            view = memoryview(buf)
            try:
                pos = start
                while pos < len(buf):
                    n = self._call(self._f.readinto, view[pos : pos + _READ_CHUNK])
                    if not n:
                        raise TruncatedError(f"{self.what} ends after {self.pos + pos - start} of {self.size} bytes (truncated?)")
                    pos += n
            finally:
                view.release()
        else:
            while left:
                chunk = self._call(self._f.read, min(left, _READ_CHUNK))
                if not chunk:
                    raise TruncatedError(f"{self.what} ends after {self.size - left} of {self.size} bytes (truncated?)")
                buf += chunk
                left -= len(chunk)
        self.pos = self.size
        if self._call(self._f.read, 1):  # also makes zipfile check the CRC-32
            raise CorruptError(f"{self.what} holds more than its declared {self.size} bytes")
        return buf
