"""The table of file formats nncodec reads and writes, and the calls built on it.

Each :class:`Format` row says how to recognise a file from its first bytes,
which module reads and writes it (imported only when used) and which file
extensions name it. :func:`detect_format`, :func:`read_checkpoint`,
:func:`write_checkpoint` and :func:`load_any` are the only places that choose
a module by format name; everything above them (``files.py``, ``compare.py``,
``federated/files.py``, the CLI) calls these.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import zipfile

from ..errors import CorruptError, UsageError
from ..format.constants import DEFAULT_LIMITS, FILE_MAGIC, Limits
from .checkpoint import Checkpoint, gather
from .zipread import ZIP_ERRORS

#: how many leading bytes format detection looks at
HEAD_BYTES = 64
_JSON_SPACE = b" \t\r\n"


class Probe:
    """What detection knows about a file: its first bytes, and its zip member names once asked for."""

    def __init__(self, path, head: bytes):
        self.path = path
        self.head = head
        self._names = None

    @property
    def is_zip(self) -> bool:
        return self.head.startswith(b"PK\x03\x04") or self.head.startswith(b"PK\x05\x06")

    @property
    def zip_names(self) -> list:
        if self._names is None:
            try:
                with zipfile.ZipFile(self.path) as z:
                    self._names = z.namelist()
            except ZIP_ERRORS as e:
                raise CorruptError(
                    f"{self.path}: a damaged zip archive ({type(e).__name__}: {str(e)[:200]}); truncated or not a checkpoint"
                ) from None
        return self._names


def _is_nnc(p: Probe) -> bool:
    return p.head.startswith(FILE_MAGIC)


def _is_torch_zip(p: Probe) -> bool:
    return p.is_zip and any(n.endswith("data.pkl") for n in p.zip_names)


def _is_npz(p: Probe) -> bool:
    return p.is_zip and not _is_torch_zip(p)


def _is_torch_legacy(p: Probe) -> bool:
    # a pickle's PROTO opcode; a safetensors header length such as 640 (80 02 00 ...) starts
    # the same way, so a JSON object at byte 8 decides (a legacy file has its magic number there)
    return p.head[:1] == b"\x80" and len(p.head) >= 2 and p.head[1] in (2, 3, 4, 5) and not _is_safetensors(p)


def _is_safetensors(p: Probe) -> bool:
    # an 8-byte header length, then a JSON object (which may start with whitespace)
    return len(p.head) >= 9 and p.head[8:].lstrip(_JSON_SPACE)[:1] == b"{"


@dataclasses.dataclass(frozen=True)
class Format:
    """One file format: its name, how to recognise it, its module and its extensions.

    ``module`` (relative to :mod:`nncodec.io`) has ``read(path, *, limits)`` and,
    when ``writable``, ``write(path, ck, *, format)``. The ``nnc`` row has no
    module: .nnc files are decoded by :mod:`nncodec.api`.
    """

    name: str
    detect: object  # (Probe) -> bool
    module: str | None
    extensions: tuple = ()
    writable: bool = True

    def reader(self):
        return importlib.import_module(f"{__package__}.{self.module}")


#: every format, in detection order (the first row whose ``detect`` says yes wins)
TABLE = (
    Format("nnc", _is_nnc, None, (".nnc",), writable=False),
    Format("torch", _is_torch_zip, "torch", (".pt", ".pth", ".bin", ".ckpt")),
    Format("npz", _is_npz, "npz", (".npz",)),
    Format("torch-legacy", _is_torch_legacy, "torch"),
    Format("safetensors", _is_safetensors, "safetensors", (".safetensors",)),
)
BY_NAME = {f.name: f for f in TABLE}

#: format names, as options and messages list them
FORMATS = ("safetensors", "torch", "torch-legacy", "npz", "nnc")
#: checkpoint formats (all but .nnc): what read_checkpoint reads and write_checkpoint writes
CHECKPOINT_FORMATS = tuple(f for f in FORMATS if BY_NAME[f].writable)
_EXT = {e: f.name for f in TABLE for e in f.extensions}


def format_from_extension(path) -> str | None:
    """The format a file name's extension suggests, or None."""
    return _EXT.get(os.path.splitext(os.fspath(path))[1].lower())


def detect_format(path) -> str:
    """The format of an existing file, from its first bytes (not its name)."""
    with open(path, "rb") as f:
        head = f.read(HEAD_BYTES)
    probe = Probe(path, head)
    for fmt in TABLE:
        if fmt.detect(probe):
            return fmt.name
    if head.startswith(b"\x93NUMPY"):
        raise UsageError(f"{path}: a single .npy array; save it in a .npz (np.savez) to encode it")
    raise UsageError(
        f"{path}: unrecognised checkpoint format (first bytes {head[:8]!r}); "
        f"nncodec reads safetensors, PyTorch .pt/.pth/.bin (zip or legacy), .npz and .nnc"
    )


def read_checkpoint(path, *, format: str | None = None, limits: Limits = DEFAULT_LIMITS) -> Checkpoint:
    """Read a checkpoint file (safetensors, torch, torch-legacy, npz); ``format`` None detects it."""
    fmt = format or detect_format(path)
    row = BY_NAME.get(fmt)
    if row is None or not row.writable:
        raise UsageError(f"{path}: cannot read format {fmt!r} as a checkpoint; formats: safetensors, torch, npz")
    ck = row.reader().read(path, limits=limits)
    ck.format = fmt
    return ck


def write_checkpoint(path, ck: Checkpoint, format: str) -> None:
    """Write ``ck`` to ``path`` (not atomic by itself: callers write to a temporary path)."""
    row = BY_NAME.get(format)
    if row is None or not row.writable:
        raise UsageError(f"cannot write format {format!r}; choose one of: safetensors, torch, npz")
    row.reader().write(path, ck, format=format)


def load_any(path, *, format: str | None = None, limits: Limits = DEFAULT_LIMITS) -> Checkpoint:
    """A checkpoint from any file nncodec reads, a .nnc file included.

    For a .nnc file the tensors are decoded, aliases restored and the file's
    metadata returned; ``Checkpoint.format`` is then ``"nnc"`` (the format the
    original was read from stays in metadata key ``nncodec.source_format``).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UsageError(f"{path}: no such file")
    fmt = format or detect_format(path)
    if fmt != "nnc":
        return read_checkpoint(path, format=fmt, limits=limits)
    from ..api import iter_decode

    stream = iter_decode(path, limits=limits)
    tensors, aliases = gather(stream)
    return Checkpoint(tensors=tensors, aliases=aliases, metadata=dict(stream.metadata), format="nnc")
