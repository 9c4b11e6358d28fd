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

Everything else in the pickled object is kept in metadata key
``nncodec.torch.structure``, a JSON document (ASCII, compact)::

    {"v": 1, "root": NODE}

where NODE is one of

* JSON ``null``, ``true``, ``false``, a number or a string: a Python None,
  bool, int, float or str. A JSON number with a fraction or exponent is a
  float, one without is an int;
* ``{"t": "tensor", "name": NAME}``, plus ``"param": true`` for an
  ``nn.Parameter`` and ``"grad": true`` when ``requires_grad`` was set: the
  tensor called NAME in the checkpoint (a tensor or an alias);
* ``{"t": "dict", "items": [[KEY, VALUE], ...]}`` and ``{"t": "odict", ...}``
  (``collections.OrderedDict``); keys are NODEs too, in file order. An odict may
  carry ``"attrs": {NAME: NODE}``, its instance attributes (``state_dict()``
  keeps the module versions in ``_metadata``);
* ``{"t": "list"|"tuple"|"set"|"frozenset", "items": [NODE, ...]}``;
* ``{"t": "float", "bits": "<16 hex digits>"}``: a NaN or infinity, by its
  IEEE-754 binary64 bit pattern (JSON cannot hold them);
* ``{"t": "bytes", "b64": "<base64>"}``;
* ``{"t": "dtype", "v": "<name>"}``: a ``torch.<name>`` dtype object;
* ``{"t": "ref", "id": N}``: the same object as the container node that carries
  ``"id": N`` earlier in the document (a container shared by reference, or a
  list or dict that contains itself).

Not kept: tensor locations (everything is written for ``cpu``), backward hooks
and the extra Python attributes of tensors and parameters.
"""

from __future__ import annotations

import base64
import collections
import io
import json
import math
import os
import struct
import zipfile
import zlib

import numpy as np

from .. import dtypes
from ..errors import (
    CorruptError,
    FormatError,
    LimitError,
    NNCodecError,
    TruncatedError,
    UnsupportedError,
    UsageError,
)
from ..format.constants import DEFAULT_LIMITS, Limits
from . import SOURCE_FORMAT_KEY, Checkpoint, check_bool
from . import _pickle as P

#: metadata key holding the structure of the pickled object (see module docstring)
STRUCTURE_KEY = "nncodec.torch.structure"
STRUCTURE_VERSION = 1

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

#: containers nested deeper than this are refused (real checkpoints nest a few levels;
#: the bound keeps the structure JSON within what Python's json module can parse)
MAX_DEPTH = 100

#: top folder of the zip archives nncodec writes
ZIP_FOLDER = "archive"
#: the zip file format version torch.save writes and torch.load accepts
ZIP_VERSION = b"3\n"
#: storage records start at multiples of this, as in torch.save output
ZIP_ALIGN = 64
#: sizes and offsets from this value on use zip64 fields (a module constant so tests can lower it)
ZIP64_LIMIT = 0xFFFFFFFF

_CONTAINERS = {
    dict: "dict",
    collections.OrderedDict: "odict",
    list: "list",
    tuple: "tuple",
    set: "set",
    frozenset: "frozenset",
}

_READ_CHUNK = 16 << 20


# ==========================================================================
# reading


def read(path, *, limits: Limits = DEFAULT_LIMITS) -> Checkpoint:
    """Read a torch checkpoint (zip or legacy layout) without importing torch."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] == b"PK":
        return _read_zip(path, limits)
    if head[:1] == b"\x80":
        return _read_legacy(path, limits)
    if not head:
        raise TruncatedError(f"{path}: empty file; expected a torch checkpoint")
    raise FormatError(
        f"{path}: not a torch checkpoint (first bytes {head!r}); expected a zip archive (torch.save) "
        f"or a legacy pickle-based file starting with 0x80"
    )


