"""A restricted pickle reader and a minimal pickle writer for PyTorch checkpoints.

Reading: :class:`RestrictedUnpickler` resolves every global a pickle names
through :func:`resolve_global`, which admits only what a PyTorch weights file
needs -- the tensor-rebuild functions, storage types, ``torch.<dtype>``
objects and plain containers -- and hands back nncodec's own stand-ins for
them. Nothing from torch is imported and no code named by the pickle runs: a
stand-in for ``torch._utils._rebuild_tensor_v2`` records its arguments in a
:class:`TensorRef`, a storage type becomes a :class:`StorageType` marker, and
so on. Every other global raises :class:`~nncodec.errors.UnsafePickleError`
before anything is called.

Writing: :class:`PickleWriter` emits protocol-2 opcodes directly, so the
torch globals (``torch._utils _rebuild_tensor_v2`` ...) can be named without
torch being importable.
"""

from __future__ import annotations

import collections
import pickle
import struct
import sys

from ..errors import (CorruptError, LimitError, NNCodecError, TruncatedError, UnsafePickleError, UnsupportedError,
                      describe)

# --------------------------------------------------------------------------
# dtype tables

#: torch legacy storage class name -> nncodec dtype name
STORAGE_DTYPES = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
}
#: storage classes torch has but nncodec does not store -> torch dtype name
UNSUPPORTED_STORAGES = {
    "ComplexDoubleStorage": "complex128",
    "ComplexFloatStorage": "complex64",
    "ComplexHalfStorage": "complex32",
    "QInt8Storage": "qint8",
    "QInt32Storage": "qint32",
    "QUInt8Storage": "quint8",
    "QUInt4x2Storage": "quint4x2",
    "QUInt2x4Storage": "quint2x4",
}
#: ``torch.<name>`` dtype attribute -> nncodec dtype name (aliases included)
TORCH_DTYPES = {
    "float64": "float64", "double": "float64",
    "float32": "float32", "float": "float32",
    "float16": "float16", "half": "float16",
    "bfloat16": "bfloat16",
    "int64": "int64", "long": "int64",
    "int32": "int32", "int": "int32",
    "int16": "int16", "short": "int16",
    "int8": "int8",
    "uint8": "uint8",
    "uint16": "uint16",
    "uint32": "uint32",
    "uint64": "uint64",
    "bool": "bool",
    "float8_e4m3fn": "float8_e4m3fn",
    "float8_e5m2": "float8_e5m2",
}  # fmt: skip
#: torch dtypes nncodec does not store; naming one is not unsafe, using it for a tensor is unsupported
UNSUPPORTED_TORCH_DTYPES = frozenset(
    "complex32 complex64 complex128 cfloat cdouble chalf qint8 qint32 quint8 quint4x2 quint2x4 "
    "float8_e4m3fnuz float8_e5m2fnuz float8_e8m0fnu float4_e2m1fn_x2 "
    "bits1x8 bits2x4 bits4x2 bits8 bits16 "
    "int1 int2 int3 int4 int5 int6 int7 uint1 uint2 uint3 uint4 uint5 uint6 uint7".split()
)

#: nncodec dtype name -> (legacy storage class or None, canonical torch dtype attribute)
DTYPE_TO_TORCH = {
    "float64": ("DoubleStorage", "float64"),
    "float32": ("FloatStorage", "float32"),
    "float16": ("HalfStorage", "float16"),
    "bfloat16": ("BFloat16Storage", "bfloat16"),
    "int64": ("LongStorage", "int64"),
    "int32": ("IntStorage", "int32"),
    "int16": ("ShortStorage", "int16"),
    "int8": ("CharStorage", "int8"),
    "uint8": ("ByteStorage", "uint8"),
    "bool": ("BoolStorage", "bool"),
    # dtypes newer than the legacy storage classes: torch writes them as an
    # untyped (byte) storage plus an explicit dtype (_rebuild_tensor_v3)
    "uint16": (None, "uint16"),
    "uint32": (None, "uint32"),
    "uint64": (None, "uint64"),
    "float8_e4m3fn": (None, "float8_e4m3fn"),
    "float8_e5m2": (None, "float8_e5m2"),
}


# --------------------------------------------------------------------------
# stand-ins returned for admitted globals


class _Inert:
    """Base of the stand-ins: a pickle may not set attributes on them (BUILD)."""

    __slots__ = ()

    def __setstate__(self, state):
        raise CorruptError(f"pickle tries to set the state of {self!r}; a torch checkpoint never does")

    def __reduce__(self):  # never pickled by accident
        raise TypeError(f"{self!r} cannot be pickled")


class DType(_Inert):
    """A ``torch.<dtype>`` object named by a pickle. ``dtype`` is None if nncodec does not store it."""

    __slots__ = ("torch_name", "dtype")

    def __init__(self, torch_name: str, dtype: str | None):
        self.torch_name = torch_name
        self.dtype = dtype

    def __repr__(self):
        return f"torch.{self.torch_name}"


class StorageType(_Inert):
    """A ``torch.<X>Storage`` class or ``torch.UntypedStorage`` (``untyped``: elements are bytes)."""

    __slots__ = ("torch_name", "dtype", "untyped")

    def __init__(self, torch_name: str, dtype: str | None, untyped: bool = False):
        self.torch_name = torch_name
        self.dtype = dtype
        self.untyped = untyped

    def __repr__(self):
        return f"torch.{self.torch_name}"


