"""nncodec: small files for neural-network weights.

The public surface is small::

    nncodec.encode_file("model.safetensors", "model.nnc")
    nncodec.decode_file("model.nnc", "model.safetensors")
    with nncodec.open("model.nnc") as f:
        w = f["fc.weight"]

Like safetensors: ``nncodec.safe_open(path, framework="pt"|"np")`` (``keys()``,
``get_tensor``, ``get_slice(name)[a:b]`` decoding only the chunks a slice needs,
``metadata()``), and the modules ``nncodec.torch`` and ``nncodec.numpy`` with
``load_file``, ``save_file``, ``load`` and ``save`` (import them by name:
``import nncodec.torch``; only ``nncodec.torch`` imports torch).

Importing nncodec is cheap: no kernel is compiled until a codec first runs.
"""

from __future__ import annotations

from .errors import (  # noqa: F401
    BaseMismatchError,
    CorruptError,
    FormatError,
    LimitError,
    NNCodecError,
    TruncatedError,
    UnsafePickleError,
    UnsupportedError,
    UsageError,
)
from .format.constants import DEFAULT_LIMITS, Limits  # noqa: F401

__version__ = "0.1.0"

_LAZY = {
    "encode_file": "nncodec.files",
    "decode_file": "nncodec.files",
    "open": "nncodec.api",
    "Reader": "nncodec.api",
    "Writer": "nncodec.api",
    "StreamReader": "nncodec.api",
    "iter_decode": "nncodec.api",
    "encode_tensors": "nncodec.api",
    "decode_bytes": "nncodec.api",
    "TensorInfo": "nncodec.api",
    "safe_open": "nncodec.safeopen",
    "Pipeline": "nncodec.pipeline",
    "get_codec": "nncodec.codecs",
    "register_codec": "nncodec.codecs",
}

__all__ = sorted(set(_LAZY) | {
    "NNCodecError", "FormatError", "CorruptError", "TruncatedError", "LimitError",
    "UnsupportedError", "UnsafePickleError", "UsageError", "BaseMismatchError", "Limits",
    "DEFAULT_LIMITS", "__version__",
})


def __getattr__(name):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'nncodec' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
