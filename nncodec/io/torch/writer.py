"""Writing torch checkpoints (zip or legacy layout) without torch.

The pickle is emitted opcode by opcode from the structure document (see
:mod:`nncodec.io.torch.structure`) with :class:`nncodec.io._pickle.PickleWriter`,
naming only globals ``torch.load(weights_only=True)`` admits.
"""

from __future__ import annotations

import base64
import os
import struct
import zlib

import numpy as np

from ... import dtypes
from ...errors import CorruptError, UnsupportedError, UsageError
from .. import _pickle as P
from ..checkpoint import Checkpoint, Deferred
from .reader import MAGIC_NUMBER, PROTOCOL_VERSION
from .structure import STRUCTURE_KEY, contiguous_stride, short, structure_root

#: top folder of the zip archives nncodec writes
ZIP_FOLDER = "archive"
#: the zip file format version torch.save writes and torch.load accepts
ZIP_VERSION = b"3\n"
#: storage records start at multiples of this, as in torch.save output
ZIP_ALIGN = 64
#: sizes and offsets from this value on use zip64 fields (a module constant so tests can lower it)
ZIP64_LIMIT = 0xFFFFFFFF


def write(path, ck: Checkpoint, *, format: str) -> None:
    """Write ``ck`` as a torch checkpoint: ``format`` "torch" (zip) or "torch-legacy"."""
    if format not in ("torch", "torch-legacy"):
        raise UsageError(f"torch writer: format {format!r}; choose 'torch' (zip, torch >= 1.6) or 'torch-legacy'")
    legacy = format == "torch-legacy"
    path = os.fspath(path)

    arrays = {}
    for name, a in ck.tensors.items():
        # a deferred tensor is loaded when its storage is written: the pickle needs its shape only
        arr, dt = (a, a.dtype) if isinstance(a, Deferred) else dtypes.as_stored(a)
        if dt not in P.DTYPE_TO_TORCH:
            raise UnsupportedError(f"tensor {name!r}: dtype {dt} has no torch dtype; write safetensors or npz instead")
        if legacy and P.DTYPE_TO_TORCH[dt][0] is None:
            raise UnsupportedError(
                f"tensor {name!r}: dtype {dt} has no storage class in the torch-legacy format; write format 'torch'"
            )
        arrays[name] = (arr, dt)
    for name, target in ck.aliases.items():
        if target not in arrays:
            raise UsageError(f"alias {name!r} points to {target!r}, which is not a tensor of the checkpoint")

    root = structure_root(ck)
    storages: list = []  # (key, array) in first-use order
    key_of: dict = {}  # tensor name (alias target) -> storage key
    w = P.PickleWriter()
    _emit(w, root, ck, arrays, key_of, storages, legacy)
    pkl = w.finish()

    with open(path, "wb") as f:
        if legacy:
            _write_legacy(f, pkl, storages)
        else:
            _write_zip(f, pkl, storages)




