"""Structure-aware zip fuzzing: the input chooses the members of a torch zip or npz archive.

Members are drawn from a small alphabet -- the pickle (a tensor over storage
"0", or one the ``pickles`` harness builds), a second pickle under the same
name, ``byteorder`` (little, big, repeated), storage records that are exact,
short, long or repeated, ``version``, npy arrays (repeated names) -- each
stored or deflated, so duplicate members, conflicting records and size
mismatches are reached directly.

Oracles: as for ``checkpoints``; in addition an archive with two members of
one name must be refused (the readers could otherwise pick either one, and
torch picks the last).
"""

from __future__ import annotations

import io
import warnings
import zipfile

from fuzz._common import ACCEPTED, BadOutput, atheris_main, import_targets, write_temp

import_targets()

from fuzz.fuzz_checkpoints import read_case  # noqa: E402
from fuzz.fuzz_pickles import _tensor, build_pickle  # noqa: E402


def _npy(n: int) -> bytes:
    hdr = repr({"descr": "<f4", "fortran_order": False, "shape": (n,)}).encode()
    hdr += b" " * ((-(10 + len(hdr) + 1)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(hdr).to_bytes(2, "little") + hdr + bytes(4 * n)


def build_zip(prog: bytes):
    members = []
    i = 0
    while i + 1 < len(prog) and len(members) < 12:
        op, a = prog[i] % 12, prog[i + 1]
        i += 2
        if op == 0:
            members.append(("archive/data.pkl", b"\x80\x02}(X\x01\x00\x00\x00w" + _tensor() + b"u.", a & 1))
        elif op == 1:
            members.append(("archive/data.pkl", build_pickle(prog[i:i + 2 * (a % 16)]), a & 1))
            i += 2 * (a % 16)
        elif op == 2:
            members.append(("archive/byteorder", b"big" if a & 2 else b"little", a & 1))
        elif op == 3:
            members.append(("archive/data/0", bytes((16, 8, 32, 0)[a % 4]) + bytes([a]) * (a % 4 == 2), a & 1))
        elif op == 4:
            members.append(("archive/version", b"3\n", a & 1))
        elif op == 5:
            members.append((f"a{a % 3}.npy", _npy(a % 5), a & 1))
        elif op == 6:
            members.append(("archive/data/1", bytes(a), a & 1))
        elif op == 7:
            members.append(("other/data.pkl", b"\x80\x02}.", a & 1))
        elif op == 8:
            members.append(("archive/.data/serialization_id", b"1234", a & 1))
        elif op == 9:
            members.append(("archive/data/0", bytes(1 << (a % 24)), 1))  # a large, well compressible record
        elif op == 10:
            members.append(("archive/byteorder", bytes([a]), a & 1))
        else:
            members.append(("archive/data.pkl", b"\x80\x02}.", a & 1))
    b = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name": on purpose
        with zipfile.ZipFile(b, "w") as z:
            for name, body, deflate in members:
                z.writestr(zipfile.ZipInfo(name), body, zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED)
    names = [m[0] for m in members]
    return b.getvalue(), len(set(names)) != len(names)


def TestOneInput(data: bytes) -> None:
    data = bytes(data)
    if not data:
        return
    blob, dupes = build_zip(data[1:])
    selector = (b"\x01", b"\x03", b"\x04")[data[0] % 3]  # torch zip, npz, detection
    try:
        read_case(selector + blob)
    except ACCEPTED:
        return
    if dupes:
        raise BadOutput("an archive with two members of one name was accepted")


if __name__ == "__main__":
    atheris_main(TestOneInput)
