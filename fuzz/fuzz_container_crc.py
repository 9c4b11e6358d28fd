"""Fuzz the container parser past its checksums.

The input is first run through :func:`fuzz.nncfix.fix_crcs`, which recomputes
the file header, record and trailer CRC-32s, so mutations reach the JSON
headers, the index checks and the codec decoders. Same oracles as
:mod:`fuzz.fuzz_container`.

Run under atheris: ``python -m fuzz.fuzz_container_crc build/fuzz/corpus/container``.
"""

from __future__ import annotations

from fuzz._common import atheris_main
from fuzz.fuzz_container import check_container
from fuzz.nncfix import fix_crcs


def TestOneInput(data: bytes) -> None:
    check_container(fix_crcs(bytes(data)))


if __name__ == "__main__":
    atheris_main(TestOneInput)
