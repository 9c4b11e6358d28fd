"""The public API: write, read lazily, stream, and whole-file encode/decode.

Which to choose:

* :func:`encode_file` / :func:`decode_file` -- a checkpoint file to a .nnc file and back.
* :func:`open` -- read some tensors of a .nnc file by name (memory-mapped, lazy).
* :class:`Writer` -- add tensors one at a time to a file or to any writable
  stream (a pipe, a socket); it never seeks.
* :func:`iter_decode` -- decode tensor by tensor from a non-seekable stream
  as the bytes arrive.
* :func:`encode_tensors` / :func:`decode_bytes` -- a dict of arrays to bytes
  in memory and back.
"""

from __future__ import annotations

import builtins
import dataclasses
import io
import bisect
import math
import mmap
import os

import numpy as np

from . import dtypes
from .codecs import ArraySpec, Context
from .errors import CorruptError, LimitError, NNCodecError, TruncatedError, UnsupportedError, UsageError
from .format import container as C
from .format.constants import (
    DEFAULT_LIMITS,
    FILE_HEADER_SIZE,
    KIND_ALIAS,
    KIND_INDEX,
    KIND_META,
    KIND_NAMES,
    KIND_TENSOR,
    TRAILER_SIZE,
    Limits,
)
from .chunks import Pieces, check_piece_crc, resolve_threads, run_all
from .chunks import parse_table as chunk_table
from .pipeline import Pipeline

MAX_NAME_BYTES = 65536


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """What the record of one tensor says, without decoding it."""

    name: str
    dtype: str
    shape: tuple
    pipeline: Pipeline
    stored_bytes: int  #: payload bytes
    record_bytes: int  #: payload plus record header, checksums and padding
    alias_of: str | None = None

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def raw_bytes(self) -> int:
        return self.size * dtypes.itemsize(self.dtype)

    @property
    def ratio(self) -> float:
        """Stored bytes over raw bytes (lower is better)."""
        return self.stored_bytes / self.raw_bytes if self.raw_bytes else 0.0

    @property
    def bits_per_value(self) -> float:
        return 8.0 * self.stored_bytes / self.size if self.size else 0.0


# ----------------------------------------------------------------- validation


def _check_name(name, what) -> str:
    if not isinstance(name, str):
        raise CorruptError(f"{what}: tensor name must be a string, found {name!r:.80}")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise CorruptError(f"{what}: tensor name longer than {MAX_NAME_BYTES} bytes")
    return name


def _tensor_spec(h: dict, limits: Limits, what: str) -> tuple:
    name = _check_name(h.get("name"), what)
    what = f"{what}: tensor {name!r}"
    dt = h.get("dtype")
    if not isinstance(dt, str):
        raise CorruptError(f"{what}: dtype {dt!r:.40} is not a dtype name")
    if dt not in dtypes.DTYPE_NAMES:
        raise UnsupportedError(f"{what}: unknown dtype {dt!r:.40}; a newer nncodec may know it (spec/FORMAT.md 4.3)")
    shape = h.get("shape")
    if not isinstance(shape, list):
        raise CorruptError(f"{what}: shape must be a list of integers, found {shape!r:.80}")
    if len(shape) > limits.max_rank:
        raise LimitError(f"{what}: rank {len(shape)} exceeds max_rank={limits.max_rank}; raise the limit if the file is trusted")
    n = 1
    for d in shape:
        if isinstance(d, bool) or not isinstance(d, int) or d < 0:
            raise CorruptError(f"{what}: shape {shape!r:.80} has an entry that is not a non-negative integer")
        n *= d
        if n > limits.max_elements:
            raise LimitError(
                f"{what}: shape {shape!r:.80} exceeds max_elements={limits.max_elements}; raise the limit if the file is trusted"
            )
    if "pipeline" not in h:
        raise CorruptError(f"{what}: record has no pipeline")
    pipe = Pipeline.from_json(h["pipeline"])
    return name, ArraySpec(dt, tuple(shape)), pipe


