"""What every harness shares: the outcome check and a reusable temporary file."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import numpy as np

from nncodec import dtypes
from nncodec.errors import NNCodecError

#: exceptions a harness accepts as a clean refusal
ACCEPTED = (NNCodecError,)


class BadOutput(AssertionError):
    """A decoder returned something other than arrays of the declared dtype and shape."""


def check_array(arr, dtype: str | None = None, shape: tuple | None = None, what: str = "tensor") -> None:
    if not isinstance(arr, np.ndarray):
        raise BadOutput(f"{what}: decoded to {type(arr).__name__}, not a numpy array")
    try:
        name = dtypes.from_numpy(arr.dtype)
    except NNCodecError:
        raise BadOutput(f"{what}: decoded to dtype {arr.dtype}, which nncodec does not store") from None
    if dtype is not None and name != dtype:
        raise BadOutput(f"{what}: decoded to {name}, declared {dtype}")
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise BadOutput(f"{what}: decoded to shape {arr.shape}, declared {tuple(shape)}")
    if name == "bool" and arr.size and int(arr.view(np.uint8).max()) > 1:
        raise BadOutput(f"{what}: a bool element holds a byte other than 0 or 1")


_tmpdir = None


def temp_path(suffix: str) -> str:
    """A path in a per-process temporary folder (reused between inputs, removed at exit)."""
    global _tmpdir
    if _tmpdir is None:
        _tmpdir = tempfile.mkdtemp(prefix="nncodec-fuzz-")
        atexit.register(shutil.rmtree, _tmpdir, True)
    return os.path.join(_tmpdir, "input" + suffix)


def write_temp(data: bytes, suffix: str) -> str:
    path = temp_path(suffix)
    try:  # a new inode each time: a map of the previous input that is still alive never sees this one
        os.unlink(path)
    except FileNotFoundError:
        pass
    with open(path, "wb") as f:
        f.write(data)
    return path


#: nncodec modules a harness may reach; imported up front so atheris can instrument them
MODULES = (
    "nncodec.api", "nncodec.pipeline", "nncodec.format.container", "nncodec.format.jsonutil",
    "nncodec.codecs", "nncodec.codecs.raw", "nncodec.codecs.zstd", "nncodec.codecs.planes",
    "nncodec.codecs.huffman", "nncodec.codecs.ans", "nncodec.codecs.zerorun", "nncodec.codecs.scalar",
    "nncodec.io", "nncodec.io.safetensors", "nncodec.io.npz", "nncodec.io.torch", "nncodec.io._pickle",
)


def import_targets() -> None:
    """Import the nncodec modules (under atheris: instrumented, kernels excluded).

    A module that does not exist yet (a codec still being written) is skipped.
    """
    import contextlib
    import importlib

    ctx = contextlib.nullcontext()
    if os.environ.get("NNCODEC_FUZZ_ATHERIS"):
        import atheris

        ctx = atheris.instrument_imports(include=["nncodec"], exclude=["nncodec.kernels"])
    with ctx:
        for m in MODULES:
            try:
                importlib.import_module(m)
            except ImportError:
                pass


def atheris_main(test_one_input) -> None:
    """Run ``test_one_input`` under atheris (libFuzzer flags come from the command line)."""
    import sys

    import atheris

    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
