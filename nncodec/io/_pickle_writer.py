"""A minimal protocol-2 pickle writer: names the torch globals without torch being importable."""

from __future__ import annotations

import pickle
import struct



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