def _emit(w: P.PickleWriter, root, ck: Checkpoint, arrays, key_of, storages, legacy: bool):
    """Emit the pickle for structure ``root`` (iteratively; see the module docstring for nodes)."""
    memo: dict = {}  # structure id -> memo index
    bad = f"metadata {STRUCTURE_KEY}"
    # work items: a node to emit, or a callable closing a container
    stack: list = [root]
    while stack:
        n = stack.pop()
        if callable(n):
            n()
            continue
        if n is None:
            w.none()
        elif n is True or n is False:
            w.bool(n)
        elif type(n) is int:
            w.int(n)
        elif type(n) is float:
            w.float(n)
        elif type(n) is str:
            w.str(n)
        elif type(n) is dict:
            t = n.get("t")
            if t == "tensor":
                _emit_tensor(w, n, ck, arrays, key_of, storages, legacy)
            elif t in ("dict", "odict"):
                items = _items(n, bad, pairs=True)
                if t == "odict":
                    w.ordered_dict()
                else:
                    w.empty_dict()
                _memo_put(w, n, memo, bad)
                work = []
                if items:
                    w.mark()
                    for k, v in items:
                        work += [k, v]
                    work.append(w.setitems)
                attrs = n.get("attrs")
                if t == "odict" and attrs:
                    if not isinstance(attrs, dict):
                        raise CorruptError(f"{bad}: odict attrs must be an object")
                    work.append(w.empty_dict)
                    work.append(w.mark)
                    for k, v in attrs.items():
                        work += [k, v]
                    work += [w.setitems, w.build]
                stack.extend(reversed(work))
            elif t == "list":
                items = _items(n, bad)
                w.empty_list()
                _memo_put(w, n, memo, bad)
                if items:
                    w.mark()
                    stack.append(w.appends)
                    stack.extend(reversed(items))
            elif t == "tuple":
                items = _items(n, bad)
                w.mark()
                stack.append(lambda n=n: (w.tuple_from_mark(), _memo_put(w, n, memo, bad)))
                stack.extend(reversed(items))
            elif t == "size":
                items = _items(n, bad)
                if not all(type(x) is int for x in items):
                    raise CorruptError(f"{bad}: a size node holds something other than integers")
                # as torch pickles it: torch.Size((items,))
                w.global_("torch", "Size")
                w.mark()
                stack.append(lambda n=n: (w.tuple_from_mark(), w.out.extend(b"\x85R"), _memo_put(w, n, memo, bad)))
                stack.extend(reversed(items))
            elif t in ("set", "frozenset"):
                items = _items(n, bad)
                # as Python's protocol-2 pickler writes them: set([items])
                w.global_("__builtin__", t)
                w.empty_list()
                w.mark()
                stack.append(lambda n=n: (w.appends(), w.out.extend(b"\x85R"), _memo_put(w, n, memo, bad)))
                stack.extend(reversed(items))
            elif t == "float":
                bits = n.get("bits")
                try:
                    w.float(struct.unpack(">d", bytes.fromhex(bits))[0])
                except (TypeError, ValueError, struct.error):
                    raise CorruptError(f"{bad}: float node with bits {short(bits)}") from None
            elif t == "bytes":
                try:
                    w.bytes(base64.b64decode(n.get("b64"), validate=True))
                except (TypeError, ValueError):
                    raise CorruptError(f"{bad}: bytes node with malformed base64") from None
            elif t == "dtype":
                v = n.get("v")
                if v not in P.TORCH_DTYPES and v not in P.UNSUPPORTED_TORCH_DTYPES:
                    raise CorruptError(f"{bad}: unknown torch dtype {short(v)}")
                w.global_("torch", v)
            elif t == "ref":
                i = n.get("id")
                if i not in memo:
                    raise CorruptError(f"{bad}: ref to id {short(i)}, which no enclosing list/dict or earlier container has")
                w.get(memo[i])
            else:
                raise CorruptError(f"{bad}: unknown node type {short(t)}")
        else:
            raise CorruptError(f"{bad}: unexpected value {short(n)}")


def _items(n, bad, pairs=False):
    items = n.get("items")
    if not isinstance(items, list) or (pairs and not all(isinstance(p, list) and len(p) == 2 for p in items)):
        raise CorruptError(f"{bad}: {n.get('t')} node without a valid 'items' list")
    return items


def _memo_put(w, n, memo, bad):
    if "id" in n:
        if type(n["id"]) is not int or n["id"] in memo:
            raise CorruptError(f"{bad}: container id {short(n['id'])} is not a new integer")
        memo[n["id"]] = w.put()


def _emit_tensor(w: P.PickleWriter, n, ck, arrays, key_of, storages, legacy):
    name = n.get("name")
    target = ck.aliases.get(name, name)
    arr, dt = arrays[target]
    key = key_of.get(target)
    if key is None:
        key = key_of[target] = str(len(storages))
        storages.append((key, arr))
    storage_class, torch_dtype = P.DTYPE_TO_TORCH[dt]
    param = n.get("param") is True
    grad = n.get("grad") is True
    if param:
        w.global_("torch._utils", "_rebuild_parameter")
        w.mark()
    w.global_("torch._utils", "_rebuild_tensor_v2" if storage_class else "_rebuild_tensor_v3")
    w.mark()
    # persistent id of the storage
    w.mark()
    w.str("storage")
    if storage_class:
        w.global_("torch", storage_class)
        numel = arr.size
    else:
        w.global_("torch.storage", "UntypedStorage")
        numel = arr.size * dtypes.itemsize(dt)
    w.str(key)
    w.str("cpu")
    w.int(numel)
    if legacy:
        w.none()  # no view metadata
    w.tuple_from_mark()
    w.binpersid()
    w.int(0)  # storage offset
    w.int_tuple(arr.shape)
    w.int_tuple(contiguous_stride(arr.shape))
    w.bool(grad and not param)
    w.ordered_dict()  # backward hooks
    if not storage_class:
        w.global_("torch", torch_dtype)
    w.tuple_from_mark()
    w.reduce()
    if param:
        w.bool(grad)
        w.ordered_dict()
        w.tuple_from_mark()
        w.reduce()


