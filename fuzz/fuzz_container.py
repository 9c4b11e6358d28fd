"""Fuzz the container parser: stream decoding, salvage mode and the lazy reader.

Oracles: every path returns arrays of the declared dtype and shape or raises
an ``nncodec.NNCodecError``; salvage mode never raises; a file the stream
reader accepts is accepted by the lazy reader with bit-identical tensors.

Run under atheris: ``python -m fuzz.fuzz_container build/fuzz/corpus/container``.
"""

from __future__ import annotations

import numpy as np

from fuzz._common import ACCEPTED, BadOutput, atheris_main, check_array, import_targets, write_temp

import_targets()

import nncodec  # noqa: E402
from nncodec import api  # noqa: E402


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def check_container(data: bytes) -> None:
    streamed = None
    try:
        streamed = {}
        for name, arr in api.iter_decode(data):
            check_array(arr, what=f"stream tensor {name!r}")
            streamed[name] = arr
    except ACCEPTED:
        streamed = None

    salvage = api.iter_decode(data, salvage=True)
    for name, arr in salvage:  # must never raise
        check_array(arr, what=f"salvaged tensor {name!r}")
    if streamed is not None and salvage.error is not None:
        raise BadOutput(f"salvage mode failed on a stream the strict reader accepts: {salvage.error}")

    path = write_temp(data, ".nnc")
    try:
        reader = nncodec.open(path)
    except ACCEPTED:
        if streamed is not None:
            raise BadOutput("the stream reader accepts a file the lazy reader refuses") from None
        return
    with reader:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in reader.metadata.items()):
            raise BadOutput("metadata is not str -> str")
        names = reader.keys()
        if streamed is not None and sorted(names) != sorted(streamed):  # keys(): tensors, then aliases
            raise BadOutput(f"lazy reader lists {names[:5]}..., the stream yielded {list(streamed)[:5]}...")
        for name in names:
            try:
                info = reader.info(name)
                arr = reader[name]
            except ACCEPTED:
                if streamed is not None:
                    raise BadOutput(f"tensor {name!r} decodes from the stream but not from the lazy reader") from None
                continue
            check_array(arr, info.dtype, info.shape, what=f"tensor {name!r}")
            if streamed is not None and not _same(arr, streamed[name]):
                raise BadOutput(f"tensor {name!r} decodes differently from the stream and from the lazy reader")


def TestOneInput(data: bytes) -> None:
    check_container(bytes(data))


if __name__ == "__main__":
    atheris_main(TestOneInput)
