"""Whole checkpoint files: encode_file and decode_file."""

from __future__ import annotations

import os

from . import io as nio
from ._atomic import atomic_path
from .api import Writer, iter_decode
from .errors import UsageError
from .format.constants import DEFAULT_LIMITS, Limits

_FAMILY = {"torch": {"torch", "torch-legacy"}, "safetensors": {"safetensors"}, "npz": {"npz"}}


def _progress_iter(items, progress, total_bytes, tensors):
    if progress is None:
        yield from items
        return
    done = 0
    for name, coded in items:
        yield name, coded
        done += getattr(tensors[name], "nbytes", 0)
        progress(name, done, total_bytes)


def encode_file(src, dst, *, format: str | None = None, metadata: dict | None = None,
                limits: Limits = DEFAULT_LIMITS, progress=None, options=None, threads: int | None = None,
                **keywords) -> list:
    """Encode the checkpoint ``src`` (safetensors, torch, npz) to the .nnc file ``dst``.

    ``options`` is an :class:`nncodec.encode.EncodeOptions`, or give its flat keywords
    (``bits``, ``snr``, ``step``, ``max_error``, ``preset``, ``keep``, ``lossy``,
    ``overrides``, ``quantizer``, ``objective``, ``dither``, ``seed``). Lossless unless
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
            write_tensors(w, ck.tensors, ck.aliases, opts, progress)
        infos = w.infos
    return infos


def write_tensors(w: Writer, tensors: dict, aliases: dict, options=None, progress=None) -> None:
    """Add ``tensors`` (coded as :func:`nncodec.encode.plan` decides under ``options``;
    lossless by default) and ``aliases`` to a Writer."""
    from .encode import iter_plan

    total = sum(a.nbytes for a in tensors.values())
    coded = iter_plan(tensors, options, limits=w.limits)
    for name, c in _progress_iter(coded, progress, total, tensors):
        w.add_encoded(name, c.dtype, c.shape, c.pipeline, c.payload)
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
    With ``salvage=True`` a damaged file yields the tensors before the damage.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    if not os.path.isfile(src):
        raise UsageError(f"{src}: no such file")
    stream = iter_decode(src, limits=limits, salvage=salvage)
    total = os.path.getsize(src)
    report = None if progress is None else (lambda name: progress(name, stream.bytes_read, total))
    tensors, aliases = nio.gather(stream, report)
    md = dict(stream.metadata)
    recorded = md.get(nio.SOURCE_FORMAT_KEY)
    fmt = output_format(dst, recorded, format)
    ck = nio.Checkpoint(tensors=tensors, aliases=aliases, metadata=md, format=fmt)
    with atomic_path(dst, inputs=[src]) as tmp:
        nio.write_checkpoint(tmp, ck, fmt)
    return fmt