class _ZipSource:
    """Storage records of a zip checkpoint: ``<top>/data/<key>``."""

    def __init__(self, path, zf: zipfile.ZipFile, prefix: str, file_size: int, limits: Limits):
        self.path = path
        self.zf = zf
        self.prefix = prefix
        self.file_size = file_size
        self.limits = limits

    def read(self, key: str, tensor: str) -> bytearray:
        name = f"{self.prefix}data/{key}"
        try:
            info = self.zf.getinfo(name)
        except KeyError:
            raise CorruptError(
                f"{self.path}: tensor {tensor!r}: its storage {key!r} has no record {name!r} in the archive"
            ) from None
        return _read_zip_entry(self.path, self.zf, info, self.file_size, self.limits)


def _read_zip_entry(path, zf, info: zipfile.ZipInfo, file_size: int, limits: Limits) -> bytearray:
    """The whole (CRC-checked) content of one entry, after sanity checks on its declared sizes."""
    what = f"{path}: zip entry {info.filename!r}"
    if info.header_offset + 30 + info.compress_size > file_size:
        raise TruncatedError(f"{what} declares {info.compress_size} bytes past the end of the file (truncated?)")
    if info.compress_type == zipfile.ZIP_STORED:
        if info.compress_size != info.file_size:
            raise CorruptError(f"{what}: stored entry with size {info.file_size} != compressed size {info.compress_size}")
    elif info.file_size > max(info.compress_size * limits.max_expansion, limits.min_expansion_floor):
        raise LimitError(
            f"{what} expands {info.compress_size} bytes to {info.file_size}, over max_expansion={limits.max_expansion}; "
            f"raise the limit if the file is trusted"
        )
    buf = bytearray(info.file_size)
    view = memoryview(buf)
    try:
        with zf.open(info) as f:
            pos = 0
            while pos < len(buf):
                n = f.readinto(view[pos : pos + _READ_CHUNK])
                if not n:
                    raise TruncatedError(f"{what} ends after {pos} of {len(buf)} bytes (truncated?)")
                pos += n
            if f.read(1):  # also makes zipfile check the CRC-32
                raise CorruptError(f"{what} holds more than its declared {len(buf)} bytes")
    except NNCodecError:
        raise
    except EOFError:
        raise TruncatedError(f"{what} ends early (truncated?)") from None
    except NotImplementedError as e:
        raise UnsupportedError(f"{what}: {e}") from None
    except (zipfile.BadZipFile, zlib.error, RuntimeError, OSError, ValueError) as e:
        raise CorruptError(f"{what}: {e}") from None
    finally:
        view.release()
    return buf


def _read_zip(path, limits: Limits) -> Checkpoint:
    file_size = os.path.getsize(path)
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise TruncatedError(
            f"{path}: zip archive without a readable central directory ({e}); the file is truncated or damaged"
        ) from None
    except (OSError, ValueError, EOFError, NotImplementedError) as e:
        raise CorruptError(f"{path}: unreadable zip archive ({e})") from None
    with zf:
        infos = zf.infolist()
        pkl = [i for i in infos if i.filename.endswith("/data.pkl") and i.filename.count("/") == 1]
        if not pkl:
            raise FormatError(
                f"{path}: zip archive without a <folder>/data.pkl record; not a torch.save checkpoint "
                f"(TorchScript archives from torch.jit.save are not supported either)"
            )
        info = pkl[0]
        prefix = info.filename[: -len("data.pkl")]
        if info.file_size > limits.max_pickle_bytes:
            raise LimitError(
                f"{path}: {info.filename} is {info.file_size} bytes, over max_pickle_bytes={limits.max_pickle_bytes}; "
                f"raise the limit if the file is trusted"
            )
        data = bytes(_read_zip_entry(path, zf, info, file_size, limits))
        big = False
        bo_info = next((i for i in infos if i.filename == prefix + "byteorder"), None)
        if bo_info is not None:
            if bo_info.file_size > 16:
                raise CorruptError(f"{path}: {bo_info.filename} is {bo_info.file_size} bytes; expected 'little' or 'big'")
            bo = bytes(_read_zip_entry(path, zf, bo_info, file_size, limits))
            if bo not in (b"little", b"big"):
                raise CorruptError(f"{path}: {bo_info.filename} says {bo[:16]!r}; expected 'little' or 'big'")
            big = bo == b"big"

        storages: dict = {}
        source_name = f"{path}: {info.filename}"

        def persistent_load(pid):
            return _storage_ref(pid, storages, source_name, legacy=False)

        obj = P.load(io.BytesIO(data), source=source_name, persistent_load=persistent_load)
        return _build(path, obj, len(data), _ZipSource(path, zf, prefix, file_size, limits), big, limits, "torch")