class StorageRef(_Inert):
    """A storage named by a persistent id: ``nbytes`` bytes of record ``key``.

    ``base_offset`` is non-zero only for the storage views of very old legacy
    files. ``dtype`` is the storage's element type (None for untyped storage
    of an unsupported type); ``torch_name`` names it in messages.
    """

    __slots__ = ("key", "dtype", "torch_name", "itemsize", "nbytes", "base_offset")

    def __init__(self, key, dtype, torch_name, itemsize, nbytes, base_offset=0):
        self.key = key
        self.dtype = dtype
        self.torch_name = torch_name
        self.itemsize = itemsize
        self.nbytes = nbytes
        self.base_offset = base_offset

    def __repr__(self):
        return f"<storage {describe(self.key)} ({self.torch_name}, {describe(self.nbytes)} bytes)>"


class TensorRef(_Inert):
    """A tensor as the pickle describes it; validated and read later by the caller."""

    __slots__ = ("storage", "offset", "size", "stride", "dtype", "requires_grad", "param")

    def __init__(self, storage, offset, size, stride, dtype, requires_grad=False, param=False):
        self.storage = storage
        self.offset = offset
        self.size = size
        self.stride = stride
        self.dtype = dtype  # a DType for _rebuild_tensor_v3, else None (the storage's dtype)
        self.requires_grad = requires_grad is True
        self.param = param

    def __repr__(self):
        return "<tensor>"


class _Func(_Inert):
    """A callable stand-in for an admitted global function."""

    __slots__ = ("qualname", "fn")

    def __init__(self, qualname, fn):
        self.qualname = qualname
        self.fn = fn

    def __call__(self, *args):
        return self.fn(self.qualname, *args)

    def __repr__(self):
        return self.qualname


def _nargs(qualname, args, lo, hi):
    if not lo <= len(args) <= hi:
        raise CorruptError(f"{qualname} called with {len(args)} arguments; it takes {lo} to {hi}")


#: longest size or stride tuple a stand-in accepts; the reader refuses ranks over
#: ``Limits.max_rank`` (32) with a clearer message
_MAX_DIMS = 4096


def _dims(qn, what, v):
    """Refuse a size or stride that is not a short sequence of integers, without formatting it."""
    if type(v) not in (tuple, list) or len(v) > _MAX_DIMS or not all(type(d) is int for d in v):
        raise CorruptError(f"{qn}: {what} is {describe(v)}, not a sequence of at most {_MAX_DIMS} integers")


def _tensor_args(qn, a):
    _dims(qn, "size", a[2])
    _dims(qn, "stride", a[3])
    if type(a[1]) is not int:
        raise CorruptError(f"{qn}: storage offset is {describe(a[1])}, not an integer")


def _rebuild_tensor(qn, *a):
    _nargs(qn, a, 4, 4)
    _tensor_args(qn, a)
    return TensorRef(a[0], a[1], a[2], a[3], None)


def _rebuild_tensor_v2(qn, *a):
    # (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
    # backward hooks can only be plain values here (hook functions are refused
    # globals); the optional metadata dict is not kept.
    _nargs(qn, a, 6, 7)
    _tensor_args(qn, a)
    return TensorRef(a[0], a[1], a[2], a[3], None, a[4])


def _rebuild_tensor_v3(qn, *a):
    # (storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype[, metadata])
    _nargs(qn, a, 7, 8)
    _tensor_args(qn, a)
    if not isinstance(a[6], DType):
        raise CorruptError(f"{qn}: dtype argument is {type(a[6]).__name__}, not a torch dtype")
    return TensorRef(a[0], a[1], a[2], a[3], a[6], a[4])


def _rebuild_parameter(qn, *a):
    # (data, requires_grad, backward_hooks[, state]); a parameter's extra
    # python attributes (state) are not kept
    _nargs(qn, a, 3, 4)
    t = a[0]
    if not isinstance(t, TensorRef):
        raise CorruptError(f"{qn}: data is {type(t).__name__}, not a tensor")
    return TensorRef(t.storage, t.offset, t.size, t.stride, t.dtype, a[1], param=True)


def _codecs_encode(qn, *a):
    # protocol-2 pickles store bytes as _codecs.encode(text, 'latin1')
    _nargs(qn, a, 1, 2)
    enc = a[1] if len(a) > 1 else "utf-8"
    if not isinstance(a[0], str) or enc not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise CorruptError(f"{qn} called with unexpected arguments (types {[type(x).__name__ for x in a][:4]})")
    return a[0].encode(enc)


def _bytes(qn, *a):
    # protocol-2 pickles store b"" as bytes(); any argument would allocate
    if a:
        raise CorruptError(f"{qn} called with arguments; only bytes() is admitted")
    return b""


def _container(cls):
    def make(qn, *a):
        _nargs(qn, a, 0, 1)
        if a and type(a[0]) not in (list, tuple, set, frozenset):
            raise CorruptError(f"{qn} called with {type(a[0]).__name__}; expected a list")
        for x in a[0] if a else ():
            check_key(x, qn)  # members are hashed: only flat ones
        return cls(*a)

    return make


