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

from ..errors import CorruptError, LimitError, NNCodecError, TruncatedError, UnsafePickleError

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
        return f"<storage {self.key!r} ({self.torch_name}, {self.nbytes} bytes)>"


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


def _rebuild_tensor(qn, *a):
    _nargs(qn, a, 4, 4)
    return TensorRef(a[0], a[1], a[2], a[3], None)


def _rebuild_tensor_v2(qn, *a):
    # (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
    # backward hooks can only be plain values here (hook functions are refused
    # globals); the optional metadata dict is not kept.
    _nargs(qn, a, 6, 7)
    return TensorRef(a[0], a[1], a[2], a[3], None, a[4])


def _rebuild_tensor_v3(qn, *a):
    # (storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype[, metadata])
    _nargs(qn, a, 7, 8)
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
        raise CorruptError(f"{qn} called with unexpected arguments (types {[type(x).__name__ for x in a]})")
    return a[0].encode(enc)


def _bytes(qn, *a):
    # protocol-2 pickles store b"" as bytes(); any argument would allocate
    if a:
        raise CorruptError(f"{qn} called with arguments; only bytes() is admitted")
    return b""


def _container(cls):
    def make(qn, *a):
        _nargs(qn, a, 0, 1)
        if a and not isinstance(a[0], (list, tuple, set, frozenset)):
            raise CorruptError(f"{qn} called with {type(a[0]).__name__}; expected a list")
        return cls(*a)

    return make


def _torch_size(qn, *a):
    _nargs(qn, a, 0, 1)
    if a and not (isinstance(a[0], (list, tuple)) and all(type(x) is int for x in a[0])):
        raise CorruptError(f"{qn} called with something other than a sequence of ints")
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


class RestrictedUnpickler(pickle._Unpickler):
    """Unpickler that admits only the globals :func:`resolve_global` allows.

    Built on the pure-Python unpickler: its memo is a dict, whereas the C
    unpickler sizes its memo array by the largest index a PUT opcode names,
    so a ten-byte pickle (``LONG_BINPUT 0x3ffffff0``) makes it allocate and
    clear gigabytes.
    """

    def __init__(self, file, *, source: str, persistent_load=None):
        # utf-8 like torch.load for Python-2 str objects
        super().__init__(file, encoding="utf-8")
        self._source = source
        self._persistent = persistent_load

    def find_class(self, module, name):
        return resolve_global(module, name, self._source)

    def persistent_load(self, pid):
        if self._persistent is None:
            raise CorruptError(f"{self._source}: unexpected persistent id in a pickle that should hold none")
        return self._persistent(pid)


def load(file, *, source: str, persistent_load=None):
    """Unpickle one object from ``file``; every failure becomes an nncodec error."""
    try:
        return RestrictedUnpickler(file, source=source, persistent_load=persistent_load).load()
    except NNCodecError:
        raise
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            OverflowError, UnicodeError, RecursionError, MemoryError, struct.error) as e:  # fmt: skip
        if isinstance(e, EOFError) or getattr(file, "short_read", False):
            raise TruncatedError(f"{source}: pickle data ends early; the file is truncated") from None
        raise CorruptError(f"{source}: invalid pickle data ({type(e).__name__}: {str(e)[:200]})") from None


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
