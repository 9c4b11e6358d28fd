"""Reading torch checkpoints (zip or legacy layout) without torch.

See :mod:`nncodec.io.torch` for the two layouts. Every storage's size is
known from the pickle before its bytes are read: a zip record of any other
size is refused before it is inflated (as torch refuses it), and a legacy
storage's element count must match too.
"""

from __future__ import annotations

import collections
import io
import json
import math
import mmap
import os

import numpy as np

from ... import dtypes
from ...errors import CorruptError, FormatError, LimitError, TruncatedError, UnsupportedError
from ...format.constants import DEFAULT_LIMITS, Limits
from .. import _pickle as P
from ..checkpoint import SOURCE_FORMAT_KEY, Checkpoint, check_bool
from ..zipread import ZipReader, member_name
from .structure import STRUCTURE_KEY, STRUCTURE_VERSION, STRUCTURE_VERSION_SIZE, Walk, contiguous_stride, fmt_path, short, tensor_names

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001


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

    def __init__(self, zr: ZipReader, prefix: str):
        self.zr = zr
        self.prefix = prefix

    def read(self, st: P.StorageRef, tensor: str) -> bytearray:
        name = f"{self.prefix}data/{st.key}"
        info = self.zr.get(name)
        if info is None:
            raise CorruptError(
                f"{self.zr.path}: tensor {short(tensor)}: its storage {short(st.key)} has no record "
                f"{member_name(name)} in the archive"
            )
        # the pickle says how large the storage is: a record of any other size is refused
        # before it is inflated, as torch refuses it ("record size does not match expected size")
        need = st.base_offset + st.nbytes
        if info.file_size != need:
            raise CorruptError(
                f"{self.zr.path}: tensor {short(tensor)}: storage {st.key!r} holds {info.file_size} bytes but the "
                f"pickle declares {need}; the record size does not match, so the file is damaged"
            )
        view = self.zr.view(info, expect=need)  # a stored member: a view of the mapped file, no copy
        return view if view is not None else self.zr.read(info, expect=need)


def _read_zip(path, limits: Limits) -> Checkpoint:
    with ZipReader(path, limits, file_size=os.path.getsize(path)) as zr:
        infos = zr.infos
        pkl = [i for i in infos if i.filename.endswith("/data.pkl") and i.filename.count("/") == 1]
        if not pkl:
            raise FormatError(
                f"{path}: zip archive without a <folder>/data.pkl record; not a torch.save checkpoint "
                f"(TorchScript archives from torch.jit.save are not supported either)"
            )
        if len(pkl) > 1:
            raise CorruptError(
                f"{path}: zip archive with {len(pkl)} <folder>/data.pkl records ({member_name(pkl[0].filename)}, "
                f"{member_name(pkl[1].filename)}); torch reads the one in the folder of the first member, so the "
                f"file has two meanings"
            )
        info = pkl[0]
        prefix = info.filename[: -len("data.pkl")]
        if not infos[0].filename.startswith(prefix):
            raise CorruptError(
                f"{path}: the first member {member_name(infos[0].filename)} is not in the folder of "
                f"{member_name(info.filename)}; torch takes its folder from the first member, so the file has two meanings"
            )
        if info.file_size > limits.max_pickle_bytes:
            raise LimitError(
                f"{path}: {member_name(info.filename)} is {info.file_size} bytes, over "
                f"max_pickle_bytes={limits.max_pickle_bytes}; raise the limit if the file is trusted"
            )
        data = bytes(zr.read(info))
        big = False
        bo_info = zr.get(prefix + "byteorder")
        if bo_info is not None:
            if bo_info.file_size > 16:
                raise CorruptError(f"{path}: {member_name(bo_info.filename)} is {bo_info.file_size} bytes; expected 'little' or 'big'")
            bo = bytes(zr.read(bo_info))
            if bo not in (b"little", b"big"):
                raise CorruptError(f"{path}: {member_name(bo_info.filename)} says {bo[:16]!r}; expected 'little' or 'big'")
            big = bo == b"big"

        storages: dict = {}
        views: dict = {}
        source_name = f"{path}: {member_name(info.filename)}"

        def persistent_load(pid):
            return _storage_ref(pid, storages, views, source_name, legacy=False)

        obj = P.load(io.BytesIO(data), source=source_name, persistent_load=persistent_load, input_size=os.path.getsize(path))
        return _build(path, obj, len(data), _ZipSource(zr, prefix), big, limits, "torch")


