"""Fine-tune deltas on disk: ``nncodec diff BASE NEW OUT`` and ``nncodec patch BASE UPDATE OUT``.

``diff_files`` writes the update from one checkpoint to another (any format
nncodec reads, .nnc included); ``patch_files`` applies it to the base and
writes the new checkpoint. Lossless by default: the deltas are XORs of the bit
patterns, so the patched checkpoint holds the new tensors bit for bit
(spec/UPDATES.md §3). Outputs are written atomically.
"""

from __future__ import annotations

import itertools
import os

from .. import io as nio
from .._atomic import atomic_path
from ..errors import UsageError
from ..files import output_format, write_safetensors_stream
from ..format.constants import DEFAULT_LIMITS, Limits
from .update import KEY_BASE, UpdateOptions, base_sha256, read_update, write_update

__all__ = ["diff_files", "patch_files", "read_any"]


def read_any(path, *, limits: Limits = DEFAULT_LIMITS) -> nio.Checkpoint:
    """A checkpoint from any format nncodec reads, a .nnc file included (not an update).

    For a .nnc file, ``format`` is the format its original was read from (or ``"nnc"``).
    """
    ck = nio.load_any(path, limits=limits)
    if ck.format == "nnc":
        if KEY_BASE in ck.metadata:
            raise UsageError(f"{os.fspath(path)}: is an nncodec update, not a checkpoint; patch a base with it first")
        ck.format = ck.metadata.get(nio.SOURCE_FORMAT_KEY, "nnc")
    return ck


def _model(ck: nio.Checkpoint) -> dict:
    return {n: ck.get(n) for n in ck.names()}


def diff_files(base, new, out, *, metadata: dict | None = None, limits: Limits = DEFAULT_LIMITS,
               opts: UpdateOptions | None = None, **kw) -> list:
    """Write the update from checkpoint ``base`` to checkpoint ``new`` to the file ``out``.

    Lossless unless options say otherwise (see :class:`~nncodec.federated.UpdateOptions`:
    ``quantizer``, ``step``/``rel_step``, ``topk``, ``threshold``, ``sparsity``, ``seed``).
    ``new``'s metadata and source format travel in the update, so
    :func:`patch_files` writes the same kind of checkpoint. Returns the records' infos.
    """
    base, new, out = os.fspath(base), os.fspath(new), os.fspath(out)
    bck = read_any(base, limits=limits)
    nck = read_any(new, limits=limits)
    md = {k: v for k, v in nck.metadata.items() if not k.startswith("nncodec.update.")}
    if nck.format != "nnc":
        md[nio.SOURCE_FORMAT_KEY] = nck.format
    if metadata:
        md.update(metadata)
    model = dict(nck.tensors)
    for a, t in nck.aliases.items():
        model[a] = nck.tensors[t]
    with atomic_path(out, inputs=[base, new]) as tmp, open(tmp, "wb") as f:
        return write_update(f, model, _model(bck), opts=opts, metadata=md, aliases=dict(nck.aliases),
                            limits=limits, **kw)


def patch_files(base, update, out, *, format: str | None = None, limits: Limits = DEFAULT_LIMITS) -> str:
    """Apply the update file ``update`` to checkpoint ``base``; write the result to ``out``.

    The output format is ``format``, else ``out``'s extension, else the format
    ``diff_files`` recorded. Raises :class:`~nncodec.errors.BaseMismatchError`
    when ``base`` is not the checkpoint the update was made against.
    Returns the format written.
    """
    base, update, out = os.fspath(base), os.fspath(update), os.fspath(out)
    if not os.path.isfile(update):
        raise UsageError(f"{update}: no such file")
    bck = read_any(base, limits=limits)
    model = _model(bck)
    reader = read_update(update, model, limits=limits, base_hash=base_sha256(model), what=update)
    items = iter(reader)
    first = next(items, None)  # the update's metadata (and the recorded format) are read now
    items = itertools.chain([first] if first is not None else [], items)
    md = {k: v for k, v in reader.metadata.items() if not k.startswith("nncodec.update.")}
    fmt = output_format(out, md.get(nio.SOURCE_FORMAT_KEY), format)
    if fmt == "safetensors":  # written as the tensors come: one in memory at a time
        with atomic_path(out, inputs=[base, update]) as tmp:
            write_safetensors_stream(tmp, items, reader.aliases, md)
        return fmt
    tensors = {}
    for name, arr in items:
        if name not in reader.aliases:
            tensors[name] = arr
    ck = nio.Checkpoint(tensors=tensors, aliases=dict(reader.aliases), metadata=md, format=fmt)
    with atomic_path(out, inputs=[base, update]) as tmp:
        nio.write_checkpoint(tmp, ck, fmt)
    return fmt
