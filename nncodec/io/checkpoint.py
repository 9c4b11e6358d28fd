"""The in-memory checkpoint every reader returns and every writer takes."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import CorruptError

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


class Deferred:
    """A tensor a writer loads when it writes it: ``dtype`` (nncodec's dtype name) and
    ``shape`` are known up front, ``load()`` returns the array (C-contiguous, little-endian).

    A checkpoint of deferred tensors lets a writer hold one tensor at a time: the torch
    writer emits its pickle from the shapes, then loads, writes and drops each storage.
    ``release()`` is called once the writer is done with an array it loaded.
    """

    __slots__ = ("dtype", "shape", "_load", "_release")

    def __init__(self, dtype: str, shape, load, release=None):
        self.dtype = dtype
        self.shape = tuple(int(d) for d in shape)
        self._load = load
        self._release = release

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    def load(self) -> np.ndarray:
        return self._load()

    def release(self, arr) -> None:
        if self._release is not None:
            self._release(arr)


def load_tensor(value) -> np.ndarray:
    """The array of a checkpoint entry: itself, or a :class:`Deferred` tensor loaded."""
    return value.load() if isinstance(value, Deferred) else value


def check_bool(arr: np.ndarray, what: str) -> np.ndarray:
    """Refuse a bool array holding bytes other than 0 and 1 (no .nnc file could store it)."""
    if arr.dtype == np.bool_ and arr.size:
        top = int(arr.view(np.uint8).max())
        if top > 1:
            raise CorruptError(f"{what}: a bool element holds the byte {top}, not 0 or 1; the file is damaged")
    return arr


def gather(items, on_item=None) -> tuple:
    """``(tensors, aliases)`` from ``(name, array)`` pairs; a name whose array is the very
    object of an earlier name becomes an alias of it (a stream yields aliases that way).
    ``on_item(name)`` is called after each pair."""
    tensors, aliases, ids = {}, {}, {}
    known = getattr(items, "aliases", None)  # a StreamReader says which names are aliases
    for name, arr in items:
        if known is not None:
            if name in known:
                aliases[name] = known[name]
            else:
                tensors[name] = arr
        elif id(arr) in ids:
            aliases[name] = ids[id(arr)]
        else:
            ids[id(arr)] = name
            tensors[name] = arr
        if on_item is not None:
            on_item(name)
    return tensors, aliases
