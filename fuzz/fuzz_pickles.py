"""Structure-aware pickle fuzzing: the input is a program that builds a pickle.

Byte mutations of a pickle rarely keep it well formed past a few opcodes, so
this harness reads its input as a list of building steps -- scalars, huge
integers, strings (with lone surrogates), lists, tuples, dicts and sets,
memo references that share one container many times (DAGs whose expansion
doubles at every level), cycles, deep nesting, admitted globals with REDUCE
and BUILD, persistent ids, tensor rebuilds -- and assembles a pickle from
them, wrapped as a torch zip, a legacy torch file or a bare pickle.

Oracle: as for ``checkpoints`` (fuzz/fuzz_checkpoints.py); a hang or a large
allocation is caught by the driver's watchdog and memory cap.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile

from fuzz._common import ACCEPTED, atheris_main, import_targets, write_temp

import_targets()

from fuzz.fuzz_checkpoints import read_case  # noqa: E402

_GLOBALS = (b"ccollections\nOrderedDict\n", b"ctorch\nSize\n", b"ctorch._utils\n_rebuild_tensor_v2\n",
            b"ctorch\nFloatStorage\n", b"cbuiltins\nset\n", b"c__builtin__\nfrozenset\n", b"c_codecs\nencode\n",
            b"ctorch._utils\n_rebuild_parameter\n", b"cos\nsystem\n")


def _tensor() -> bytes:
    """A valid tensor rebuild over storage "0" (4 floats)."""
    return (b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000"
            b"X\x03\x00\x00\x00cpuK\x04tQK\x00K\x04\x85K\x01\x85\x89ccollections\nOrderedDict\n)RtR")


def build_pickle(prog: bytes) -> bytes:
    out = bytearray(b"\x80\x02")
    memo = 0
    i = 0
    n = len(prog)

    def arg():
        nonlocal i
        v = prog[i] if i < n else 0
        i += 1
        return v

    while i < n and len(out) < 1 << 16:
        op = arg() % 24
        a = arg()
        if op == 0:
            out += b"K" + bytes([a])
        elif op == 1:  # huge integers, binary and text
            k = (a % 4)
            if k == 0:
                out += b"\x8a" + bytes([a]) + bytes([0x7f]) * a
            elif k == 1:
                out += b"\x8b" + struct.pack("<i", a * 40) + b"\x01" * (a * 40)
            elif k == 2:
                out += b"I" + b"9" * (a * 20 + 1) + b"\n"
            else:
                out += b"L" + b"1" * (a * 20 + 1) + b"L\n"
        elif op == 2:
            s = b"w" * (a % 8) + (b"\xed\xa0\x80" if a & 0x80 else b"")  # lone surrogate when the top bit is set
            out += b"X" + struct.pack("<I", len(s)) + s
        elif op == 3:
            out += b"]"
        elif op == 4:
            out += b"("
        elif op == 5:
            out += (b"l", b"t", b"d", b"\x91")[a % 4]  # LIST, TUPLE, DICT, FROZENSET from the mark
        elif op == 6:
            if memo:
                out += b"h" + bytes([a % min(memo, 256)])
        elif op == 7:
            out += b"q" + bytes([memo % 256])
            memo += 1
        elif op == 8:
            out += (b"2", b"\x85", b"\x86", b"\x87")[a % 4]  # DUP, TUPLE1-3
        elif op == 9:
            out += (b"a", b"e", b"s", b"u", b"\x90")[a % 5]  # APPEND(S), SETITEM(S), ADDITEMS
        elif op == 10:
            out += b"}"
        elif op == 11:  # deep nesting
            depth = 1 + a * 8
            out += b"]" * depth + b"a" * (depth - 1)
        elif op == 12:
            out += _GLOBALS[a % len(_GLOBALS)]
        elif op == 13:
            out += b"R"
        elif op == 14:
            out += b"b"
        elif op == 15:  # a DAG: x_{k+1} = [x_k, x_k], `a % 64` levels
            base = memo % 250
            out += b"]q" + bytes([base])
            for k in range(a % 64):
                j = (base + k) % 250
                out += b"(h" + bytes([j]) + b"h" + bytes([j]) + b"lq" + bytes([(j + 1) % 250])
            memo = max(memo, base + 1 + a % 64)
        elif op == 16:
            out += b"Q"
        elif op == 17:
            out += b"0"
        elif op == 18:
            out += b"\x8f"  # EMPTY_SET
        elif op == 19:
            out += _tensor()
        elif op == 20:
            out += b"G" + struct.pack(">d", a / 7)
        elif op == 21:
            out += b"N"
        elif op == 22:
            out += b")"
        elif op == 23:
            out += (b"\x88", b"\x89", b"1")[a % 3]  # True, False, MARK-pop
    out += b"."
    return bytes(out)


def wrap(kind: int, pkl: bytes) -> bytes:
    kind %= 4
    if kind in (0, 1):
        b = io.BytesIO()
        method = zipfile.ZIP_STORED if kind == 0 else zipfile.ZIP_DEFLATED
        with zipfile.ZipFile(b, "w", method) as z:
            z.writestr("archive/data.pkl", pkl)
            z.writestr("archive/byteorder", b"little")
            z.writestr("archive/data/0", bytes(16))
            z.writestr("archive/version", b"3\n")
        return b"\x01" + b.getvalue()
    if kind == 2:
        head = (pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle.dumps(1001, protocol=2)
                + pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2))
        return b"\x02" + head + pkl + pickle.dumps(["0"], protocol=2) + struct.pack("<q", 4) + bytes(16)
    return b"\x02" + pkl  # a bare pickle read as a legacy file


def TestOneInput(data: bytes) -> None:
    data = bytes(data)
    if not data:
        return
    try:
        read_case(wrap(data[0], build_pickle(data[1:])))
    except ACCEPTED:
        pass


if __name__ == "__main__":
    atheris_main(TestOneInput)