def _storage_ref(pid, storages: dict, views: dict, source: str, *, legacy: bool):
    """Validate a persistent id and return the (cached) :class:`StorageRef` it names.

    ``storages`` maps a storage key to its StorageRef; ``views`` maps the view
    key of a legacy storage view to ``(storage key, offset, size)``: torch
    keeps the first view under a key for every later use of that key, so a key
    seen again with another view (or a view key that is also a storage key)
    is refused as giving the file two meanings.
    """
    if not isinstance(pid, tuple) or len(pid) not in (5, 6) or pid[0] not in ("storage", b"storage"):
        raise CorruptError(f"{source}: unexpected persistent id {short(pid)}; expected ('storage', type, key, location, numel)")
    stype, key, _location, numel = pid[1:5]
    view = pid[5] if len(pid) == 6 else None
    if not isinstance(stype, P.StorageType):
        raise CorruptError(f"{source}: persistent id names storage type {short(stype)}, not a torch storage class")
    if isinstance(key, bytes):
        key = key.decode("ascii", "replace")
    if not isinstance(key, str) or not key or len(key) > 256 or "/" in key or "\\" in key or key in (".", ".."):
        raise CorruptError(f"{source}: storage key {short(key)} is not a plain record name")
    if type(numel) is not int or numel < 0:
        raise CorruptError(f"{source}: storage {key!r} declares {short(numel)} elements")
    itemsize = None
    if stype.untyped:
        itemsize = 1
    elif stype.dtype is not None:
        itemsize = dtypes.itemsize(stype.dtype)
    nbytes = None if itemsize is None else numel * itemsize
    ref = storages.get(key)
    if ref is None:
        if key in views:
            raise CorruptError(f"{source}: storage key {short(key)} is also a view key; torch would read the view for "
                               f"both, so the file has two meanings")
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
        raise CorruptError(f"{source}: storage {key!r} has malformed view metadata {short(view)}")
    vkey = view[0]
    if isinstance(vkey, bytes):
        vkey = vkey.decode("ascii", "replace")
    if type(vkey) is not str or len(vkey) > 256:
        raise CorruptError(f"{source}: storage {key!r} has a view key {short(vkey)}, not a short string")
    this = (key, view[1], view[2])
    first = views.setdefault(vkey, this)
    if first != this:
        raise CorruptError(
            f"{source}: view key {vkey!r} names two different views, ({short(first[0])}, offset {first[1]}, "
            f"size {first[2]}) and ({short(key)}, offset {view[1]}, size {view[2]}); torch reads the first for "
            f"both, so the file has two meanings"
        )
    if vkey in storages:
        raise CorruptError(f"{source}: view key {vkey!r} is also a storage key; torch would read the storage for "
                           f"both, so the file has two meanings")
    if itemsize is None:
        return ref  # unsupported dtype: reported when a tensor uses it
    return P.StorageRef(key, ref.dtype, ref.torch_name, itemsize, view[2] * itemsize, view[1] * itemsize)