def _storage_ref(pid, storages: dict, source: str, *, legacy: bool):
    """Validate a persistent id and return the (cached) :class:`StorageRef` it names."""
    if not isinstance(pid, tuple) or len(pid) not in (5, 6) or pid[0] not in ("storage", b"storage"):
        raise CorruptError(f"{source}: unexpected persistent id {_short(pid)}; expected ('storage', type, key, location, numel)")
    stype, key, _location, numel = pid[1:5]
    view = pid[5] if len(pid) == 6 else None
    if not isinstance(stype, P.StorageType):
        raise CorruptError(f"{source}: persistent id names storage type {_short(stype)}, not a torch storage class")
    if isinstance(key, bytes):
        key = key.decode("ascii", "replace")
    if not isinstance(key, str) or not key or len(key) > 256 or "/" in key or "\\" in key or key in (".", ".."):
        raise CorruptError(f"{source}: storage key {_short(key)} is not a plain record name")
    if type(numel) is not int or numel < 0:
        raise CorruptError(f"{source}: storage {key!r} declares {_short(numel)} elements")
    itemsize = None
    if stype.untyped:
        itemsize = 1
    elif stype.dtype is not None:
        itemsize = dtypes.itemsize(stype.dtype)
    nbytes = None if itemsize is None else numel * itemsize
    ref = storages.get(key)
    if ref is None:
        ref = storages[key] = P.StorageRef(key, stype.dtype, stype.torch_name, itemsize, nbytes)
    elif ref.torch_name != stype.torch_name or ref.nbytes != nbytes:
        raise CorruptError(
            f"{source}: storage {key!r} is declared twice, as {ref.torch_name} of {ref.nbytes} bytes and as "
            f"{stype.torch_name} of {nbytes} bytes"
        )
    if view is None:
        return ref
    # storage views exist only in very old legacy files: (view_key, offset, size) in elements
    if not legacy or not (isinstance(view, tuple) and len(view) == 3) or not all(type(v) is int and v >= 0 for v in view[1:]):
        raise CorruptError(f"{source}: storage {key!r} has malformed view metadata {_short(view)}")
    if itemsize is None:
        return ref  # unsupported dtype: reported when a tensor uses it
    return P.StorageRef(key, ref.dtype, ref.torch_name, itemsize, view[2] * itemsize, view[1] * itemsize)


class _LegacySource:
    """Storages of a legacy file: ``key -> (file offset, nbytes)``."""

    def __init__(self, path, f, offsets: dict):
        self.path = path
        self.f = f
        self.offsets = offsets

    def read(self, key: str, tensor: str) -> bytearray:
        if key not in self.offsets:
            raise CorruptError(
                f"{self.path}: tensor {tensor!r}: its storage {key!r} is not in the file's list of storages"
            )
        offset, nbytes = self.offsets[key]
        buf = bytearray(nbytes)
        self.f.seek(offset)
        if self.f.readinto(buf) != nbytes:
            raise TruncatedError(f"{self.path}: storage {key!r} ends early (truncated?)")
        return buf


