"""Fuzz the checkpoint readers: safetensors, torch zip, torch legacy (pickle) and npz.

The first input byte picks the reader (or format detection), the rest is
written to a temporary file and read with ``nncodec.io.read_checkpoint``.

Oracle: a :class:`~nncodec.io.Checkpoint` whose tensors are numpy arrays of
dtypes nncodec stores, whose aliases name tensors and whose metadata is
str -> str; or an ``nncodec.NNCodecError``.

Run under atheris: ``python -m fuzz.fuzz_checkpoints build/fuzz/corpus/checkpoints``.
"""

from __future__ import annotations

from fuzz._common import ACCEPTED, BadOutput, atheris_main, check_array, import_targets, write_temp

import_targets()

from nncodec.io import Checkpoint, read_checkpoint  # noqa: E402

#: selector byte -> (format passed to read_checkpoint, file suffix); None detects the format
READERS = (
    ("safetensors", ".safetensors"),
    ("torch", ".pt"),
    ("torch-legacy", ".pt"),
    ("npz", ".npz"),
    (None, ".bin"),
)


def read_case(data: bytes) -> Checkpoint | None:
    if not data:
        return None
    fmt, suffix = READERS[data[0] % len(READERS)]
    path = write_temp(data[1:], suffix)
    ck = read_checkpoint(path, format=fmt)
    if not isinstance(ck, Checkpoint):
        raise BadOutput(f"read_checkpoint returned {type(ck).__name__}")
    for name, arr in ck.tensors.items():
        if not isinstance(name, str):
            raise BadOutput(f"tensor name {name!r} is not a str")
        check_array(arr, what=f"{fmt} tensor {name!r}")
    for a, t in ck.aliases.items():
        if t not in ck.tensors:
            raise BadOutput(f"alias {a!r} names {t!r}, which is not a tensor")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in ck.metadata.items()):
        raise BadOutput("metadata is not str -> str")
    return ck


def TestOneInput(data: bytes) -> None:
    try:
        read_case(bytes(data))
    except ACCEPTED:
        pass


if __name__ == "__main__":
    atheris_main(TestOneInput)
