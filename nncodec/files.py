"""Whole checkpoint files: encode_file and decode_file."""

from __future__ import annotations

import os
import threading

import numpy as np

from . import io as nio
from ._memory import release, release_array
from ._atomic import atomic_path
from .api import Reader, StreamReader, Writer, iter_decode
from .chunks import check_piece_crc, ordered, parse_table, resolve_threads
from .errors import CorruptError, UsageError
from .format.constants import DEFAULT_LIMITS, Limits

_FAMILY = {"torch": {"torch", "torch-legacy"}, "safetensors": {"safetensors"}, "npz": {"npz"}}


def encode_file(src, dst, *, format: str | None = None, metadata: dict | None = None,
                limits: Limits = DEFAULT_LIMITS, progress=None, options=None, threads: int | None = None,
                **keywords) -> list:
    """Encode the checkpoint ``src`` (safetensors, torch, npz) to the .nnc file ``dst``.

    ``options`` is an :class:`nncodec.encode.EncodeOptions`, or give its flat keywords
    (``bits``, ``size``, ``ratio``, ``snr``, ``step``, ``max_error``, ``preset``, ``keep``,
    ``lossy``, ``overrides``, ``quantizer``, ``objective``, ``dither``, ``seed``,
    ``near_lossless``). ``bits``, ``size`` and ``ratio`` are whole-file targets, met within
    0.5%: ``bits`` = 8 x the bytes of ``dst`` / the model's floating-point elements,
    ``size`` = the bytes of ``dst`` (an int, or text like ``"12MB"`` or ``"11.5MiB"``),
    ``ratio`` = the tensors' bytes / the bytes of ``dst``. Lossless unless
    a rate, a preset or overrides are given (see :mod:`nncodec.encode.planner` for which
    tensors are coded lossily and :mod:`nncodec.encode.rate` for how the rate is shared).
    ``overrides`` maps a tensor name to ``"lossless"``, ``"lossy"``, a step size, or a
    :class:`~nncodec.Pipeline`. ``dst`` is written atomically; ``src`` is never
    modified. ``metadata`` (str -> str) is added to the file's user metadata.
    ``progress``, if given, is called as ``progress(tensor_name, bytes_done, bytes_total)``.
    Returns the list of :class:`nncodec.api.TensorInfo` of the written tensors.
    """
    from .encode import EncodeOptions

    if options is not None and keywords:
        raise UsageError(f"give options either as EncodeOptions or as keywords, not both ({sorted(keywords)})")
    opts = options if options is not None else EncodeOptions.from_keywords(**keywords)
    src, dst = os.fspath(src), os.fspath(dst)
    if not os.path.isfile(src):
        raise UsageError(f"{src}: no such file")
    fmt = format or nio.detect_format(src)
    if fmt == "nnc":
        raise UsageError(f"{src}: is already an nncodec file; decode it first or copy it")
    ck = nio.read_checkpoint(src, format=fmt, limits=limits)
    md = dict(ck.metadata)
    md[nio.SOURCE_FORMAT_KEY] = ck.format
    if metadata:
        md.update(metadata)
    with atomic_path(dst, inputs=[src]) as tmp, open(tmp, "wb") as f:
        with Writer(f, metadata=md, limits=limits) as w:
            write_tensors(w, ck.tensors, ck.aliases, opts, progress, threads=threads)
        infos = w.infos
    return infos


def write_tensors(w: Writer, tensors: dict, aliases: dict, options=None, progress=None,
                  threads: int | None = 1) -> None:
    """Add ``tensors`` (coded as :func:`nncodec.encode.plan` decides under ``options``;
    lossless by default) and ``aliases`` to a Writer that holds no tensor yet, coding on
    ``threads`` threads. A whole-file rate target counts what the Writer has written so far
    (file header, metadata) and the alias records."""
    from .encode import iter_plan
    from .encode.filesize import Layout

    w.expect_aliases(aliases.values())
    targets = set(aliases.values())
    layout = Layout(prefix_bytes=w._pos, aliases=dict(aliases))
    coded = iter_plan(tensors, options, limits=w.limits, threads=threads, progress=progress, layout=layout)
    for name, c in coded:
        w.add_encoded(name, c.dtype, c.shape, c.pipeline, c.payload)
        if name not in targets:  # a memory-mapped input's pages go back once the tensor is written
            release_array(tensors[name])
    for a, t in aliases.items():
        w.add_alias(a, t)