def _raw(arr: np.ndarray) -> memoryview:
    return memoryview(arr.reshape(-1).view(np.uint8))


def _storage_bytes(arr):
    """``(bytes view, done)`` of a storage; ``done()`` lets a deferred tensor's array go."""
    if not isinstance(arr, Deferred):
        return _raw(arr), lambda: None
    loaded, _ = dtypes.as_stored(arr.load())
    if loaded.shape != arr.shape:
        raise CorruptError(f"a deferred tensor of shape {arr.shape} loaded as {loaded.shape}")
    return _raw(loaded), lambda: arr.release(loaded)


def _write_legacy(f, pkl: bytes, storages):
    f.write(P.dumps_simple(MAGIC_NUMBER))
    f.write(P.dumps_simple(PROTOCOL_VERSION))
    f.write(P.dumps_simple({
        "protocol_version": PROTOCOL_VERSION,
        "little_endian": True,
        "type_sizes": {"short": 2, "int": 4, "long": 4},
    }))  # fmt: skip
    f.write(pkl)
    f.write(P.dumps_simple([k for k, _ in storages]))
    for _, arr in storages:
        f.write(struct.pack("<q", arr.size))
        data, done = _storage_bytes(arr)
        f.write(data)
        del data
        done()


class _ZipWriter:
    """Writes a zip of stored entries whose data start at multiples of ZIP_ALIGN.

    Sizes are in the local headers (no data descriptors); the padding is an
    extra field with id ``FB`` as torch.save writes it. Zip64 fields are used
    for sizes and offsets from ZIP64_LIMIT on.
    """

    def __init__(self, f):
        self.f = f
        self.pos = 0
        self.central = []

    def _out(self, b):
        self.f.write(b)
        self.pos += len(b)

    def add(self, name: str, data) -> None:
        data = memoryview(data).cast("B")
        n = data.nbytes
        crc = zlib.crc32(data)
        bname = name.encode("ascii")
        big = n >= ZIP64_LIMIT
        extra = struct.pack("<HHQQ", 1, 16, n, n) if big else b""
        pad = (-(self.pos + 30 + len(bname) + len(extra) + 4)) % ZIP_ALIGN
        extra += b"FB" + struct.pack("<H", pad) + b"Z" * pad
        n32 = 0xFFFFFFFF if big else n
        offset = self.pos
        self._out(struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 45 if big else 20, 0, 0, 0, 0x21, crc, n32, n32,
                              len(bname), len(extra)) + bname + extra)  # fmt: skip
        self._out(data)
        self.central.append((bname, crc, n, offset))

    def close(self) -> None:
        cd_start = self.pos
        for bname, crc, n, offset in self.central:
            z64 = b""
            if n >= ZIP64_LIMIT:
                z64 += struct.pack("<QQ", n, n)
            if offset >= ZIP64_LIMIT:
                z64 += struct.pack("<Q", offset)
            extra = struct.pack("<HH", 1, len(z64)) + z64 if z64 else b""
            n32 = 0xFFFFFFFF if n >= ZIP64_LIMIT else n
            off32 = 0xFFFFFFFF if offset >= ZIP64_LIMIT else offset
            ver = 45 if z64 else 20
            self._out(struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", ver, ver, 0, 0, 0, 0x21, crc, n32, n32,
                                  len(bname), len(extra), 0, 0, 0, 0, off32) + bname + extra)  # fmt: skip
        cd_size = self.pos - cd_start
        count = len(self.central)
        if count >= 0xFFFF or cd_start >= ZIP64_LIMIT or cd_size >= ZIP64_LIMIT:
            eocd64 = self.pos
            self._out(struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, cd_size, cd_start))
            self._out(struct.pack("<4sIQI", b"PK\x06\x07", 0, eocd64, 1))
            self._out(struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0))
        else:
            self._out(struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, count, count, cd_size, cd_start, 0))


def _write_zip(f, pkl: bytes, storages):
    z = _ZipWriter(f)
    z.add(f"{ZIP_FOLDER}/data.pkl", pkl)
    z.add(f"{ZIP_FOLDER}/byteorder", b"little")
    for key, arr in storages:
        data, done = _storage_bytes(arr)
        z.add(f"{ZIP_FOLDER}/data/{key}", data)
        del data
        done()
    z.add(f"{ZIP_FOLDER}/version", ZIP_VERSION)
    z.close()