def _check_metadata(md, what: str, limits: Limits) -> dict:
    if not isinstance(md, dict):
        raise CorruptError(f"{what}: metadata must be an object of strings")
    total = 0
    for k, v in md.items():
        if not isinstance(v, str):
            raise CorruptError(f"{what}: metadata value for {k!r:.80} is not a string")
        total += len(k) + len(v)
    if total > limits.max_metadata_bytes:
        raise LimitError(f"{what}: metadata of {total} bytes exceeds max_metadata_bytes={limits.max_metadata_bytes}")
    return dict(md)


def _user_metadata(md) -> dict:
    if md is None:
        return {}
    if not isinstance(md, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in md.items()):
        raise UsageError("metadata must be a dict of str -> str")
    return dict(md)


# ----------------------------------------------------------------- writing


class Writer:
    """Write a .nnc file tensor by tensor; never seeks.

    ``file`` is a path (written atomically: nothing appears at the path unless
    :meth:`close` succeeds) or a binary writable object (a pipe, socket file,
    ``io.BytesIO``), which is left open.

    >>> with nncodec.Writer("model.nnc", metadata={"source": "run 7"}) as w:
    ...     w.add("fc.weight", weight)
    ...     w.add_alias("head.weight", "fc.weight")
    """

    def __init__(self, file, *, metadata: dict | None = None, limits: Limits = DEFAULT_LIMITS):
        self._limits = limits
        self._atomic = None
        self._owned = None
        if isinstance(file, (str, os.PathLike)):
            from ._atomic import atomic_path

            self._atomic = atomic_path(file)
            tmp = self._atomic.__enter__()
            self._owned = self._f = builtins.open(tmp, "wb")
            self.path = os.fspath(file)
        else:
            if not hasattr(file, "write"):
                raise UsageError(f"Writer needs a path or a binary writable object, got {type(file).__name__}")
            self._f = file
            self.path = None
        self._pos = 0
        self._entries: dict = {}
        self._aliases: dict = {}
        self._infos: list = []
        self._closed = False
        self._meta_offset = None
        self._will_alias: set = set()
        self._flagged: set = set()
        self._last_tensor = None
        self._put([C.file_header()])
        md = _user_metadata(metadata)
        if md:
            self._meta_offset = self._pos
            self._put(C.encode_record(KIND_META, {"metadata": md}))

    def _put(self, chunks) -> None:
        for c in chunks:
            self._f.write(c)
            self._pos += len(c) if not isinstance(c, memoryview) else c.nbytes

    def _new_name(self, name) -> str:
        if self._closed:
            raise UsageError("Writer is closed")
        if not isinstance(name, str):
            raise UsageError(f"tensor name must be a str, got {type(name).__name__}")
        if name in self._entries or name in self._aliases:
            raise UsageError(f"tensor {name!r} was already added; names must be unique")
        if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            raise UsageError(f"tensor name {name[:40]!r}... is longer than {MAX_NAME_BYTES} bytes")
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise UsageError(f"tensor name {name!r} is not valid Unicode text (lone surrogate)") from None
        return name

    def expect_aliases(self, targets) -> None:
        """Name the tensors that aliases will point at (before adding them): their records
        are marked ``aliased`` so a stream reader keeps them, and only them, for the aliases
        to come (spec/FORMAT.md 4.4). An alias may always point at the tensor added last."""
        self._will_alias.update(self._aliases.get(t, t) for t in targets)

    def add(self, name: str, array, *, pipeline: Pipeline | None = None) -> TensorInfo:
        """Encode ``array`` (losslessly unless ``pipeline`` says otherwise) and write it."""
        self._new_name(name)
        if pipeline is None:
            from .encode import plan

            c = plan({name: array}, limits=self._limits)[name]
            return self.add_encoded(name, c.dtype, c.shape, c.pipeline, c.payload)
        arr, dt = dtypes.as_stored(np.asarray(array))
        pipeline, payload = pipeline.fit_encode(arr, Context(name=name, limits=self._limits))
        return self.add_encoded(name, dt, arr.shape, pipeline, payload)

    def add_encoded(self, name: str, dtype: str, shape, pipeline: Pipeline, payload) -> TensorInfo:
        """Write an already-encoded payload (used to copy records without decoding)."""
        self._new_name(name)
        header = {"name": name, "dtype": dtypes.check_name(dtype), "shape": [int(d) for d in shape],
                  "pipeline": pipeline.to_json()}
        if name in self._will_alias:
            header["aliased"] = True
            self._flagged.add(name)
        parts, pcrc = payload, None
        if isinstance(payload, Pieces):
            header["chunks"] = payload.table()
            parts = payload.parts
            pcrc = payload.payload_crc()
        offset = self._pos
        self._put(C.encode_record(KIND_TENSOR, header, parts, pcrc))
        self._entries[name] = offset
        self._last_tensor = name
        n = len(payload) if not isinstance(payload, memoryview) else payload.nbytes
        info = TensorInfo(name, dtype, tuple(header["shape"]), pipeline, n, self._pos - offset)
        self._infos.append(info)
        return info

    def add_alias(self, name: str, target: str) -> None:
        """Record ``name`` as sharing the storage of the already-written tensor ``target``."""
        self._new_name(name)
        target = self._aliases.get(target, target)
        if target not in self._entries:
            raise UsageError(f"alias {name!r}: target {target!r} has not been added")
        if target not in self._flagged and target != self._last_tensor:
            raise UsageError(
                f"alias {name!r}: target {target!r} is not the tensor added last and was not named in "
                f"expect_aliases() before it was added; call w.expect_aliases([{target!r}]) first "
                f"(a stream reader keeps only the tensors aliases point at)"
            )
        self._put(C.encode_record(KIND_ALIAS, {"name": name, "target": target}))
        self._aliases[name] = target

    @property
    def infos(self) -> list:
        return list(self._infos)

    @property
    def limits(self) -> Limits:
        """The limits tensors are encoded under."""
        return self._limits

    def close(self) -> None:
        """Write the index and trailer; for a path, move the file into place."""
        if self._closed:
            return
        index = {"tensors": self._entries, "aliases": self._aliases, "metadata": self._meta_offset}
        index_offset = self._pos
        self._put(C.encode_record(KIND_INDEX, index))
        self._put([C.trailer(index_offset, self._pos + TRAILER_SIZE)])
        self._closed = True
        if hasattr(self._f, "flush"):
            self._f.flush()
        if self._owned is not None:
            self._owned.close()
            self._atomic.__exit__(None, None, None)

    def abort(self) -> None:
        """Discard a file being written to a path (a stream is left as it is)."""
        if self._closed:
            return
        self._closed = True
        if self._owned is not None:
            self._owned.close()
            # leaving the atomic context with an error removes the temporary file
            self._atomic.__exit__(UsageError, UsageError("write aborted"), None)

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        if et is None:
            self.close()
        else:
            self.abort()


