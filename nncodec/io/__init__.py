"""Checkpoint readers and writers, framework-agnostic.

Every reader returns a :class:`Checkpoint`; every writer takes one. None of
them imports torch or safetensors, and the torch reader never executes pickle
code (see :mod:`nncodec.io.torch`).

* :mod:`~nncodec.io.registry`: the table of formats (detection, reader and
  writer module, extensions), :func:`load_any`, :func:`read_checkpoint`,
  :func:`write_checkpoint`, :func:`detect_format`;
* one module per format: :mod:`~nncodec.io.safetensors`, :mod:`~nncodec.io.npz`,
  :mod:`~nncodec.io.torch` (a package: read, write, structure);
* shared pieces: :mod:`~nncodec.io.checkpoint` (the :class:`Checkpoint` type),
  :mod:`~nncodec.io.zipread` (the checked zip reader of torch zip and npz),
  :mod:`~nncodec.io._pickle` (the restricted unpickler).
"""

from __future__ import annotations

from .checkpoint import SOURCE_FORMAT_KEY, Checkpoint, Deferred, check_bool, gather
from .registry import (
    CHECKPOINT_FORMATS,
    FORMATS,
    TABLE,
    Format,
    detect_format,
    format_from_extension,
    load_any,
    read_checkpoint,
    write_checkpoint,
)
from .zipread import ZIP_ERRORS

__all__ = [
    "Checkpoint",
    "Deferred",
    "SOURCE_FORMAT_KEY",
    "FORMATS",
    "CHECKPOINT_FORMATS",
    "TABLE",
    "Format",
    "ZIP_ERRORS",
    "check_bool",
    "gather",
    "detect_format",
    "format_from_extension",
    "load_any",
    "read_checkpoint",
    "write_checkpoint",
]