def _torch_size(qn, *a):
    _nargs(qn, a, 0, 1)
    if a:
        _dims(qn, "its argument", a[0])
    return tuple(*a)


_FUNCS = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("_codecs", "encode"): _codecs_encode,
    ("builtins", "bytes"): _bytes,
    ("builtins", "set"): _container(set),
    ("builtins", "frozenset"): _container(frozenset),
    ("torch", "Size"): _torch_size,
}

# names protocol-2 pickles written by Python 2 (or by Python 3 for protocol 2) use
_PY2_MODULES = {"__builtin__": "builtins"}


def resolve_global(module, name, source: str):
    """The stand-in for global ``module.name``, or raise UnsafePickleError."""
    module = _PY2_MODULES.get(module, module)
    if module == "collections" and name == "OrderedDict":
        return collections.OrderedDict
    fn = _FUNCS.get((module, name))
    if fn is not None:
        return _Func(f"{module}.{name}", fn)
    if module in ("torch", "torch.cuda") and isinstance(name, str) and name.endswith("Storage"):
        if name in STORAGE_DTYPES:
            return StorageType(name, STORAGE_DTYPES[name])
        if name in UNSUPPORTED_STORAGES:
            return StorageType(name, None)
    if (module, name) in (("torch", "UntypedStorage"), ("torch.storage", "UntypedStorage")):
        return StorageType("UntypedStorage", "uint8", untyped=True)
    if module == "torch" and (name in TORCH_DTYPES or name in UNSUPPORTED_TORCH_DTYPES):
        return DType(name, TORCH_DTYPES.get(name))
    shown = f"{module}.{name}"
    if len(shown) > 200:
        shown = shown[:200] + "..."
    hint = ""
    if module == "torch._utils":
        hint = " (a tensor kind nncodec does not read: sparse, quantized or device-specific)"
    raise UnsafePickleError(
        f"refused global {shown!r} in {source}{hint}: nncodec loads only tensors and plain containers "
        f"(dict, OrderedDict, list, tuple, str, numbers, bytes, None); re-save the checkpoint as a plain "
        f"state dict (torch.save(model.state_dict(), path)) to compress it"
    )


# --------------------------------------------------------------------------
# reading


class LimitedReader:
    """A read-only file wrapper that refuses to hand out more than ``budget`` bytes.

    Used for the pickles of a legacy file, whose lengths are not known before
    they are parsed. It has no ``peek``, so the unpickler reads exactly up to
    the end of each pickle and the file position can be trusted afterwards.
    """

    def __init__(self, f, budget: int, limit_name: str, source: str):
        self._f = f
        self.budget = budget
        self._limit_name = limit_name
        self._source = source
        self.short_read = False  # a read returned less than asked: the file ended

    def _got(self, data, n):
        if len(data) < n:
            self.short_read = True
        return data

    def _take(self, n: int) -> int:
        if n < 0 or n > self.budget:
            raise LimitError(
                f"{self._source}: pickle data is larger than {self._limit_name} allows; "
                f"raise limits.{self._limit_name} if the file is trusted"
            )
        self.budget -= n
        return n

    def read(self, n=-1):
        if n is None or n < 0:
            n = self.budget + 1  # a whole-file read is over the budget unless the file is short
            data = self._f.read(n)
            self._take(len(data))
            return data
        return self._got(self._f.read(self._take(n)), n)

    def readinto(self, b):
        m = memoryview(b).cast("B")
        self._take(len(m))
        got = self._f.readinto(m)
        if got < len(m):
            self.short_read = True
        return got

    def readline(self, size=-1):
        line = self._f.readline(min(self.budget + 1, size if size is not None and size >= 0 else self.budget + 1))
        self._take(len(line))
        if not line.endswith(b"\n"):
            self.short_read = True
        return line


#: bounds of the restricted unpickler (spec/SECURITY.md, "Pickles"); none is
#: reached by a real checkpoint, each stops one way a few bytes can demand
#: unbounded work
MAX_DEPTH = 256  #: containers nested in containers
MAX_ITEMS = 1 << 24  #: items of one list, tuple, dict or set
#: integers are sizes, strides, offsets and counts, plus the legacy magic number (80 bits)
MAX_INT_BITS = 128
MAX_KEY_ITEMS = 16  #: items of a tuple used as a dict key or set member
OPS_BASE = 1 << 20  #: opcodes always allowed ...
OPS_PER_INPUT_BYTE = 16  #: ... plus this many per byte of the input file
WEIGHT_BASE = 1 << 20  #: expanded size always allowed ...
WEIGHT_PER_PICKLE_BYTE = 8  #: ... plus this many per pickle byte read
OBJECTS_BASE = 1 << 18  #: containers always allowed ...
OBJECTS_PER_PICKLE_BYTE = 0.5  #: ... plus this many per pickle byte read

_CONTAINER_TYPES = (list, dict, collections.OrderedDict, tuple, set, frozenset)
_KEY_SCALARS = (str, bytes, int, bool, type(None))