def output_format(dst, recorded: str | None, format: str | None) -> str:
    """Flag > output extension > the format recorded at encode time."""
    if format:
        if format not in ("safetensors", "torch", "torch-legacy", "npz"):
            raise UsageError(f"unknown output format {format!r}; choose safetensors, torch, torch-legacy or npz")
        return format
    ext = nio.format_from_extension(dst)
    if ext == "nnc":
        raise UsageError(f"{dst}: decode writes a checkpoint, not a .nnc file; pick a checkpoint extension")
    if ext is not None:
        if recorded in _FAMILY.get(ext, ()):
            return recorded
        return ext
    if recorded in ("safetensors", "torch", "torch-legacy", "npz"):
        return recorded
    raise UsageError(
        f"{dst}: cannot tell which format to write (no recorded source format and no known extension); "
        f"use an extension like .safetensors/.pt/.npz or pass format="
    )


def decode_file(src, dst, *, format: str | None = None, limits: Limits = DEFAULT_LIMITS,
                progress=None, salvage: bool = False, threads: int | None = None) -> str:
    """Decode the .nnc file ``src`` to the checkpoint ``dst``; return the format written.

    The format is ``format`` if given, else the output's extension, else the
    format the file was encoded from. ``dst`` is written atomically.
    With ``salvage=True`` a damaged file yields the tensors before the damage (to a torch
    output as a flat state dict when the checkpoint's recorded structure names lost tensors).
    ``threads`` decode tensors and chunks in parallel (None: every core); a safetensors
    output is written in place, tensor by tensor, with memory bounded by a few chunks
    per thread (plus the largest lossy tensor).

    ``src`` may be a URL (``https://...``; ``s3://...`` etc. with the fsspec backend): it is
    read by range requests, record by record (:mod:`nncodec.remote`), and only ``dst`` is
    written locally.
    """
    from . import remote

    src, dst = remote.local_path(os.fspath(src)), os.fspath(dst)
    url = remote.is_url(src)
    if not url and not os.path.isfile(src):
        raise UsageError(f"{src}: no such file")
    inputs = [] if url else [src]
    threads = resolve_threads(threads)
    if not salvage:
        with Reader(src, limits=limits, threads=threads) as r:
            md = dict(r.metadata)
            fmt = output_format(dst, md.get(nio.SOURCE_FORMAT_KEY), format)
            with atomic_path(dst, inputs=inputs) as tmp:
                if fmt == "safetensors":
                    _decode_to_safetensors(r, tmp, md, threads, progress)
                else:  # torch, npz: each tensor decoded as the writer reaches it, then let go
                    nio.write_checkpoint(tmp, _deferred_checkpoint(r, md, fmt, progress), fmt)
            return fmt
    if url:  # read in order, in large ranges
        rf = remote.RemoteFile(src)
        stream = StreamReader(rf.stream(), limits=limits, salvage=salvage, what=rf.what, threads=threads)
        total = rf.size
    else:
        stream = iter_decode(src, limits=limits, salvage=salvage, threads=threads)
        total = os.path.getsize(src)
    report = None if progress is None else (lambda name: progress(name, stream.bytes_read, total))
    tensors, aliases = nio.gather(stream, report)
    md = dict(stream.metadata)
    recorded = md.get(nio.SOURCE_FORMAT_KEY)
    fmt = output_format(dst, recorded, format)
    ck = nio.Checkpoint(tensors=tensors, aliases=aliases, metadata=md, format=fmt)
    if salvage and fmt in ("torch", "torch-legacy"):
        from .io.torch.structure import STRUCTURE_KEY, structure_root

        try:
            structure_root(ck)
        except UsageError:  # the recorded structure names tensors lost with the damage
            md.pop(STRUCTURE_KEY, None)  # what was recovered is written as a flat state dict
    with atomic_path(dst, inputs=inputs) as tmp:
        nio.write_checkpoint(tmp, ck, fmt)
    return fmt