# ----------------------------------------------------------------- reading


def _tensor_from_record(rec: C.Record, limits: Limits, what: str, threads: int = 1, out=None):
    name, spec, pipe = _tensor_spec(rec.header, limits, what)
    ctx = Context(name=name, limits=limits)
    arr = pipe.decode(rec.payload, spec, ctx, chunks=rec.header.get("chunks"), threads=threads, out=out)
    return name, arr


def _check_payload_crc(rec: C.Record, what: str) -> None:
    """The payload checksum of a record read with ``verify_payload=False``."""
    if C.crc32(rec.payload) != rec.payload_crc:
        raise CorruptError(f"{what}: payload checksum mismatch (crc32); the stored bytes are damaged")


def _info_from_record(rec: C.Record, limits: Limits, what: str) -> TensorInfo:
    name, spec, pipe = _tensor_spec(rec.header, limits, what)
    return TensorInfo(name, spec.dtype, spec.shape, pipe, rec.payload.nbytes, rec.end - rec.offset)


class Reader:
    """A .nnc file opened lazily: tensors are decoded only when asked for.

    The file is memory-mapped; reading one tensor touches only its record. A URL is read
    by range requests instead (:mod:`nncodec.remote`): each tensor costs about its record's
    bytes, and :attr:`remote` counts what was fetched.
    Use it as a mapping (``keys()``, ``reader[name]``, ``in``, ``len``) and
    close it (or use ``with``) when done.
    """

    def __init__(self, path, *, limits: Limits = DEFAULT_LIMITS, verify_checksums: bool = True,
                 threads: int | None = None):
        #: whether payload checksums are verified (the record's, or each chunk's as it is decoded)
        from . import remote

        self._remote = None
        self._heads: dict = {}
        path = remote.local_path(path)
        self.path = os.fspath(path)
        self._limits = limits
        self.threads = resolve_threads(threads)
        self._verify = verify_checksums
        what = self.path
        if remote.is_url(self.path):
            self._open_remote(remote)
            return
        try:
            self._file = builtins.open(self.path, "rb")
        except OSError as e:
            raise UsageError(f"{self.path}: cannot open: {e.strerror}") from None
        try:
            size = os.fstat(self._file.fileno()).st_size
            if size == 0:
                raise TruncatedError(f"{what}: the file is empty (an interrupted download or copy?)")
            self._mm = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
            self._buf = memoryview(self._mm)
            #: the file's length in bytes
            self.file_size = size
            C.read_file_header(C.Source(self._buf, what=what))
            index_offset = C.read_trailer(self._buf, what)
            src = C.Source(self._buf[: len(self._buf) - TRAILER_SIZE], pos=index_offset, what=what)
            self._read_index(src, index_offset, len(self._buf) - TRAILER_SIZE)
        except BaseException:
            self.close()
            raise

    def _open_remote(self, remote) -> None:
        """A URL: the file is read by byte ranges (:mod:`nncodec.remote`)."""
        self._buf = self._mm = self._file = None
        try:
            rf = self._remote = remote.RemoteFile(self.path)
            self.path = rf.what  # messages never show credentials in a query string
            self.file_size = rf.size
            index_offset = rf.open_index()
            end = rf.size - TRAILER_SIZE
            self._read_index(rf.source(index_offset, end, end), index_offset, end)
        except BaseException:
            self.close()
            raise

    def _read_index(self, src, index_offset: int, end: int) -> None:
        what, limits = self.path, self._limits
        rec = C.read_record(src, limits)
        if rec.kind != KIND_INDEX:
            raise CorruptError(f"{what}: trailer points at a {KIND_NAMES.get(rec.kind, 'unknown')} record, not the index")
        if rec.end != end:
            raise CorruptError(f"{what}: bytes between the index and the trailer")
        self._index_offset = index_offset
        self._tensors, self._aliases, meta_off = _parse_index(rec.header, index_offset, what, limits)
        self._starts = list(self._tensors.values()) if self._remote is not None else None
        self.metadata = {}
        if meta_off is not None:
            mrec = self._record(meta_off, KIND_META)
            self.metadata = _check_metadata(mrec.header.get("metadata"), what, limits)

    @property
    def remote(self):
        """The :class:`nncodec.remote.RemoteFile` of a file opened by URL (its ``bytes_fetched`` and
        ``requests`` count what was read), else None."""
        return self._remote

    def _source(self, offset: int, lazy: bool = False) -> C.Source:
        """The bytes from ``offset`` up to the index, for reading one record. A remote file fetches
        the span up to the next tensor record at once (``lazy``: the record header only)."""
        if self._remote is None:
            return C.Source(self._buf[: self._index_offset], pos=offset, what=self.path)
        i = bisect.bisect_right(self._starts, offset)
        span_end = self._starts[i] if i < len(self._starts) else self._index_offset
        return self._remote.source(offset, self._index_offset, span_end, lazy=lazy)

    def _record(self, offset: int, kind: int, name: str | None = None) -> C.Record:
        what = self.path
        rec = C.read_record(self._source(offset), self._limits, verify_payload=self._verify, expect_name=name)
        if rec.kind != kind:
            raise CorruptError(
                f"{what}: index points at a {KIND_NAMES.get(rec.kind, 'unknown')} record at offset {offset}, "
                f"expected a {KIND_NAMES[kind]} record"
            )
        return rec

    def _tensor_record(self, name: str, verify: bool = True) -> C.Record:
        """The record of tensor ``name``; ``verify=False`` leaves the payload checksum to the
        caller (who checks it, or each chunk's, where the payload is decoded)."""
        if name in self._aliases:
            name = self._aliases[name]
        try:
            off = self._tensors[name]
        except KeyError:
            raise KeyError(name) from None
        if verify:
            rec = self._record(off, KIND_TENSOR, name)
        elif self._remote is not None and off in self._heads:
            rec = self._heads[off]
        else:  # a remote record: its header only, the payload fetched by the slices asked for
            rec = C.read_record(self._source(off, lazy=True), self._limits, verify_payload=False, expect_name=name)
            if self._remote is not None:
                self._heads[off] = rec
            if rec.kind != KIND_TENSOR:
                raise CorruptError(f"{self.path}: index points at a {KIND_NAMES.get(rec.kind, 'unknown')} record "
                                   f"at offset {off}, expected a tensor record")
        if rec.header.get("name") != name:
            raise CorruptError(f"{self.path}: index entry {name!r} points at the record of {rec.header.get('name')!r:.80}")
        return rec

    def keys(self) -> list:
        """Tensor names in file order, aliases after the tensors they share storage with."""
        return list(self._tensors) + list(self._aliases)

    def aliases(self) -> dict:
        return dict(self._aliases)

    def __iter__(self):
        return iter(self.keys())

    def __len__(self):
        return len(self._tensors) + len(self._aliases)

    def __contains__(self, name):
        return name in self._tensors or name in self._aliases

    def __getitem__(self, name: str) -> np.ndarray:
        rec = self._tensor_record(name)
        return _tensor_from_record(rec, self._limits, self.path, self.threads)[1]

    def info(self, name: str) -> TensorInfo:
        """What the record of ``name`` says. A local file's record is checksummed whole; of a remote
        file only the header is fetched (and its checksum verified), not the payload."""
        rec = self._tensor_record(name, verify=self._remote is None)
        info = _info_from_record(rec, self._limits, self.path)
        if name in self._aliases:
            info = dataclasses.replace(info, name=name, alias_of=self._aliases[name])
        return info

    def infos(self) -> list:
        return [self.info(n) for n in self.keys()]

    def levels(self, name: str) -> np.ndarray:
        """The array the array->bytes stage decodes to (the quantized levels of a lossy tensor)."""
        rec = self._tensor_record(name)
        tname, spec, pipe = _tensor_spec(rec.header, self._limits, self.path)
        return pipe.decode_levels(rec.payload, spec, Context(name=tname, limits=self._limits),
                                  chunks=rec.header.get("chunks"), threads=self.threads)

    def spec(self, name: str) -> ArraySpec:
        """The dtype and shape of tensor ``name`` from its record header (checksummed); the
        payload is neither read nor verified."""
        rec = self._tensor_record(name, verify=False)
        return _tensor_spec(rec.header, self._limits, self.path)[1]

    def read_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of tensor ``name`` (``0 <= start <= stop <= shape[0]``), as a new
        array of shape ``(stop - start, *shape[1:])``.

        On a chunked record (spec/FORMAT.md 4.2.1) of a tensor coded without array->array
        stages (every lossless tensor), only the pieces whose rows meet the range are read,
        checksummed (each piece's CRC-32) and decoded. Other records decode whole (their
        payload checksum verified) and are then sliced.
        """
        rec = self._tensor_record(name, verify=False)
        tname, spec, pipe = _tensor_spec(rec.header, self._limits, self.path)
        what = f"{self.path}: tensor {name!r}"
        if not spec.shape:
            raise UsageError(f"{what}: a 0-dimensional tensor has no rows")
        n = spec.shape[0]
        for v in (start, stop):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise UsageError(f"{what}: row bounds must be integers, found {v!r:.40}")
        start, stop = int(start), int(stop)
        if not 0 <= start <= stop <= n:
            raise UsageError(f"{what}: rows {start}:{stop} are not a range within its {n} rows")
        rest = spec.shape[1:]
        chunks = rec.header.get("chunks")
        if start == stop:
            return np.empty((0, *rest), dtypes.to_numpy(spec.dtype))
        if chunks is None or pipe.array_stages or (start == 0 and stop == n):
            if self._remote is not None:
                from .remote import materialize

                rec = materialize(rec)
            if self._verify:
                _check_payload_crc(rec, what)
            arr = _tensor_from_record(rec, self._limits, self.path, self.threads)[1]
            return arr if (start == 0 and stop == n) else arr[start:stop].copy()
        ctx = Context(name=tname, limits=self._limits)
        from .pipeline import check_tensor_bytes

        check_tensor_bytes([spec], ctx)
        if not pipe.chunkable:
            raise CorruptError(f"{what}: a chunk table on codec {pipe.serializer.codec_id!r}, which codes whole tensors")
        payload = rec.payload
        table = chunk_table(chunks, spec.shape, payload.nbytes, what)
        out = np.empty((stop - start, *rest), dtypes.to_numpy(spec.dtype))
        touched = [i for i, (a, b) in enumerate(table.bounds) if a < stop and b > start]
        verify = self._verify
        base = 0
        if self._remote is not None:  # a remote payload: one range request for the touched pieces
            base = table.offsets[touched[0]]
            payload = payload[base:table.offsets[touched[-1]] + table.sizes[touched[-1]]]

        def piece(i):
            a, b = table.bounds[i]
            data = payload[table.offsets[i] - base:table.offsets[i] - base + table.sizes[i]]
            if verify:
                check_piece_crc(data, table, i, what)
            ps = ArraySpec(spec.dtype, (b - a, *rest))
            lo, hi = max(a, start), min(b, stop)
            if lo == a and hi == b:  # the whole piece lies in the range: decode in place
                pipe.decode_piece(data, ps, ctx, out[a - start:b - start])
            else:
                out[lo - start:hi - start] = pipe.decode_piece(data, ps, ctx)[lo - a:hi - a]

        run_all([lambda i=i: piece(i) for i in touched], self.threads)
        if spec.dtype == "bool" and out.size and out.view(np.uint8).max() > 1:
            raise CorruptError(f"{what}: a bool value decoded to a byte other than 0 or 1")
        return out

    def to_dict(self) -> dict:
        """Decode every tensor; aliases map to the same array object as their target."""
        out = {n: self[n] for n in self._tensors}
        for a, t in self._aliases.items():
            out[a] = out[t]
        return out

    def close(self) -> None:
        rf = getattr(self, "_remote", None)
        if rf is not None:
            rf.close()
        buf = getattr(self, "_buf", None)
        if buf is not None:
            buf.release()
            self._buf = None
        mm = getattr(self, "_mm", None)
        if mm is not None:
            try:
                mm.close()
            except BufferError:  # a payload view is still alive; the GC will close it
                pass
            self._mm = None
        f = getattr(self, "_file", None)
        if f is not None:
            f.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<nncodec.Reader {self.path!r}: {len(self)} tensors>"


def _parse_index(h: dict, index_offset: int, what: str, limits: Limits):
    tensors = h.get("tensors")
    aliases = h.get("aliases", {})
    meta = h.get("metadata")
    if not isinstance(tensors, dict) or not isinstance(aliases, dict):
        raise CorruptError(f"{what}: index must hold 'tensors' and 'aliases' objects")
    if len(tensors) + len(aliases) > limits.max_records:
        raise LimitError(f"{what}: {len(tensors) + len(aliases)} tensors exceed max_records={limits.max_records}")
    last = FILE_HEADER_SIZE - 1
    for name, off in tensors.items():
        if isinstance(off, bool) or not isinstance(off, int) or off % 8 or not (FILE_HEADER_SIZE <= off < index_offset):
            raise CorruptError(f"{what}: index offset {off!r:.40} of tensor {name!r:.80} is outside the file or misaligned")
        if off <= last:
            raise CorruptError(f"{what}: index offsets are not increasing at tensor {name!r:.80}")
        last = off
    for a, t in aliases.items():
        if a in tensors:
            raise CorruptError(f"{what}: {a!r:.80} is both a tensor and an alias")
        if not isinstance(t, str) or t not in tensors:
            raise CorruptError(f"{what}: alias {a!r:.80} points at {t!r:.80}, which is not a tensor in the file")
    if meta is not None and (isinstance(meta, bool) or not isinstance(meta, int) or meta != FILE_HEADER_SIZE):
        raise CorruptError(f"{what}: metadata offset {meta!r:.40} must be null or {FILE_HEADER_SIZE}")
    return dict(tensors), dict(aliases), meta


def open(path, *, limits: Limits = DEFAULT_LIMITS, verify_checksums: bool = True,  # noqa: A001
         threads: int | None = None) -> Reader:
    """Open a .nnc file for lazy reading by tensor name; chunked tensors decode on
    ``threads`` threads (None: every core).

    ``path`` may be a URL (``https://...``, or ``s3://...`` etc. with that fsspec backend
    installed): the file is then read by range requests, fetching the trailer, the index and
    the records asked for only (:mod:`nncodec.remote`)."""
    return Reader(path, limits=limits, verify_checksums=verify_checksums, threads=threads)


class _KeepAll(dict):
    """The kept tensors of a 1.0 stream: all of them (it does not mark alias targets)."""

    def __contains__(self, name):
        return True


class StreamReader:
    """Decode a .nnc stream tensor by tensor, in order, as the bytes arrive.

    Iterating yields ``(name, array)``; an alias yields the array of its
    target again. :attr:`metadata` is filled in before the first tensor.
    With ``salvage=True`` a damaged or truncated stream ends the iteration
    quietly after the last good tensor (:attr:`error` holds the reason)
    instead of raising.
    """

    def __init__(self, stream, *, limits: Limits = DEFAULT_LIMITS, salvage: bool = False, what: str | None = None,
                 threads: int | None = None):
        self.threads = resolve_threads(threads)
        self._owned = None
        if isinstance(stream, (str, os.PathLike)):
            what = what or os.fspath(stream)
            self._owned = stream = builtins.open(stream, "rb")
        if isinstance(stream, (bytes, bytearray, memoryview)):
            self._src = C.Source(buf=stream, what=what or "data")  # zero copy
        elif hasattr(stream, "readinto"):
            self._src = C.Source(stream=stream, what=what or "stream")
        else:
            raise UsageError(f"iter_decode needs a path, bytes or a binary readable object, got {type(stream).__name__}")
        self._limits = limits
        self._salvage = salvage
        self.metadata: dict = {}
        self.error: NNCodecError | None = None
        self.names: list = []
        #: alias name -> target name, filled as alias records arrive (before the alias is yielded)
        self.aliases: dict = {}
        #: the tensors kept for aliases still to come (name -> array), once iteration starts
        self.kept: dict | None = None

    @property
    def bytes_read(self) -> int:
        """How many bytes of the stream have been read so far."""
        return self._src.pos

    def __iter__(self):
        try:
            yield from self._run()
        except NNCodecError as e:
            if not self._salvage:
                raise
            self.error = e
        finally:
            if self._owned is not None:
                self._owned.close()
                self._owned = None

    def _run(self):
        src, limits, what = self._src, self._limits, self._src.what
        _, minor = C.read_file_header(src)
        # a 1.1 file marks the tensors aliases point at; only those (and the tensor just read)
        # are kept after they are yielded. A 1.0 file does not say: every tensor is kept.
        keep_all = minor == 0
        seen: dict = {}
        aliases = self.aliases
        kept = self.kept = {} if not keep_all else _KeepAll()
        last = None
        meta_offset = None
        while True:
            rec = C.read_record(src, limits)
            if rec.kind == KIND_META:
                if seen or aliases or meta_offset is not None or rec.offset != FILE_HEADER_SIZE:
                    raise CorruptError(f"{what}: metadata record at offset {rec.offset} is not the first record")
                meta_offset = rec.offset
                self.metadata = _check_metadata(rec.header.get("metadata"), what, limits)
            elif rec.kind == KIND_TENSOR:
                flag = rec.header.get("aliased", False)
                if not isinstance(flag, bool):
                    raise CorruptError(f"{what}: record at offset {rec.offset}: 'aliased' must be true or false")
                name, arr = _tensor_from_record(rec, limits, what, self.threads)
                if name in seen or name in aliases:
                    raise CorruptError(f"{what}: tensor {name!r} appears twice")
                if len(seen) + len(aliases) >= limits.max_records:
                    raise LimitError(f"{what}: more than max_records={limits.max_records} tensors")
                seen[name] = rec.offset
                rec = None
                if keep_all or flag:
                    kept[name] = arr
                last = (name, arr)
                self.names.append(name)
                yield name, arr
                arr = None
            elif rec.kind == KIND_ALIAS:
                name = _check_name(rec.header.get("name"), what)
                target = rec.header.get("target")
                if name in seen or name in aliases:
                    raise CorruptError(f"{what}: tensor {name!r} appears twice")
                if target not in seen:
                    raise CorruptError(f"{what}: alias {name!r} points at {target!r:.80}, not an earlier tensor")
                if target in kept:
                    arr = kept[target]
                elif last is not None and last[0] == target:
                    arr = last[1]
                else:
                    raise CorruptError(f"{what}: alias {name!r} points at {target!r}, which is neither marked "
                                       f"'aliased' nor the tensor just before it (spec/FORMAT.md 4.4)")
                aliases[name] = target
                self.names.append(name)
                yield name, arr
                arr = None
            elif rec.kind == KIND_INDEX:
                t, a, m = _parse_index(rec.header, rec.offset, what, limits)
                if t != seen or a != aliases or m != meta_offset or list(t) != list(seen):
                    raise CorruptError(f"{what}: the index does not match the records before it")
                raw = bytes(src.read(TRAILER_SIZE, "trailer"))
                C.check_trailer_bytes(raw, rec.offset, src.pos, what)
                if not src.at_eof():
                    raise CorruptError(f"{what}: data follows the end of the nncodec stream (concatenated files?)")
                return
            else:
                raise CorruptError(f"{what}: unknown record kind 0x{rec.kind:02x} at offset {rec.offset}")


def iter_decode(stream, *, limits: Limits = DEFAULT_LIMITS, salvage: bool = False,
                threads: int | None = None) -> StreamReader:
    """Decode a .nnc file or stream tensor by tensor: ``for name, arr in iter_decode(f)``;
    the chunks of a large tensor decode on ``threads`` threads (None: every core)."""
    return StreamReader(stream, limits=limits, salvage=salvage, threads=threads)


# ----------------------------------------------------------------- in memory


def shared_memory_aliases(tensors: dict) -> dict:
    """Names whose array is the very same object (or same memory) as an earlier one."""
    seen: dict = {}
    out: dict = {}
    for name, arr in tensors.items():
        if isinstance(arr, np.ndarray) and arr.size:
            key = (arr.__array_interface__["data"][0], arr.shape, arr.strides, arr.dtype.str)
            if key in seen:
                out[name] = seen[key]
                continue
            seen[key] = name
    return out


def encode_tensors(tensors: dict, *, metadata: dict | None = None, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """Encode a dict of arrays to .nnc bytes (arrays that are the same memory become aliases)."""
    buf = io.BytesIO()
    aliases = shared_memory_aliases(tensors)
    with Writer(buf, metadata=metadata, limits=limits) as w:
        w.expect_aliases(aliases.values())
        for name, arr in tensors.items():
            if name in aliases:
                w.add_alias(name, aliases[name])
            else:
                w.add(name, arr)
    return buf.getvalue()


def decode_bytes(data, *, limits: Limits = DEFAULT_LIMITS) -> dict:
    """Decode .nnc bytes to a dict of arrays."""
    return dict(iter_decode(data, limits=limits))