def check_key(k, source: str):
    """Refuse a dict key or set member whose hash an input could make expensive.

    Hashing is bounded only for flat keys: str and bytes (their hash is
    randomised), integers (bounded to 2**128, so few share a hash), None, bool,
    the inert stand-ins (hashed by identity) and short tuples of those with at
    most one non-string item (a tuple of several integers can be built to
    collide). Floats, nested tuples and frozensets are refused: a state dict
    is keyed by names and indices.
    """
    t = type(k)
    if t in _KEY_SCALARS or isinstance(k, _Inert):
        return
    if t is tuple and len(k) <= MAX_KEY_ITEMS:
        loose = 0
        for x in k:
            tx = type(x)
            if tx is str or tx is bytes:
                continue
            if tx not in _KEY_SCALARS:
                break
            loose += 1
        else:
            if loose <= 1:
                return
    raise UnsupportedError(
        f"{source}: a dict key or set member is {describe(k)}; nncodec admits str, bytes, int, bool and None keys "
        f"and short tuples of them"
    )


def expanded_size(obj, limit: int, max_depth: int, source: str, *, fail: bool = True):
    """The number of nodes ``repr(obj)`` would visit, or refuse if over ``limit`` or ``max_depth``.

    Shared containers count each time they are reached (as repr, hashing or a
    naive walk would expand them); a container reached again inside itself (a
    cycle) counts once, as repr prints ``[...]`` there. Strings and bytes count
    their length. Iterative, and it stops as soon as ``limit`` is passed, so
    it costs at most ``limit`` steps whatever the graph. With ``fail=False``
    it returns None instead of raising.
    """
    total = 0
    open_ids: set = set()
    stack = [(obj, False)]
    while stack:
        x, leaving = stack.pop()
        if leaving:
            open_ids.discard(id(x))
            continue
        t = type(x)
        if t is str or t is bytes or t is bytearray:
            total += 1 + len(x)
        elif t in _CONTAINER_TYPES:
            total += 1
            if id(x) in open_ids:
                continue
            if len(open_ids) >= max_depth:
                if not fail:
                    return None
                raise UnsupportedError(f"{source}: containers nested deeper than {max_depth} levels")
            open_ids.add(id(x))
            stack.append((x, True))
            if t is dict or t is collections.OrderedDict:
                for k, v in x.items():
                    stack.append((k, False))
                    stack.append((v, False))
                if t is collections.OrderedDict:
                    for v in x.__dict__.values():
                        stack.append((v, False))
            else:
                for v in x:
                    stack.append((v, False))
        else:
            total += 1
        if total > limit:
            if not fail:
                return None
            raise LimitError(
                f"{source}: shared references make the pickled object expand to more than {limit} items "
                f"(a few bytes referring to one object many times); a checkpoint never needs that"
            )
    return total


class _Stop(Exception):
    def __init__(self, value):
        self.value = value


def _opcode(name: str) -> int:
    return getattr(pickle, name)[0]