def _deferred_checkpoint(r: Reader, md: dict, fmt: str, progress) -> "nio.Checkpoint":
    """A checkpoint of reader ``r``'s tensors as :class:`~nncodec.io.Deferred` entries: dtypes
    and shapes from the record headers; each tensor is decoded (its checksum verified) when
    the writer loads it, and its record's pages are given back once it is written."""
    from .api import _tensor_spec

    total = r.file_size
    tensors = {}
    for name in r._tensors:
        rec = r._tensor_record(name, verify=False)  # the header: the payload is verified when decoded
        spec = _tensor_spec(rec.header, r._limits, r.path)[1]
        span = (rec.offset, rec.end - rec.offset)
        del rec

        def written(arr, name=name, span=span):
            release(r._mm, *span)
            if progress is not None:
                progress(name, span[0] + span[1], total)

        tensors[name] = nio.Deferred(spec.dtype, spec.shape, lambda name=name: r[name], written)
    return nio.Checkpoint(tensors=tensors, aliases=r.aliases(), metadata=md, format=fmt)


_scratch = threading.local()


def _buffer(nbytes: int) -> np.ndarray:
    """This thread's reusable output buffer, at least ``nbytes`` long (first-touch page faults
    cost more than decoding on some machines: the same pages serve every piece)."""
    buf = getattr(_scratch, "buf", None)
    if buf is None or buf.nbytes < nbytes:
        buf = _scratch.buf = np.empty(max(nbytes, 1 << 22), np.uint8)
    return buf[:nbytes]


def _pwrite_all(fd: int, data, offset: int) -> None:
    view = memoryview(data).cast("B")
    while view.nbytes:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def _decode_to_safetensors(r: Reader, path: str, md: dict, threads: int, progress) -> None:
    """Write the safetensors file of reader ``r`` at ``path``: the header first (every size is
    in the record headers), then each tensor (or chunk) decoded into a reused per-thread
    buffer and written at its offset, on ``threads`` threads."""
    from .api import _tensor_spec
    from .codecs import ArraySpec, Context
    from .io.safetensors import header_bytes
    from .pipeline import check_tensor_bytes

    names = list(r._tensors)
    specs = {}
    for name in names:  # headers only: payload checksums are verified where each payload is decoded
        rec = r._tensor_record(name, verify=False)
        specs[name] = _tensor_spec(rec.header, r._limits, r.path)[1]
        del rec
    aliases = r.aliases()
    order = names + list(aliases)
    entries = [(n, specs[aliases.get(n, n)].dtype, specs[aliases.get(n, n)].shape) for n in order]
    head = header_bytes(entries, md)
    offsets, pos = {}, len(head)
    for n, dt, shape in entries:
        offsets[n] = pos
        pos += ArraySpec(dt, shape).nbytes
    total = pos
    done = [0]
    spans: dict = {}

    with open(path, "w+b") as f:  # read too: an alias is copied from its target's bytes
        fd = f.fileno()
        f.write(head)
        f.flush()
        os.ftruncate(fd, total)

        def jobs():
            verify = r._verify
            for name in names:
                rec = r._tensor_record(name, verify=False)
                spans[name] = (rec.offset, rec.end - rec.offset)
                tname, spec, pipe = _tensor_spec(rec.header, r._limits, r.path)
                ctx = Context(name=tname, limits=r._limits)
                check_tensor_bytes(pipe.specs(spec), ctx)
                chunks = rec.header.get("chunks")
                base = offsets[name]
                if pipe.array_stages or chunks is None:
                    def whole(rec=rec, spec=spec, pipe=pipe, ctx=ctx, base=base, chunks=chunks, name=name):
                        if r.remote is not None:  # fetched here, on the worker thread
                            from .remote import materialize

                            rec = materialize(rec)
                        if verify:
                            _check_record_crc(rec, r.path, name)
                        if pipe.array_stages:
                            arr = pipe.decode(rec.payload, spec, ctx, chunks=chunks, threads=1)
                        else:
                            out = _buffer(spec.nbytes).view(arr_dtype(spec)).reshape(spec.shape)
                            arr = pipe.decode(rec.payload, spec, ctx, chunks=chunks, threads=1, out=out)
                        if arr.size:
                            _pwrite_all(fd, np.ascontiguousarray(arr).reshape(-1).view(np.uint8), base)
                        return name, spec.nbytes
                    yield whole
                    continue
                table = parse_table(chunks, spec.shape, rec.payload.nbytes, f"{r.path}: tensor {tname!r}")
                row_bytes = spec.nbytes // spec.shape[0]
                for i, (a, b) in enumerate(table.bounds):
                    def piece(i=i, a=a, b=b, rec=rec, spec=spec, pipe=pipe, ctx=ctx, base=base, table=table,
                              row_bytes=row_bytes, name=name, tname=tname):
                        s = ArraySpec(spec.dtype, (b - a, *spec.shape[1:]))
                        out = _buffer(s.nbytes).view(arr_dtype(spec)).reshape(s.shape)
                        data = table.piece(rec.payload, i)
                        if verify:  # the pieces tile the payload: their checksums cover every byte
                            check_piece_crc(data, table, i, f"{r.path}: tensor {tname!r}")
                        pipe.decode_piece(data, s, ctx, out)
                        if spec.dtype == "bool" and out.size and out.view(np.uint8).max() > 1:
                            raise CorruptError(f"tensor {tname!r}: a bool value decoded to a byte other than 0 or 1")
                        _pwrite_all(fd, out.reshape(-1).view(np.uint8), base + a * row_bytes)
                        return name, s.nbytes
                    yield piece

        prev = None
        for name, n in ordered(jobs(), threads):
            done[0] += n
            if name != prev and prev is not None:  # results come in order: prev is decoded
                release(r._mm, *spans[prev])
            prev = name
            if progress is not None:
                progress(name, done[0], total)
        for a, t in aliases.items():
            _copy_range(fd, offsets[t], offsets[a], specs[t].nbytes)


