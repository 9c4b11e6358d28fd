"""What a PyTorch pickle may name, and nncodec's inert stand-ins for it (used by :mod:`._pickle`).

Every global a pickle names goes through :func:`resolve_global`; only the
tensor-rebuild functions, storage types, ``torch.<dtype>`` objects and plain
containers are admitted, as stand-ins that record their arguments. Nothing
named by a pickle is ever called.
"""

from __future__ import annotations

import collections

from ..errors import CorruptError, UnsafePickleError, UnsupportedError, describe

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
    "ComplexFloatStorage": "complex64",
}
#: storage classes torch has but nncodec does not store -> torch dtype name
UNSUPPORTED_STORAGES = {
    "ComplexDoubleStorage": "complex128",
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
    "float8_e8m0fnu": "float8_e8m0fnu",
    "float8_e4m3fnuz": "float8_e4m3fnuz",
    "float8_e5m2fnuz": "float8_e5m2fnuz",
    "float4_e2m1fn_x2": "float4_e2m1fn_x2",
    "complex64": "complex64", "cfloat": "complex64",
}  # fmt: skip
#: torch dtypes nncodec does not store; naming one is not unsafe, using it for a tensor is unsupported
UNSUPPORTED_TORCH_DTYPES = frozenset(
    "complex32 complex128 cdouble chalf qint8 qint32 quint8 quint4x2 quint2x4 "
    "bits1x8 bits2x4 bits4x2 bits8 bits16 "
    "int1 int2 int3 int4 int5 int6 int7 uint1 uint2 uint3 uint4 uint5 uint6 uint7".split()
)

class _TorchDtypes(dict):
    """The table below; a dtype torch has no counterpart for is refused by name, not a KeyError."""

    __slots__ = ()

    def __missing__(self, name):
        raise UnsupportedError(
            f"dtype {name} has no torch dtype (torch has no packed 6-bit float), so a tensor of it "
            f"cannot be written to a torch checkpoint; write safetensors or npz instead"
        )


#: nncodec dtype name -> (legacy storage class or None, canonical torch dtype attribute); the
#: packed FP6 dtypes (float6_e2m3fn_x4, float6_e3m2fn_x4) have none and are refused
DTYPE_TO_TORCH = _TorchDtypes({
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
    "float8_e8m0fnu": (None, "float8_e8m0fnu"),
    "float8_e4m3fnuz": (None, "float8_e4m3fnuz"),
    "float8_e5m2fnuz": (None, "float8_e5m2fnuz"),
    "float4_e2m1fn_x2": (None, "float4_e2m1fn_x2"),
    "complex64": ("ComplexFloatStorage", "complex64"),
})


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
        from ._pickle_limits import check_key

        for x in a[0] if a else ():
            check_key(x, qn)  # members are hashed: only flat ones
        return cls(*a)

    return make


class TorchSize(tuple):
    """A ``torch.Size`` read from a pickle: a tuple of ints that remembers it was a Size."""

    __slots__ = ()


def _torch_size(qn, *a):
    _nargs(qn, a, 0, 1)
    if a:
        _dims(qn, "its argument", a[0])
    return TorchSize(*a)


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
