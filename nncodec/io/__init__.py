"""Checkpoint readers and writers, framework-agnostic.

Every reader returns a :class:`Checkpoint`; every writer takes one. None of
them imports torch or safetensors, and the torch reader never executes pickle
code (see nncodec/io/torch.py).
"""

from __future__ import annotations

import dataclasses
import os
import struct
import zipfile
import zlib

import numpy as np

from ..errors import CorruptError, UsageError
from ..format.constants import DEFAULT_LIMITS, Limits

FORMATS = ("safetensors", "torch", "torch-legacy", "npz", "nnc")

_EXT = {
    ".safetensors": "safetensors",
    ".pt": "torch",
    ".pth": "torch",
    ".bin": "torch",
    ".ckpt": "torch",
    ".npz": "npz",
    ".nnc": "nnc",
}

#: metadata key holding the format a checkpoint was read from
SOURCE_FORMAT_KEY = "nncodec.source_format"


@dataclasses.dataclass
class Checkpoint:
    """Named tensors plus what is needed to write the original file back.

    ``tensors`` keeps the file's order. ``aliases`` maps a name to the name
    of a tensor in ``tensors`` whose storage it shares (tied weights).
    ``metadata`` is string -> string; keys starting with ``nncodec.`` are
    written by nncodec to restore the source format, the rest are the user's.
    """

    tensors: dict
    aliases: dict = dataclasses.field(default_factory=dict)
    metadata: dict = dataclasses.field(default_factory=dict)
    format: str = ""

    def names(self) -> list:
        return list(self.tensors) + list(self.aliases)

    def get(self, name: str) -> np.ndarray:
        return self.tensors[self.aliases.get(name, name)]


def format_from_extension(path) -> str | None:
    return _EXT.get(os.path.splitext(os.fspath(path))[1].lower())


def detect_format(path) -> str:
    """The format of an existing file, from its first bytes (not its name)."""
    with open(path, "rb") as f:
        head = f.read(16)
    from ..format.constants import FILE_MAGIC

    if head.startswith(FILE_MAGIC):
        return "nnc"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except ZIP_ERRORS as e:
            raise CorruptError(f"{path}: a damaged zip archive ({type(e).__name__}: {str(e)[:200]}); truncated or not a checkpoint") from None
        if any(n.endswith("data.pkl") for n in names):
            return "torch"
        return "npz"
    if head[:1] == b"\x80" and len(head) >= 2 and head[1] in (2, 3, 4, 5):
        return "torch-legacy"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if head.startswith(b"\x93NUMPY"):
        raise UsageError(f"{path}: a single .npy array; save it in a .npz (np.savez) to encode it")
    raise UsageError(
        f"{path}: unrecognised checkpoint format (first bytes {head[:8]!r}); "
        f"nncodec reads safetensors, PyTorch .pt/.pth/.bin (zip or legacy), .npz and .nnc"
    )


#: what the zipfile module raises on a damaged or hostile archive
ZIP_ERRORS = (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError, UnicodeError,
              IndexError, KeyError, OverflowError, struct.error, zlib.error)  # fmt: skip


def check_bool(arr: np.ndarray, what: str) -> np.ndarray:
    """Refuse a bool array holding bytes other than 0 and 1 (no .nnc file could store it)."""
    if arr.dtype == np.bool_ and arr.size:
        top = int(arr.view(np.uint8).max())
        if top > 1:
            raise CorruptError(f"{what}: a bool element holds the byte {top}, not 0 or 1; the file is damaged")
    return arr


def read_checkpoint(path, *, format: str | None = None, limits: Limits = DEFAULT_LIMITS) -> Checkpoint:
    fmt = format or detect_format(path)
    if fmt == "safetensors":
        from . import safetensors as m
    elif fmt in ("torch", "torch-legacy"):
        from . import torch as m
    elif fmt == "npz":
        from . import npz as m
    else:
        raise UsageError(f"{path}: cannot read format {fmt!r} as a checkpoint; formats: safetensors, torch, npz")
    ck = m.read(path, limits=limits)
    ck.format = fmt
    return ck


def write_checkpoint(path, ck: Checkpoint, format: str) -> None:
    """Write ``ck`` to ``path`` (not atomic by itself: callers write to a temporary path)."""
    if format == "safetensors":
        from . import safetensors as m
    elif format in ("torch", "torch-legacy"):
        from . import torch as m
    elif format == "npz":
        from . import npz as m
    else:
        raise UsageError(f"cannot write format {format!r}; choose one of: safetensors, torch, npz")
    m.write(path, ck, format=format)