class _LegacySource:
    """Storages of a legacy file: ``key -> (file offset, nbytes)``, read as read-only views of
    a map of the file (no copy; the map lives as long as the arrays made from it)."""

    def __init__(self, path, f, offsets: dict):
        self.path = path
        self.f = f
        self.offsets = offsets
        self._mm = None

    def read(self, st: P.StorageRef, tensor: str) -> memoryview:
        key = st.key
        if key not in self.offsets:
            raise CorruptError(
                f"{self.path}: tensor {short(tensor)}: its storage {key!r} is not in the file's list of storages"
            )
        offset, nbytes = self.offsets[key]
        if self._mm is None:
            self._mm = mmap.mmap(self.f.fileno(), 0, access=mmap.ACCESS_READ)
        if offset + nbytes > len(self._mm):
            raise TruncatedError(f"{self.path}: storage {key!r} ends early (truncated?)")
        whole = memoryview(self._mm)
        try:
            return whole[offset : offset + nbytes]
        finally:
            whole.release()


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
                f"{path}: starts with a pickle of {short(magic)}, not the torch magic number {MAGIC_NUMBER:#x}; "
                f"not a torch checkpoint"
            )
        version = P.load(reader, source=f"{path}: protocol version")
        if version != PROTOCOL_VERSION:
            raise UnsupportedError(f"{path}: legacy torch protocol version {short(version)}; nncodec reads {PROTOCOL_VERSION}")
        sys_info = P.load(reader, source=f"{path}: sys_info")
        if not isinstance(sys_info, dict):
            raise CorruptError(f"{path}: sys_info is {type(sys_info).__name__}, not a dict")
        # storages of the legacy layout are always little-endian: torch converts on write

        storages: dict = {}
        views: dict = {}
        source_name = f"{path}: pickled object"
        start = f.tell()

        def persistent_load(pid):
            return _storage_ref(pid, storages, views, source_name, legacy=True)

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
                raise CorruptError(f"{path}: storage {short(key)} is listed but no tensor uses it")
            if key in offsets:
                raise CorruptError(f"{path}: storage {short(key)} is listed twice")
            head = f.read(8)
            if len(head) < 8:
                raise TruncatedError(f"{path}: file ends before storage {short(key)} (truncated?)")
            numel = int.from_bytes(head, "little", signed=True)
            nbytes = None if ref.itemsize is None else numel * ref.itemsize
            if numel < 0 or (ref.nbytes is not None and nbytes != ref.nbytes):
                declared = ref.nbytes // ref.itemsize if ref.nbytes is not None else "?"
                raise CorruptError(f"{path}: storage {short(key)} holds {numel} elements but the pickle declares {declared}")
            if nbytes is None:  # unsupported dtype: its size is unknown, and so is everything after it
                break
            if pos + 8 + nbytes > file_size:
                raise TruncatedError(
                    f"{path}: storage {short(key)} needs {nbytes} bytes at offset {pos + 8} but the file has {file_size} (truncated?)"
                )
            offsets[key] = (pos + 8, nbytes)
            pos += 8 + nbytes
            f.seek(pos)
        return _build(path, obj, pickle_len, _LegacySource(path, f, offsets), False, limits, "torch-legacy")




def _build(path, obj, pickle_len, source, big: bool, limits: Limits, fmt: str) -> Checkpoint:
    walk = Walk(path, 8 * pickle_len + (1 << 20))
    root_node = walk.run(obj)
    names = tensor_names(obj, [w for w, _, _ in walk.tensors])
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
        tensors[name] = check_bool(_materialize(path, name, spec, source, cache, uses, big), f"{path}: tensor {short(name)}")

    structure = {"v": STRUCTURE_VERSION, "root": root_node}
    try:
        text = json.dumps(structure, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
        if '"t":"size"' in text:  # version 2 adds the size node; other documents stay version 1
            structure["v"] = STRUCTURE_VERSION_SIZE
            text = json.dumps(structure, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    except (ValueError, RecursionError) as e:  # not expected: floats are encoded, depth is bounded
        raise UnsupportedError(f"{path}: cannot record the checkpoint's structure ({e})") from None
    metadata = {STRUCTURE_KEY: text, SOURCE_FORMAT_KEY: fmt}
    return Checkpoint(tensors=tensors, aliases=aliases, metadata=metadata, format=fmt)


def _check_tensor(path, name, ref: P.TensorRef, limits: Limits) -> dict:
    """Validate a tensor's storage, dtype, offset, size and stride; return what reading it needs."""
    where = f"{path}: tensor {short(name)}"
    st = ref.storage
    if not isinstance(st, P.StorageRef):
        raise CorruptError(f"{where}: its storage is {short(st)}, not a storage from the archive")
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
        raise CorruptError(f"{where}: size {short(size)} is not a sequence of integers")
    if len(size) > limits.max_rank:
        raise LimitError(f"{where}: {len(size)} dimensions, over max_rank={limits.max_rank}; raise the limit if the file is trusted")
    if any(d < 0 for d in size):
        raise CorruptError(f"{where}: negative size {short(size)}")
    if not isinstance(stride, (tuple, list)) or len(stride) != len(size) or not all(type(s) is int and s >= 0 for s in stride):
        raise CorruptError(f"{where}: stride {short(stride)} does not fit size {short(size)}")
    if type(offset) is not int or offset < 0:
        raise CorruptError(f"{where}: storage offset {short(offset)} is not a non-negative integer")
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
        buf = cache[st.key] = source.read(st, name)
    need = st.base_offset + st.nbytes
    if len(buf) < need:
        raise CorruptError(
            f"{path}: tensor {short(name)}: storage {st.key!r} holds {len(buf)} bytes but the pickle declares {need}"
        )
    uses[st.key] -= 1
    if uses[st.key] == 0:
        del cache[st.key]  # the last tensor of this storage: free it when done

    contiguous = spec["stride"] == contiguous_stride(size, keep_ones=False)
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