def write_safetensors_stream(path: str, items, aliases: dict, metadata: dict) -> None:
    """Write ``(name, array)`` pairs as they come (names in ``aliases`` are skipped: they are
    written as copies of their targets) to the safetensors file ``path``, holding one array
    at a time: the data go to a spill file beside ``path`` first, then behind the header
    (which needs every size). Bytes equal :func:`nncodec.io.safetensors.write`'s."""
    from . import dtypes
    from .io.safetensors import header_bytes

    spill = path + ".data"
    entries, offsets = [], {}
    try:
        with open(spill, "wb") as d:
            pos = 0
            for name, arr in items:
                if name in aliases:
                    continue
                arr, dt = dtypes.as_stored(arr)
                offsets[name] = (pos, arr.nbytes)
                if arr.size:
                    d.write(arr.reshape(-1).view(np.uint8).data)
                pos += arr.nbytes
                entries.append((name, dt, arr.shape))
                del arr
        kinds = {n: (dt, shape) for n, dt, shape in entries}
        head = header_bytes(entries + [(a, *kinds[t]) for a, t in aliases.items()], metadata)
        with open(path, "wb") as f, open(spill, "rb") as d:
            f.write(head)
            f.flush()
            _copy_between(d.fileno(), 0, f.fileno(), len(head), pos)
            at = len(head) + pos
            for a, t in aliases.items():
                off, n = offsets[t]
                _copy_between(d.fileno(), off, f.fileno(), at, n)
                at += n
    finally:
        if os.path.exists(spill):
            os.remove(spill)


def _copy_between(src: int, src_off: int, dst: int, dst_off: int, n: int) -> None:
    step = 1 << 24
    done = 0
    while done < n:
        data = os.pread(src, min(step, n - done), src_off + done)
        if not data:
            raise OSError(f"short read copying {n} bytes")
        _pwrite_all(dst, data, dst_off + done)
        done += len(data)


def _check_record_crc(rec, path: str, name: str) -> None:
    import zlib

    if zlib.crc32(rec.payload) & 0xFFFFFFFF != rec.payload_crc:
        raise CorruptError(f"{path}: tensor {name!r}: payload checksum mismatch (crc32); the stored bytes are damaged")


def arr_dtype(spec) -> np.dtype:
    """The buffer dtype a tensor is decoded into on its way to the file: an unsigned word of
    its width (the bytes are the same; no ml_dtypes import for bfloat16 and float8)."""
    from . import dtypes

    return dtypes.uint_view(spec.dtype) if spec.dtype != "bool" else np.dtype(np.bool_)


def _copy_range(fd: int, src: int, dst: int, n: int) -> None:
    """Copy ``n`` bytes of the file from offset ``src`` to ``dst`` (an alias's copy)."""
    step = 1 << 22
    done = 0
    while done < n:
        k = min(step, n - done)
        data = os.pread(fd, k, src + done)
        if not data:
            raise OSError(f"short read copying {n} bytes at offset {src}")
        _pwrite_all(fd, data, dst + done)
        done += len(data)