def _read_legacy(path, limits: Limits) -> Checkpoint:
    file_size = os.path.getsize(path)
    with open(path, "rb") as f:
        reader = P.LimitedReader(f, limits.max_pickle_bytes, "max_pickle_bytes", path)
        try:
            magic = P.load(reader, source=f"{path}: magic number")
        except TruncatedError:
            raise
        except CorruptError as e:
            raise FormatError(f"{path}: not a torch checkpoint ({e})") from None
        if type(magic) is not int or magic != MAGIC_NUMBER:
            raise FormatError(
                f"{path}: starts with a pickle of {_short(magic)}, not the torch magic number {MAGIC_NUMBER:#x}; "
                f"not a torch checkpoint"
            )
        version = P.load(reader, source=f"{path}: protocol version")
        if version != PROTOCOL_VERSION:
            raise UnsupportedError(f"{path}: legacy torch protocol version {_short(version)}; nncodec reads {PROTOCOL_VERSION}")
        sys_info = P.load(reader, source=f"{path}: sys_info")
        if not isinstance(sys_info, dict):
            raise CorruptError(f"{path}: sys_info is {type(sys_info).__name__}, not a dict")
        # storages of the legacy layout are always little-endian: torch converts on write

        storages: dict = {}
        source_name = f"{path}: pickled object"
        start = f.tell()

        def persistent_load(pid):
            return _storage_ref(pid, storages, source_name, legacy=True)

        obj = P.load(reader, source=source_name, persistent_load=persistent_load)
        pickle_len = f.tell() - start
        keys = P.load(reader, source=f"{path}: storage key list")
        if not isinstance(keys, list) or not all(isinstance(k, (str, bytes)) for k in keys):
            raise CorruptError(f"{path}: the storage key list is {type(keys).__name__}, not a list of strings")
        offsets = {}
        pos = f.tell()
        for key in keys:
            if isinstance(key, bytes):
                key = key.decode("ascii", "replace")
            ref = storages.get(key)
            if ref is None:
                raise CorruptError(f"{path}: storage {key!r} is listed but no tensor uses it")
            if key in offsets:
                raise CorruptError(f"{path}: storage {key!r} is listed twice")
            head = f.read(8)
            if len(head) < 8:
                raise TruncatedError(f"{path}: file ends before storage {key!r} (truncated?)")
            numel = int.from_bytes(head, "little", signed=True)
            nbytes = None if ref.itemsize is None else numel * ref.itemsize
            if numel < 0 or (ref.nbytes is not None and nbytes != ref.nbytes):
                declared = ref.nbytes // ref.itemsize if ref.nbytes is not None else "?"
                raise CorruptError(f"{path}: storage {key!r} holds {numel} elements but the pickle declares {declared}")
            if nbytes is None:  # unsupported dtype: its size is unknown, and so is everything after it
                break
            if pos + 8 + nbytes > file_size:
                raise TruncatedError(
                    f"{path}: storage {key!r} needs {nbytes} bytes at offset {pos + 8} but the file has {file_size} (truncated?)"
                )
            offsets[key] = (pos + 8, nbytes)
            pos += 8 + nbytes
            f.seek(pos)
        return _build(path, obj, pickle_len, _LegacySource(path, f, offsets), False, limits, "torch-legacy")


# --------------------------------------------------------------------------
# the object tree -> structure + tensors


