"""Bounded reading for the restricted unpickler: a byte budget, key checks and the
expanded-size count of shared structures (used by :mod:`._pickle`)."""

from __future__ import annotations

import collections

from ..errors import LimitError, UnsupportedError, describe
from ._pickle_globals import _Inert

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
