"""The codec registry: codec id -> class, imported on first use.

Built-in codecs are listed by module, one module per codec id (``3lc`` lives
in ``threelc.py``), so that importing nncodec does not import their kernels.
Shared pieces that are not codecs are in :mod:`nncodec.entropy` (coders,
models, varints) and :mod:`nncodec.codecs.floatcodec` (float stages' rules). Third-party codecs register through the ``nncodec.codecs``
entry-point group or :func:`register_codec`.
"""

from __future__ import annotations

import importlib

from ..errors import CorruptError, UnsupportedError
from .base import (  # noqa: F401
    ARRAY_TO_ARRAY,
    ARRAY_TO_BYTES,
    BYTES_TO_BYTES,
    ArraySpec,
    ArrayToArrayCodec,
    ArrayToBytesCodec,
    BytesToBytesCodec,
    Codec,
    Context,
)

_BUILTIN = {
    "raw": "nncodec.codecs.raw:Raw",
    "planes": "nncodec.codecs.planes:Planes",
    "zstd": "nncodec.codecs.zstd:Zstd",
    "ans": "nncodec.codecs.ans:Ans",
    "zerorun": "nncodec.codecs.zerorun:ZeroRun",
    "huffman": "nncodec.codecs.huffman:HuffmanLevels",
    "tcq": "nncodec.codecs.tcq:Tcq",
    "cabac": "nncodec.codecs.cabac:Cabac",
    "3lc": "nncodec.codecs.threelc:ThreeLC",
    "scalar": "nncodec.codecs.scalar:Scalar",
    "lattice": "nncodec.codecs.lattice:Lattice",
    "kmeans": "nncodec.codecs.kmeans:KMeans",
    "prune": "nncodec.codecs.prune:Prune",
    "dct": "nncodec.codecs.dct:DCT",
    "lowrank": "nncodec.codecs.lowrank:LowRank",
    "bloomier": "nncodec.codecs.bloomier:Bloomier",
}
_registry: dict[str, type] = {}
_entry_points_loaded = False


def register_codec(cls: type) -> type:
    """Register a codec class (usable as a decorator). Its id must be new."""
    cid = cls.codec_id
    if cid in _registry and _registry[cid] is not cls:
        raise ValueError(f"codec id {cid!r} is already registered by {_registry[cid]!r}")
    _registry[cid] = cls
    return cls


def _load_entry_points():
    global _entry_points_loaded
    _entry_points_loaded = True
    try:
        from importlib.metadata import entry_points

        for ep in entry_points(group="nncodec.codecs"):
            if ep.name not in _registry and ep.name not in _BUILTIN:
                register_codec(ep.load())
    except Exception:  # a broken third-party plugin must not break reading
        pass


def codec_class(codec_id: str) -> type:
    cls = _registry.get(codec_id)
    if cls is not None:
        return cls
    target = _BUILTIN.get(codec_id)
    if target is not None:
        mod, _, attr = target.partition(":")
        cls = getattr(importlib.import_module(mod), attr)
        _registry[codec_id] = cls
        return cls
    if not _entry_points_loaded:
        _load_entry_points()
        if codec_id in _registry:
            return _registry[codec_id]
    raise UnsupportedError(
        f"unknown codec {codec_id!r}: written by a newer nncodec or a plugin that is not installed"
    )


def get_codec(obj: dict) -> Codec:
    """Build a codec from its stored ``{"name": ..., "configuration": {...}}`` object."""
    if not isinstance(obj, dict) or set(obj) - {"name", "configuration"} or "name" not in obj:
        raise CorruptError(f"pipeline stage must be an object with 'name' and 'configuration', found {obj!r:.200}")
    name = obj["name"]
    if not isinstance(name, str):
        raise CorruptError(f"pipeline stage name must be a string, found {name!r:.100}")
    config = obj.get("configuration", {})
    if not isinstance(config, dict):
        raise CorruptError(f"codec {name!r}: configuration must be an object, found {config!r:.100}")
    return codec_class(name).from_config(config)


def builtin_codec_ids() -> list[str]:
    return sorted(_BUILTIN)
