"""Whole checkpoint files: encode_file and decode_file."""

from __future__ import annotations

import os

from . import io as nio
from ._atomic import atomic_path
from .api import Writer, iter_decode
from .errors import UsageError
from .format.constants import DEFAULT_LIMITS, Limits

_FAMILY = {"torch": {"torch", "torch-legacy"}, "safetensors": {"safetensors"}, "npz": {"npz"}}


def _progress_iter(items, progress, total_bytes):
    if progress is None:
        yield from items
        return
    done = 0
    for name, arr in items:
        yield name, arr
        done += getattr(arr, "nbytes", 0)
        progress(name, done, total_bytes)


def encode_file(src, dst, *, format: str | None = None, metadata: dict | None = None,
                limits: Limits = DEFAULT_LIMITS, progress=None, bits: float | None = None,
                snr: float | None = None, step: float | None = None, max_error: float | None = None,
                preset: str | None = None, keep=(), lossy=(), overrides: dict | None = None,
                quantizer: str = "scalar", objective: str = "relative", dither: bool = False,
                seed: int = 0) -> list:
    """Encode the checkpoint ``src`` (safetensors, torch, npz) to the .nnc file ``dst``.

    Lossless unless one of ``bits``, ``snr``, ``step``, ``max_error`` or
    ``preset`` is given (see :mod:`nncodec.lossy` for which tensors are coded
    lossily and how the rate is shared). ``overrides`` maps a tensor name to
    ``"lossless"``, ``"lossy"``, a step size, or a :class:`~nncodec.Pipeline`.
    ``dst`` is written atomically; ``src`` is never modified. ``metadata``
    (str -> str) is added to the file's user metadata. ``progress``, if
    given, is called as ``progress(tensor_name, bytes_done, bytes_total)``.
    Returns the list of :class:`nncodec.api.TensorInfo` of the written tensors.
    """
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
    opts = None
    if any(v is not None for v in (bits, snr, step, max_error, preset)) or overrides:
        from .lossy import LossyOptions

        opts = LossyOptions(bits=bits, snr=snr, step=step, max_error=max_error, preset=preset or "balanced",
                            keep=tuple(keep), lossy=tuple(lossy), quantizer=quantizer, objective=objective,
                            dither=dither, seed=seed,
                            overrides=dict(overrides or {}))
    with atomic_path(dst, inputs=[src]) as tmp, open(tmp, "wb") as f:
        with Writer(f, metadata=md, limits=limits) as w:
            write_tensors(w, ck.tensors, ck.aliases, opts, progress)
        infos = w.infos
    return infos


def write_tensors(w: Writer, tensors: dict, aliases: dict, opts=None, progress=None) -> None:
    """Add ``tensors`` (lossless, or lossy per ``opts``) and ``aliases`` to a Writer."""
    from .pipeline import Pipeline

    coded = {}
    if opts is not None:
        coded = _encode_lossy_tensors(tensors, opts, w._limits)
    total = sum(a.nbytes for a in tensors.values())
    for name, arr in _progress_iter(tensors.items(), progress, total):
        explicit = opts.overrides.get(name) if opts is not None else None
        if isinstance(explicit, Pipeline):
            w.add(name, arr, pipeline=explicit)
        elif name in coded:
            from . import dtypes

            pipe, payload = coded[name]
            a, dt = dtypes.as_stored(arr)
            w.add_encoded(name, dt, a.shape, pipe, payload)
        else:
            w.add(name, arr)
    for a, t in aliases.items():
        w.add_alias(a, t)


def _encode_lossy_tensors(tensors: dict, opts, limits) -> dict:
    """name -> (pipeline, payload) for the lossy tensors, the rate allocated across them.

    With a ``bits`` target the payloads are measured after coding; if they overshoot by
    more than 1% (the rate model is an estimate), the budget is scaled down once and the
    tensors coded again.
    """
    import dataclasses

    from .codecs import Context
    from .lossy import allocate, encode_lossy, is_lossy
    from .pipeline import Pipeline

    chosen = {n: a for n, a in tensors.items() if is_lossy(n, a, opts)}
    fixed = {n: float(v) for n, v in opts.overrides.items() if isinstance(v, (int, float)) and n in chosen}
    free = {n: a for n, a in chosen.items() if n not in fixed and not isinstance(opts.overrides.get(n), Pipeline)}

    def code(o):
        steps = allocate(free, o)
        steps.update(fixed)
        return {n: encode_lossy(n, tensors[n], st, o, Context(name=n, limits=limits)) for n, st in steps.items()}

    coded = code(opts)
    if opts.bits is not None and free:
        n_weights = sum(tensors[n].size for n in coded)
        bits = 8 * sum(len(p) for _, p in coded.values())
        target = opts.bits * n_weights
        if bits > 1.01 * target:
            coded = code(dataclasses.replace(opts, bits=opts.bits * target / bits))
    return coded


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
                progress=None, salvage: bool = False) -> str:
    """Decode the .nnc file ``src`` to the checkpoint ``dst``; return the format written.

    The format is ``format`` if given, else the output's extension, else the
    format the file was encoded from. ``dst`` is written atomically.
    With ``salvage=True`` a damaged file yields the tensors before the damage.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    if not os.path.isfile(src):
        raise UsageError(f"{src}: no such file")
    stream = iter_decode(src, limits=limits, salvage=salvage)
    tensors, aliases = {}, {}
    ids: dict = {}
    total = os.path.getsize(src)
    for name, arr in stream:
        if id(arr) in ids:
            aliases[name] = ids[id(arr)]
        else:
            ids[id(arr)] = name
            tensors[name] = arr
        if progress is not None:
            progress(name, stream._src.pos, total)
    md = dict(stream.metadata)
    recorded = md.get(nio.SOURCE_FORMAT_KEY)
    fmt = output_format(dst, recorded, format)
    ck = nio.Checkpoint(tensors=tensors, aliases=aliases, metadata=md, format=fmt)
    with atomic_path(dst, inputs=[src]) as tmp:
        nio.write_checkpoint(tmp, ck, fmt)
    return fmt