class _Walk:
    """Turns the unpickled object into the structure JSON and the list of tensors.

    Iterative (explicit stack), so deep nesting cannot exhaust the Python stack;
    each container is expanded once (later occurrences become ``ref`` nodes),
    so shared references cannot blow up the output.
    """

    def __init__(self, path: str, text_budget: int):
        self.path = path
        self.budget = text_budget
        self.tensors: list = []  # (key path tuple, TensorRef, node)
        self.seen: dict = {}  # id(container) -> node
        self.open: set = set()  # ids of the containers being expanded (ancestors)
        self.next_id = 0

    def charge(self, n: int, where):
        self.budget -= n
        if self.budget < 0:
            raise LimitError(
                f"{self.path}: the pickled object expands to more text than its pickle size warrants "
                f"(shared strings or very long names, at {_fmt_path(where)}); raise max_pickle_bytes if the file is trusted"
            )

    def run(self, root):
        holder = [None]
        # work items: (obj, key path, target list, target index, depth, why tensors are refused or None)
        stack: list = [(root, (), holder, 0, 0, None)]
        while stack:
            item = stack.pop()
            if item[0] is _EXIT:
                self.open.discard(item[1])
                continue
            obj, where, target, idx, depth, no_tensor = item
            target[idx] = self.visit(obj, where, depth, no_tensor, stack)
        return holder[0]

    def visit(self, obj, where, depth, no_tensor, stack):
        self.charge(1, where)
        t = type(obj)
        if obj is None or t is bool or t is int:
            return obj
        if t is str:
            self.charge(len(obj), where)
            return obj
        if t is float:
            if math.isfinite(obj):
                return obj
            return {"t": "float", "bits": struct.pack(">d", obj).hex()}
        if t is bytes:
            self.charge(len(obj) * 4 // 3 + 4, where)
            return {"t": "bytes", "b64": base64.b64encode(obj).decode("ascii")}
        if t is P.DType:
            return {"t": "dtype", "v": obj.torch_name}
        if t is P.TensorRef:
            if no_tensor:
                raise UnsupportedError(f"{self.path}: a tensor used as {no_tensor} at {_fmt_path(where)}; nncodec cannot keep it")
            node = {"t": "tensor"}
            self.tensors.append((where, obj, node))
            return node
        kind = _CONTAINERS.get(t)
        if kind is None:
            what = "a bare storage object" if t is P.StorageRef else f"a value of type {_short(obj)}"
            raise UnsupportedError(
                f"{self.path}: {what} at {_fmt_path(where)}; nncodec keeps tensors, plain containers, "
                f"numbers, strings, bytes and None"
            )
        oid = id(obj)
        first = self.seen.get(oid)
        if first is not None:
            if oid in self.open and kind not in ("list", "dict", "odict"):
                raise UnsupportedError(f"{self.path}: a {t.__name__} that contains itself at {_fmt_path(where)}")
            if "id" not in first:
                first["id"] = self.next_id
                self.next_id += 1
            return {"t": "ref", "id": first["id"]}
        if depth >= MAX_DEPTH:
            raise UnsupportedError(f"{self.path}: containers nested deeper than {MAX_DEPTH} levels at {_fmt_path(where[:8])}...")
        node = {"t": kind}
        if not (kind == "tuple" and not obj):  # the empty tuple is a shared singleton; never a ref
            self.seen[oid] = node
        self.open.add(oid)
        stack.append((_EXIT, oid))
        work = []
        if kind in ("dict", "odict"):
            items = node["items"] = [[None, None] for _ in range(len(obj))]
            for pair, (k, v) in zip(items, obj.items()):
                work.append((k, where, pair, 0, depth + 1, "a dict key"))
                work.append((v, where + (k,), pair, 1, depth + 1, no_tensor))
            attrs = getattr(obj, "__dict__", None) if kind == "odict" else None
            if attrs:
                if not all(type(k) is str for k in attrs):
                    raise UnsupportedError(f"{self.path}: OrderedDict attributes with non-string names at {_fmt_path(where)}")
                node["attrs"] = dict.fromkeys(attrs)
                for k, v in attrs.items():
                    work.append((v, where + ("<attr>", k), node["attrs"], k, depth + 1, "an OrderedDict attribute"))
        else:
            seq = list(obj)
            node["items"] = [None] * len(seq)
            in_set = kind in ("set", "frozenset")
            for i, v in enumerate(seq):
                work.append((v, where + (i,), node["items"], i, depth + 1, f"a {kind} element" if in_set else no_tensor))
        stack.extend(reversed(work))
        return node


_EXIT = object()


def _fmt_path(where) -> str:
    return repr(".".join(_component(k) for k in where)) if where else "the top level"


def _component(k) -> str:
    return k if isinstance(k, str) else repr(k)


def _short(v, n=80) -> str:
    try:
        r = repr(v)
    except Exception:  # a hostile object's repr may fail; only its type is shown then
        r = f"<{type(v).__name__}>"
    return r if len(r) <= n else r[:n] + "..."


def _names(root, paths) -> list:
    """Tensor names from key paths, dropping a single top-level wrapper key, made unique."""
    drop = 0
    if type(root) in (dict, collections.OrderedDict) and paths and all(len(p) >= 2 for p in paths):
        first = paths[0][0]
        if all(p[0] == first and type(p[0]) is type(first) for p in paths):
            if type(root.get(first)) in (dict, collections.OrderedDict):
                drop = 1
    names, used = [], set()
    for p in paths:
        name = ".".join(_component(k) for k in p[drop:]) or "tensor"
        if name in used:
            n = 2
            while f"{name}#{n}" in used:
                n += 1
            name = f"{name}#{n}"
        used.add(name)
        names.append(name)
    return names


def _build(path, obj, pickle_len, source, big: bool, limits: Limits, fmt: str) -> Checkpoint:
    walk = _Walk(path, 8 * pickle_len + (1 << 20))
    root_node = walk.run(obj)
    names = _names(obj, [w for w, _, _ in walk.tensors])
    for name, (where, _, node) in zip(names, walk.tensors):
        walk.charge(len(name), where)
        node["name"] = name

    # tensors -> arrays; identical views of one storage become aliases
    specs = [(name, _check_tensor(path, name, ref, limits)) for name, (_, ref, _) in zip(names, walk.tensors)]
    for (_, _, node), (_, spec) in zip(walk.tensors, specs):
        if spec["param"]:
            node["param"] = True
        if spec["grad"]:
            node["grad"] = True
    first_of: dict = {}
    uses = collections.Counter()
    for name, spec in specs:
        if spec["alias_key"] not in first_of:
            first_of[spec["alias_key"]] = name
            if spec["numel"]:
                uses[spec["storage"].key] += 1
    tensors: dict = {}
    aliases: dict = {}
    cache: dict = {}
    for name, spec in specs:
        target = first_of[spec["alias_key"]]
        if target != name:
            aliases[name] = target
            continue
        tensors[name] = check_bool(_materialize(path, name, spec, source, cache, uses, big), f"{path}: tensor {name!r}")

    structure = {"v": STRUCTURE_VERSION, "root": root_node}
    try:
        text = json.dumps(structure, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    except (ValueError, RecursionError) as e:  # not expected: floats are encoded, depth is bounded
        raise UnsupportedError(f"{path}: cannot record the checkpoint's structure ({e})") from None
    metadata = {STRUCTURE_KEY: text, SOURCE_FORMAT_KEY: fmt}
    return Checkpoint(tensors=tensors, aliases=aliases, metadata=metadata, format=fmt)


def _check_tensor(path, name, ref: P.TensorRef, limits: Limits) -> dict:
    """Validate a tensor's storage, dtype, offset, size and stride; return what reading it needs."""
    where = f"{path}: tensor {name!r}"
    st = ref.storage
    if not isinstance(st, P.StorageRef):
        raise CorruptError(f"{where}: its storage is {_short(st)}, not a storage from the archive")
    if ref.dtype is not None:  # _rebuild_tensor_v3: explicit dtype over an untyped storage
        dt = ref.dtype.dtype
        if dt is None:
            raise UnsupportedError(
                f"{where}: dtype torch.{ref.dtype.torch_name} is not supported; "
                f"nncodec stores: {', '.join(dtypes.DTYPE_NAMES)}"
            )
        if st.itemsize is None:
            raise UnsupportedError(f"{where}: storage type torch.{st.torch_name} is not supported")
    else:
        dt = st.dtype
        if dt is None:
            raise UnsupportedError(
                f"{where}: storage type torch.{st.torch_name} ({P.UNSUPPORTED_STORAGES.get(st.torch_name, '?')}) "
                f"is not supported; nncodec stores: {', '.join(dtypes.DTYPE_NAMES)}"
            )
    size, stride, offset = ref.size, ref.stride, ref.offset
    if not isinstance(size, (tuple, list)) or not all(type(d) is int for d in size):
        raise CorruptError(f"{where}: size {_short(size)} is not a sequence of integers")
    if len(size) > limits.max_rank:
        raise LimitError(f"{where}: {len(size)} dimensions, over max_rank={limits.max_rank}; raise the limit if the file is trusted")
    if any(d < 0 for d in size):
        raise CorruptError(f"{where}: negative size {_short(size)}")
    if not isinstance(stride, (tuple, list)) or len(stride) != len(size) or not all(type(s) is int and s >= 0 for s in stride):
        raise CorruptError(f"{where}: stride {_short(stride)} does not fit size {_short(size)}")
    if type(offset) is not int or offset < 0:
        raise CorruptError(f"{where}: storage offset {_short(offset)} is not a non-negative integer")
    numel = math.prod(size)
    if numel > limits.max_elements:
        raise LimitError(
            f"{where}: {numel} elements, over max_elements={limits.max_elements}; raise the limit if the file is trusted"
        )
    itemsize = dtypes.itemsize(dt)
    start = st.base_offset + offset * itemsize
    if numel:
        end = start + (sum((d - 1) * s for d, s in zip(size, stride)) + 1) * itemsize
        if end > st.base_offset + st.nbytes:
            raise CorruptError(
                f"{where}: offset {offset}, size {tuple(size)} and stride {tuple(stride)} reach byte {end} of storage "
                f"{st.key!r}, which holds {st.base_offset + st.nbytes} bytes; the file is damaged"
            )
    # size-1 dimensions may carry any stride; it does not affect which bytes are read
    norm_stride = tuple(s if d > 1 else 0 for d, s in zip(size, stride))
    return {
        "storage": st,
        "dtype": dt,
        "itemsize": itemsize,
        "start": start,
        "size": tuple(size),
        "stride": norm_stride,
        "numel": numel,
        "param": ref.param,
        "grad": ref.requires_grad,
        "alias_key": (st.key, start, tuple(size), tuple(stride), dt),
    }


def _materialize(path, name, spec, source, cache: dict, uses, big: bool) -> np.ndarray:
    dt = spec["dtype"]
    target = dtypes.to_numpy(dt)
    size, numel, itemsize = spec["size"], spec["numel"], spec["itemsize"]
    if not numel:
        return np.zeros(size, dtype=target)
    st = spec["storage"]
    buf = cache.get(st.key)
    if buf is None:
        buf = cache[st.key] = source.read(st.key, name)
    need = st.base_offset + st.nbytes
    if len(buf) < need:
        raise CorruptError(
            f"{path}: tensor {name!r}: storage {st.key!r} holds {len(buf)} bytes but the pickle declares {need}"
        )
    uses[st.key] -= 1
    if uses[st.key] == 0:
        del cache[st.key]  # the last tensor of this storage: free it when done

    contiguous = spec["stride"] == _contiguous_stride(size, keep_ones=False)
    if (contiguous and spec["start"] == 0 and numel * itemsize == len(buf)
            and uses[st.key] == 0 and st.key not in cache and (not big or itemsize == 1)):  # fmt: skip
        # the tensor is exactly its storage and nothing else uses it: no copy
        return np.frombuffer(buf, dtype=target).reshape(size)
    raw_dt = dtypes.uint_view(dt)
    src_dt = raw_dt.newbyteorder(">") if big else raw_dt
    view = np.ndarray(
        shape=size, dtype=src_dt, buffer=buf, offset=spec["start"], strides=tuple(s * itemsize for s in spec["stride"])
    )
    return view.astype(raw_dt, order="C").view(target)  # copies, C-contiguous, little-endian


def _contiguous_stride(size, keep_ones=True) -> tuple:
    """C-order strides in elements, as torch computes them (size-0/1 dims counted as 1)."""
    out, acc = [], 1
    for d in reversed(size):
        out.append(acc if keep_ones or d > 1 else 0)
        acc *= max(d, 1)
    return tuple(reversed(out))


# ==========================================================================
# writing


def write(path, ck: Checkpoint, *, format: str) -> None:
    """Write ``ck`` as a torch checkpoint: ``format`` "torch" (zip) or "torch-legacy"."""
    if format not in ("torch", "torch-legacy"):
        raise UsageError(f"torch writer: format {format!r}; choose 'torch' (zip, torch >= 1.6) or 'torch-legacy'")
    legacy = format == "torch-legacy"
    path = os.fspath(path)

    arrays = {}
    for name, a in ck.tensors.items():
        arr, dt = dtypes.as_stored(a)
        if legacy and P.DTYPE_TO_TORCH[dt][0] is None:
            raise UnsupportedError(
                f"tensor {name!r}: dtype {dt} has no storage class in the torch-legacy format; write format 'torch'"
            )
        arrays[name] = (arr, dt)
    for name, target in ck.aliases.items():
        if target not in arrays:
            raise UsageError(f"alias {name!r} points to {target!r}, which is not a tensor of the checkpoint")

    root = _structure_for(ck)
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


def _structure_for(ck: Checkpoint):
    names = ck.names()
    text = ck.metadata.get(STRUCTURE_KEY)
    if text is None:  # a flat state dict in checkpoint order
        return {"t": "odict", "items": [[n, {"t": "tensor", "name": n}] for n in names]}
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise CorruptError(f"metadata {STRUCTURE_KEY}: not valid JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("v") != STRUCTURE_VERSION or "root" not in doc:
        raise UnsupportedError(f"metadata {STRUCTURE_KEY}: not a version-{STRUCTURE_VERSION} structure document")
    # every tensor of the checkpoint must appear, and only those
    used = []
    stack = [doc["root"]]
    while stack:
        n = stack.pop()
        if isinstance(n, dict):
            if n.get("t") == "tensor":
                used.append(n.get("name"))
            for v in n.values():
                if isinstance(v, (dict, list)):
                    stack.append(v)
        elif isinstance(n, list):
            stack.extend(n)
    missing = [n for n in used if n not in ck.tensors and n not in ck.aliases]
    extra = set(names) - set(used)
    twice = sorted({n for n in used if used.count(n) > 1}) if len(set(used)) != len(used) else []
    if missing or extra or twice:
        raise UsageError(
            f"metadata {STRUCTURE_KEY} does not match the checkpoint's tensors "
            f"(named there but missing: {missing[:5]}; present but not named: {sorted(extra)[:5]}; "
            f"named twice: {twice[:5]}); remove that metadata key to write a flat state dict"
        )
    return doc["root"]


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
                    raise CorruptError(f"{bad}: float node with bits {_short(bits)}") from None
            elif t == "bytes":
                try:
                    w.bytes(base64.b64decode(n.get("b64"), validate=True))
                except (TypeError, ValueError):
                    raise CorruptError(f"{bad}: bytes node with malformed base64") from None
            elif t == "dtype":
                v = n.get("v")
                if v not in P.TORCH_DTYPES and v not in P.UNSUPPORTED_TORCH_DTYPES:
                    raise CorruptError(f"{bad}: unknown torch dtype {_short(v)}")
                w.global_("torch", v)
            elif t == "ref":
                i = n.get("id")
                if i not in memo:
                    raise CorruptError(f"{bad}: ref to id {_short(i)}, which no enclosing list/dict or earlier container has")
                w.get(memo[i])
            else:
                raise CorruptError(f"{bad}: unknown node type {_short(t)}")
        else:
            raise CorruptError(f"{bad}: unexpected value {_short(n)}")


def _items(n, bad, pairs=False):
    items = n.get("items")
    if not isinstance(items, list) or (pairs and not all(isinstance(p, list) and len(p) == 2 for p in items)):
        raise CorruptError(f"{bad}: {n.get('t')} node without a valid 'items' list")
    return items


def _memo_put(w, n, memo, bad):
    if "id" in n:
        if type(n["id"]) is not int or n["id"] in memo:
            raise CorruptError(f"{bad}: container id {_short(n['id'])} is not a new integer")
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
        numel = arr.nbytes
    w.str(key)
    w.str("cpu")
    w.int(numel)
    if legacy:
        w.none()  # no view metadata
    w.tuple_from_mark()
    w.binpersid()
    w.int(0)  # storage offset
    w.int_tuple(arr.shape)
    w.int_tuple(_contiguous_stride(arr.shape))
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
        f.write(_raw(arr))


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
        z.add(f"{ZIP_FOLDER}/data/{key}", _raw(arr))
    z.add(f"{ZIP_FOLDER}/version", ZIP_VERSION)
    z.close()
