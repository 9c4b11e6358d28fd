"""PyTorch checkpoints (``torch.save`` files), read and written without torch.

Two layouts exist:

* **zip** (``torch.save`` since 1.6, format name ``"torch"``): a zip archive of
  stored entries under one top folder (its name varies): ``<top>/data.pkl``
  (the pickled object), ``<top>/data/<key>`` (one entry per storage, raw bytes),
  ``<top>/byteorder`` (``little`` or ``big``; absent means little) and
  ``<top>/version``.
* **legacy** (``_use_new_zipfile_serialization=False`` and torch < 1.6, format
  name ``"torch-legacy"``): five pickles back to back -- the magic number
  0x1950a86a20f9469cfc6c, the protocol version 1001, a ``sys_info`` dict, the
  object, and the list of storage keys -- followed by each listed storage as
  an 8-byte little-endian element count and its raw little-endian bytes.

In both, a tensor is pickled as a call to ``torch._utils._rebuild_tensor_v2``
(``_v3`` for dtypes newer than the legacy storage classes) whose first
argument is a persistent id ``("storage", <storage type>, key, location,
numel[, view])`` naming a storage; the remaining arguments are the element
offset, size and stride of the view into that storage.

Reading never executes pickle code: :mod:`nncodec.io._pickle` admits only the
tensor-rebuild functions, storage and dtype objects and plain containers, and
returns nncodec's own stand-ins for them. Tensors are then cut out of their
storage with NumPy after their extent has been checked against the storage's
size, and returned C-contiguous and little-endian.

Tensor names are the dotted paths of dict keys and list indices leading to
each tensor. When every tensor sits under one top-level key whose value is a
dict (``{"state_dict": {...}, "epoch": 3}``), that key is dropped, so names
are the natural state-dict keys. Tensors sharing one storage at the same
offset with the same shape, strides and dtype (tied weights) become
:attr:`Checkpoint.aliases` of the first such name; written back, they share
one storage again.

The structure of the pickled object is recorded as described in
:mod:`nncodec.io.torch.structure`; reading is in :mod:`~nncodec.io.torch.reader`,
writing in :mod:`~nncodec.io.torch.writer`.
"""

from __future__ import annotations

from .reader import MAGIC_NUMBER, PROTOCOL_VERSION, read
from .structure import MAX_DEPTH, STRUCTURE_KEY, STRUCTURE_VERSION
from .writer import ZIP_ALIGN, ZIP_FOLDER, ZIP_VERSION, write

__all__ = [
    "read",
    "write",
    "STRUCTURE_KEY",
    "STRUCTURE_VERSION",
    "MAX_DEPTH",
    "MAGIC_NUMBER",
    "PROTOCOL_VERSION",
    "ZIP_FOLDER",
    "ZIP_VERSION",
    "ZIP_ALIGN",
]
