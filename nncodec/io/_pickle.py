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

from ..errors import CorruptError, LimitError, NNCodecError, TruncatedError, UnsafePickleError, describe
from ._pickle_globals import (DTYPE_TO_TORCH, STORAGE_DTYPES, TORCH_DTYPES, UNSUPPORTED_STORAGES,  # noqa: F401
                              UNSUPPORTED_TORCH_DTYPES, DType, StorageRef, StorageType, TensorRef, TorchSize, _Func, _Inert,
                              resolve_global)
from ._pickle_limits import (MAX_DEPTH, MAX_INT_BITS, MAX_ITEMS, MAX_KEY_ITEMS, OBJECTS_BASE,  # noqa: F401
                             OBJECTS_PER_PICKLE_BYTE, OPS_BASE, OPS_PER_INPUT_BYTE, WEIGHT_BASE,
                             WEIGHT_PER_PICKLE_BYTE, _CONTAINER_TYPES, LimitedReader, check_key, expanded_size)
from ._pickle_writer import PickleWriter, dumps_simple  # noqa: F401

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