class RestrictedUnpickler(pickle._Unpickler):
    """Unpickler that admits only the globals :func:`resolve_global` allows, with bounded work.

    Built on the pure-Python unpickler: its memo is a dict, whereas the C
    unpickler sizes its memo array by the largest index a PUT opcode names,
    so a ten-byte pickle (``LONG_BINPUT 0x3ffffff0``) makes it allocate and
    clear gigabytes.

    Work is bounded for every input (spec/SECURITY.md, "Pickles"):

    * opcodes: at most ``OPS_BASE + OPS_PER_INPUT_BYTE * input_size`` when the
      size of the file the pickle came from is known (a deflated pickle can
      be 1000 times its compressed size);
    * sharing: shared references and cycles are kept (torch.load keeps them
      too, and real checkpoints share a tuple or a dict), but the finished
      object's *expanded size* -- the nodes its repr, hash or a naive walk
      would visit, a shared container counted each time it is reached, a
      cycle once -- must stay under ``WEIGHT_BASE + WEIGHT_PER_PICKLE_BYTE *
      bytes read`` (:func:`expanded_size`, which stops as soon as it passes
      the bound), so a graph whose expansion is exponential is refused when
      the pickle ends, before anything formats or walks it;
    * nesting deeper than ``MAX_DEPTH``, containers over ``MAX_ITEMS`` items,
      more containers than ``OBJECTS_BASE + OBJECTS_PER_PICKLE_BYTE * bytes
      read``, integers over 2**128 (checked on the digits, before conversion),
      strings that are not valid UTF-8 (lone surrogates)
      and dict keys or set members other than flat ones (:func:`check_key`)
      are refused;
    * REDUCE calls only the admitted stand-ins, with a tuple; ``OrderedDict``
      only with no arguments; BUILD sets attributes of an ``OrderedDict``
      only; NEWOBJ builds only an empty ``OrderedDict``; EXT opcodes are
      refused.

    Error messages show only type names, lengths and capped prefixes
    (:func:`nncodec.errors.describe`).
    """

    def __init__(self, file, *, source: str, persistent_load=None, input_size: int | None = None):
        # utf-8 like torch.load for Python-2 str objects
        super().__init__(file, encoding="utf-8")
        self._source = source
        self._persistent = persistent_load
        self._consumed = 0
        raw_read, raw_readline = self._file_read, self._file_readline

        def counted_read(n=-1):
            data = raw_read(n)
            self._consumed += len(data)
            return data

        def counted_readline(*a):
            data = raw_readline(*a)
            self._consumed += len(data)
            return data

        self._file_read, self._file_readline = counted_read, counted_readline
        self._max_ops = None if input_size is None else OPS_BASE + OPS_PER_INPUT_BYTE * max(0, int(input_size))
        self._objects = 0

    # ---------------------------------------------------------------- driver

    def load(self):
        self._unframer = pickle._Unframer(self._file_read, self._file_readline)
        self.read = self._unframer.read
        self.readinto = self._unframer.readinto
        self.readline = self._unframer.readline
        self.metastack = []
        self.stack = []
        self.append = self.stack.append
        self.proto = 0
        read = self.read
        dispatch = self._dispatch
        max_ops = self._max_ops
        ops = 0
        try:
            while True:
                key = read(1)
                if not key:
                    raise EOFError
                ops += 1
                if max_ops is not None and ops > max_ops:
                    raise LimitError(
                        f"{self._source}: the pickle runs more than {max_ops} opcodes, over {OPS_PER_INPUT_BYTE} per "
                        f"byte of its file; a checkpoint never needs that many (a decompression bomb?)"
                    )
                fn = dispatch.get(key[0])
                if fn is None:
                    raise CorruptError(f"{self._source}: invalid pickle opcode {key!r}")
                fn(self)
        except _Stop as stop:
            return stop.value

    def load_stop(self):
        value = self.stack.pop()
        limit = WEIGHT_BASE + WEIGHT_PER_PICKLE_BYTE * self._consumed
        expanded_size(value, limit, MAX_DEPTH, self._source)
        raise _Stop(value)

    # -------------------------------------------------------------- bookkeeping

    def _fail(self, what: str):
        raise CorruptError(f"{self._source}: {what}; a torch checkpoint never does this")

    def _new(self, obj):
        """Count a container the pickle builds (memory is bounded by the bytes read)."""
        self._objects += 1
        if self._objects > OBJECTS_BASE + OBJECTS_PER_PICKLE_BYTE * self._consumed:
            raise LimitError(
                f"{self._source}: the pickle builds more than {self._objects - 1} containers from "
                f"{self._consumed} bytes; a checkpoint never needs that many"
            )
        if len(obj) > MAX_ITEMS:
            raise LimitError(f"{self._source}: a container of {len(obj)} items, over {MAX_ITEMS}")
        return obj

    def _grow(self, obj, n: int):
        if len(obj) + n > MAX_ITEMS:
            raise LimitError(f"{self._source}: a container of {len(obj) + n} items, over {MAX_ITEMS}")

    def _keys(self, keys):
        for k in keys:
            check_key(k, self._source)

    # ------------------------------------------------------------- containers

    def load_empty_list(self):
        self.append(self._new([]))

    def load_empty_dictionary(self):
        self.append(self._new({}))

    def load_empty_set(self):
        self.append(self._new(set()))

    def load_empty_tuple(self):
        self.append(())

    def load_list(self):
        items = self.pop_mark()  # before self.append is looked up: pop_mark rebinds it
        self.append(self._new(items))

    def load_tuple(self):
        items = self.pop_mark()
        self.append(self._new(tuple(items)) if items else ())

    def _tuple_n(self, n):
        stack = self.stack
        if len(stack) < n:
            self._fail("a TUPLE opcode finds too few items on the stack")
        items = tuple(stack[-n:])
        del stack[-n:]
        self.append(self._new(items))

    def load_tuple1(self):
        self._tuple_n(1)

    def load_tuple2(self):
        self._tuple_n(2)

    def load_tuple3(self):
        self._tuple_n(3)

    def load_dict(self):
        items = self.pop_mark()
        if len(items) % 2:
            self._fail("a DICT opcode finds an odd number of items")
        keys = items[0::2]
        self._keys(keys)
        self.append(self._new(dict(zip(keys, items[1::2]))))

    def load_frozenset(self):
        items = self.pop_mark()
        self._keys(items)
        self.append(self._new(frozenset(items)))

    def _target(self, kinds, op):
        if not self.stack:
            self._fail(f"{op} on an empty stack")
        obj = self.stack[-1]
        if type(obj) not in kinds:
            self._fail(f"{op} applied to a {type(obj).__name__}")
        return obj

    def load_append(self):
        if len(self.stack) < 2:
            self._fail("APPEND finds too few items on the stack")
        value = self.stack.pop()
        obj = self._target((list,), "APPEND")
        self._grow(obj, 1)
        obj.append(value)

    def load_appends(self):
        items = self.pop_mark()
        obj = self._target((list,), "APPENDS")
        self._grow(obj, len(items))
        obj.extend(items)

    def load_setitem(self):
        stack = self.stack
        if len(stack) < 3:
            self._fail("SETITEM finds too few items on the stack")
        value = stack.pop()
        key = stack.pop()
        obj = self._target((dict, collections.OrderedDict), "SETITEM")
        check_key(key, self._source)
        self._grow(obj, 1)
        obj[key] = value

    def load_setitems(self):
        items = self.pop_mark()
        if len(items) % 2:
            self._fail("SETITEMS finds an odd number of items")
        obj = self._target((dict, collections.OrderedDict), "SETITEMS")
        self._keys(items[0::2])
        self._grow(obj, len(items) // 2)
        for i in range(0, len(items), 2):
            obj[items[i]] = items[i + 1]

    def load_additems(self):
        items = self.pop_mark()
        obj = self._target((set,), "ADDITEMS")
        self._keys(items)
        self._grow(obj, len(items))
        obj.update(items)

    # ------------------------------------------------------------- references
    # (sharing and cycles are allowed, as torch.load allows them; what they can
    # cost is bounded once, on the finished object, by expanded_size)

    def _get(self, i):
        try:
            obj = self.memo[i]
        except KeyError:
            raise CorruptError(f"{self._source}: the pickle refers to memo entry {describe(i)}, which it never stored") from None
        self.append(obj)

    def load_get(self):
        line = self.readline()
        if len(line) > 24:
            self._fail("a GET opcode with an index of more than 20 digits")
        self._get(int(line[:-1]))

    def load_binget(self):
        self._get(self.read(1)[0])

    def load_long_binget(self):
        (i,) = struct.unpack("<I", self.read(4))
        self._get(i)

    def load_put(self):
        line = self.readline()
        if len(line) > 24:
            self._fail("a PUT opcode with an index of more than 20 digits")
        i = int(line[:-1])
        if i < 0:
            self._fail("a negative PUT index")
        if not self.stack:
            self._fail("PUT on an empty stack")
        self.memo[i] = self.stack[-1]

    # ------------------------------------------------------------- strings

    def _text(self, data: bytes, op: str) -> str:
        # strict UTF-8: Python pickles str with 'surrogatepass', but a lone surrogate cannot be
        # stored in a .nnc header or a safetensors file (refused here, never reaching a writer)
        try:
            return str(data, "utf-8")
        except UnicodeDecodeError as e:
            raise CorruptError(
                f"{self._source}: a {op} string is not valid UTF-8 ({e.reason} at byte {e.start} of {len(data)}; "
                f"a lone surrogate?); nncodec cannot store it"
            ) from None

    def _read_exact(self, n: int) -> bytes:
        if n > sys.maxsize:
            self._fail("a string longer than the address space")
        data = self.read(n)
        if len(data) < n:
            raise EOFError
        return data

    def load_short_binunicode(self):
        self.append(self._text(self._read_exact(self.read(1)[0]), "SHORT_BINUNICODE"))

    def load_binunicode(self):
        (n,) = struct.unpack("<I", self.read(4))
        self.append(self._text(self._read_exact(n), "BINUNICODE"))

    def load_binunicode8(self):
        (n,) = struct.unpack("<Q", self.read(8))
        self.append(self._text(self._read_exact(n), "BINUNICODE8"))

    def load_unicode(self):
        s = str(self.readline()[:-1], "raw-unicode-escape")
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            raise CorruptError(f"{self._source}: a UNICODE string holds a lone surrogate; nncodec cannot store it") from None
        self.append(s)

    # ------------------------------------------------------------- integers

    def _int_text(self, data: bytes, op: str) -> int:
        digits = data.strip()
        if digits.endswith(b"L"):
            digits = digits[:-1]
        if len(digits) > 45:  # more digits than 2**128 has: never converted (int() of a long text is quadratic)
            raise CorruptError(
                f"{self._source}: a {op} opcode holds an integer of {len(digits)} digits; sizes and offsets fit in "
                f"{MAX_INT_BITS} bits"
            )
        v = int(digits, 0) if op == "INT" else int(digits)
        return self._int_checked(v, op)

    def _int_checked(self, v: int, op: str) -> int:
        if v.bit_length() > MAX_INT_BITS:
            raise CorruptError(f"{self._source}: a {op} opcode holds an integer of {v.bit_length()} bits; "
                               f"sizes and offsets fit in {MAX_INT_BITS} bits")
        return v

    def load_int(self):
        data = self.readline()
        if data == b"00\n":
            self.append(False)
        elif data == b"01\n":
            self.append(True)
        else:
            self.append(self._int_text(data, "INT"))

    def load_long(self):
        self.append(self._int_text(self.readline(), "LONG"))

    def _long_bytes(self, n: int, op: str):
        if n < 0:
            self._fail(f"a {op} opcode with a negative length")
        if n > MAX_INT_BITS // 8 + 1:
            raise CorruptError(f"{self._source}: a {op} opcode holds an integer of {n} bytes; "
                               f"sizes and offsets fit in {MAX_INT_BITS} bits")
        data = self.read(n)
        if len(data) < n:
            raise EOFError
        self.append(self._int_checked(pickle.decode_long(data), op))

    def load_long1(self):
        self._long_bytes(self.read(1)[0], "LONG1")

    def load_long4(self):
        (n,) = struct.unpack("<i", self.read(4))
        self._long_bytes(n, "LONG4")

    # ------------------------------------------------------------- calls

    def _call(self, func, args, op):
        if type(args) is not tuple:
            self._fail(f"{op} with arguments of type {type(args).__name__}, not a tuple")
        if func is collections.OrderedDict:
            if args:
                self._fail(f"{op} builds an OrderedDict from arguments")
            return self._new(collections.OrderedDict())
        if type(func) is not _Func:
            self._fail(f"{op} calls {describe(func) if not isinstance(func, _Inert) else repr(func)}")
        result = func(*args)
        if type(result) in _CONTAINER_TYPES and result != ():
            return self._new(result)  # set(), frozenset() and torch.Size()
        return result

    def load_reduce(self):
        stack = self.stack
        if len(stack) < 2:
            self._fail("REDUCE finds too few items on the stack")
        args = stack.pop()
        stack[-1] = self._call(stack[-1], args, "REDUCE")

    def _instantiate(self, klass, args):  # INST and OBJ
        self.append(self._call(klass, tuple(args), "INST/OBJ"))

    def load_newobj(self):
        args = self.stack.pop()
        cls = self.stack.pop()
        if cls is not collections.OrderedDict or args != ():
            self._fail("NEWOBJ builds an object other than an empty OrderedDict")
        self.append(self._new(collections.OrderedDict()))

    def load_newobj_ex(self):
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        if cls is not collections.OrderedDict or args != () or kwargs != {}:
            self._fail("NEWOBJ_EX builds an object other than an empty OrderedDict")
        self.append(self._new(collections.OrderedDict()))

    def load_build(self):
        stack = self.stack
        if len(stack) < 2:
            self._fail("BUILD finds too few items on the stack")
        state = stack.pop()
        inst = stack[-1]
        if isinstance(inst, _Inert):
            inst.__setstate__(state)  # refuses
        if type(state) is tuple and len(state) == 2 and not state[1]:
            state = state[0]  # (state, empty slot state)
        if type(inst) is not collections.OrderedDict or type(state) is not dict:
            self._fail(f"BUILD sets the state of a {type(inst).__name__}")
        if not all(type(k) is str for k in state):
            self._fail("BUILD sets attributes with names other than strings")
        inst.__dict__.update(state)

    def load_ext1(self):
        raise UnsafePickleError(f"{self._source}: the pickle uses the copyreg extension registry (EXT opcodes), which nncodec refuses")

    load_ext2 = load_ext4 = load_ext1

    # ------------------------------------------------------------- globals and ids

    def find_class(self, module, name):
        return resolve_global(module, name, self._source)

    def persistent_load(self, pid):
        if self._persistent is None:
            raise CorruptError(f"{self._source}: unexpected persistent id in a pickle that should hold none")
        if type(pid) not in (tuple, str) or expanded_size(pid, 4096, 2, self._source, fail=False) is None:
            raise CorruptError(
                f"{self._source}: persistent id {describe(pid)} is not a storage reference "
                f"('storage', type, key, location, numel)"
            )
        return self._persistent(pid)


RestrictedUnpickler._dispatch = dict(pickle._Unpickler.dispatch)
for _name, _fn in {
    "STOP": RestrictedUnpickler.load_stop,
    "EMPTY_LIST": RestrictedUnpickler.load_empty_list,
    "EMPTY_DICT": RestrictedUnpickler.load_empty_dictionary,
    "EMPTY_SET": RestrictedUnpickler.load_empty_set,
    "EMPTY_TUPLE": RestrictedUnpickler.load_empty_tuple,
    "LIST": RestrictedUnpickler.load_list,
    "TUPLE": RestrictedUnpickler.load_tuple,
    "TUPLE1": RestrictedUnpickler.load_tuple1,
    "TUPLE2": RestrictedUnpickler.load_tuple2,
    "TUPLE3": RestrictedUnpickler.load_tuple3,
    "DICT": RestrictedUnpickler.load_dict,
    "FROZENSET": RestrictedUnpickler.load_frozenset,
    "APPEND": RestrictedUnpickler.load_append,
    "APPENDS": RestrictedUnpickler.load_appends,
    "SETITEM": RestrictedUnpickler.load_setitem,
    "SETITEMS": RestrictedUnpickler.load_setitems,
    "ADDITEMS": RestrictedUnpickler.load_additems,
    "DUP": RestrictedUnpickler.load_dup,
    "GET": RestrictedUnpickler.load_get,
    "BINGET": RestrictedUnpickler.load_binget,
    "LONG_BINGET": RestrictedUnpickler.load_long_binget,
    "PUT": RestrictedUnpickler.load_put,
    "INT": RestrictedUnpickler.load_int,
    "LONG": RestrictedUnpickler.load_long,
    "LONG1": RestrictedUnpickler.load_long1,
    "LONG4": RestrictedUnpickler.load_long4,
    "REDUCE": RestrictedUnpickler.load_reduce,
    "NEWOBJ": RestrictedUnpickler.load_newobj,
    "NEWOBJ_EX": RestrictedUnpickler.load_newobj_ex,
    "BUILD": RestrictedUnpickler.load_build,
    "EXT1": RestrictedUnpickler.load_ext1,
    "SHORT_BINUNICODE": RestrictedUnpickler.load_short_binunicode,
    "BINUNICODE": RestrictedUnpickler.load_binunicode,
    "BINUNICODE8": RestrictedUnpickler.load_binunicode8,
    "UNICODE": RestrictedUnpickler.load_unicode,
    "EXT2": RestrictedUnpickler.load_ext2,
    "EXT4": RestrictedUnpickler.load_ext4,
}.items():
    RestrictedUnpickler._dispatch[_opcode(_name)] = _fn
del _name, _fn


#: exceptions the pure-Python unpickler raises on malformed input
_PICKLE_ERRORS = (EOFError, pickle.UnpicklingError, ValueError, TypeError, KeyError, IndexError, AttributeError,
                  OverflowError, UnicodeError, RecursionError, MemoryError, struct.error)  # fmt: skip


def _exc_text(e: BaseException) -> str:
    """``Type: message`` without formatting the exception's arguments (they may be huge objects)."""
    args = getattr(e, "args", ())
    if isinstance(e, MemoryError) or not args or not all(type(a) is str for a in args):
        return type(e).__name__
    text = " ".join(args)
    cut = text[:200].encode("utf-8", "backslashreplace").decode("utf-8")
    return f"{type(e).__name__}: {cut}" + (f"... ({len(text)} characters)" if len(text) > 200 else "")


def load(file, *, source: str, persistent_load=None, input_size: int | None = None):
    """Unpickle one object from ``file``; every failure becomes an nncodec error.

    ``input_size`` is the size of the file the pickle comes from (the archive
    holding a deflated ``data.pkl``); when given, the opcodes run are bounded
    by it (``OPS_PER_INPUT_BYTE`` per byte).
    """
    try:
        return RestrictedUnpickler(file, source=source, persistent_load=persistent_load, input_size=input_size).load()
    except NNCodecError:
        raise
    except _PICKLE_ERRORS as e:
        if isinstance(e, EOFError) or getattr(file, "short_read", False):
            raise TruncatedError(f"{source}: pickle data ends early; the file is truncated") from None
        raise CorruptError(f"{source}: invalid pickle data ({_exc_text(e)})") from None


# --------------------------------------------------------------------------
# writing

_PUT_LIMIT = 0xFFFFFFFF


class PickleWriter:
    """Emits protocol-2 pickle opcodes into a bytearray.

    Only the opcodes needed for checkpoints: scalars, str, containers, globals,
    REDUCE/BUILD, persistent ids and the memo.
    """

    def __init__(self):
        self.out = bytearray(b"\x80\x02")  # PROTO 2
        self._globals: dict = {}
        self._memo_next = 0

    def finish(self) -> bytes:
        self.out += b"."  # STOP
        return bytes(self.out)

    # memo
    def put(self) -> int:
        """Store the top of the stack in the memo; returns its index."""
        i = self._memo_next
        self._memo_next += 1
        self.out += b"q" + bytes([i]) if i < 256 else b"r" + struct.pack("<I", i)
        return i

    def get(self, i: int) -> None:
        self.out += b"h" + bytes([i]) if i < 256 else b"j" + struct.pack("<I", i)

    # scalars
    def none(self):
        self.out += b"N"

    def bool(self, v: bool):
        self.out += b"\x88" if v else b"\x89"

    def int(self, v: int):
        if 0 <= v < 256:
            self.out += b"K" + bytes([v])
        elif 0 <= v < 65536:
            self.out += b"M" + struct.pack("<H", v)
        elif -(2**31) <= v < 2**31:
            self.out += b"J" + struct.pack("<i", v)
        else:
            data = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
            if len(data) < 256:
                self.out += b"\x8a" + bytes([len(data)]) + data
            else:
                self.out += b"\x8b" + struct.pack("<i", len(data)) + data

    def float(self, v: float):
        self.out += b"G" + struct.pack(">d", v)

    def str(self, v: str):
        data = v.encode("utf-8", "surrogatepass")
        self.out += b"X" + struct.pack("<I", len(data)) + data

    def bytes(self, v: bytes):
        # as Python's protocol-2 pickler does: _codecs.encode(latin-1 text, 'latin1');
        # also for b"", which Python writes as bytes() but torch.load(weights_only=True) refuses
        self.global_("_codecs", "encode")
        self.str(v.decode("latin-1"))
        self.str("latin1")
        self.out += b"\x86R"  # TUPLE2 REDUCE

    # structure
    def global_(self, module: str, name: str):
        key = (module, name)
        if key in self._globals:
            self.get(self._globals[key])
        else:
            self.out += b"c" + module.encode("ascii") + b"\n" + name.encode("ascii") + b"\n"
            self._globals[key] = self.put()

    def mark(self):
        self.out += b"("

    def tuple_from_mark(self):
        self.out += b"t"

    def empty_tuple(self):
        self.out += b")"

    def empty_list(self):
        self.out += b"]"

    def empty_dict(self):
        self.out += b"}"

    def appends(self):
        self.out += b"e"

    def setitems(self):
        self.out += b"u"

    def reduce(self):
        self.out += b"R"

    def build(self):
        self.out += b"b"

    def binpersid(self):
        self.out += b"Q"

    def ordered_dict(self):
        """Push a new empty ``collections.OrderedDict``."""
        self.global_("collections", "OrderedDict")
        self.out += b")R"

    def int_tuple(self, values):
        self.mark()
        for v in values:
            self.int(v)
        self.tuple_from_mark()


def dumps_simple(obj) -> bytes:
    """Pickle a plain value (int, str, bool, dict or list of those) with protocol 2."""
    return pickle.dumps(obj, protocol=2)


__all__ = [
    "DType",
    "StorageType",
    "StorageRef",
    "TensorRef",
    "RestrictedUnpickler",
    "LimitedReader",
    "PickleWriter",
    "load",
    "resolve_global",
    "dumps_simple",
]
