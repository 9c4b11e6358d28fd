"""Fuzz every codec stage's decoder with a fuzzed payload and a small declared spec.

The first input byte picks a case (a pipeline and a dtype), the second a
shape; the rest is the payload handed to ``Pipeline.decode``. Cases are built
from the codecs that exist: a codec module that is missing or fails to import
is left out, so the harness keeps working while codecs are added.

Oracle: the result is an array of exactly the declared dtype and shape, or an
``nncodec.NNCodecError`` is raised.

Run under atheris: ``python -m fuzz.fuzz_codecs build/fuzz/corpus/codecs``.
"""

from __future__ import annotations

import importlib

from fuzz._common import ACCEPTED, atheris_main, check_array, import_targets

import_targets()

from nncodec.codecs import ArraySpec, Context  # noqa: E402
from nncodec.pipeline import Pipeline  # noqa: E402

SHAPES = ((), (0,), (1,), (2,), (7,), (3, 5), (64,), (257,), (2, 3, 4), (1000,), (4, 0, 3), (4096,))

FLOATS = ("float32", "float16", "bfloat16", "float64", "float8_e4m3fn", "float8_e5m2")
INTS = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
ALL = FLOATS + INTS + ("bool",)


def _codec(module: str, cls: str, config: dict):
    """A stage built from its stored configuration, as a file would build it; None if unavailable."""
    try:
        return getattr(importlib.import_module(f"nncodec.codecs.{module}"), cls).from_config(config)
    except (ImportError, AttributeError):
        return None


def _cases() -> list:
    """(label, Pipeline, dtype) for every available stage combination."""
    out = []

    def add(label, stages, dts):
        if any(s is None for s in stages):
            return
        for dt in dts:
            out.append((f"{label}:{dt}", Pipeline(stages), dt))

    raw = _codec("raw", "Raw", {})
    zstd = _codec("zstd", "Zstd", {"level": 3})
    add("raw", [raw], ALL)
    add("raw|zstd", [raw, zstd], ("float32", "uint8"))
    for tr in ("none", "rotl1", "zigzag"):
        planes = _codec("planes", "Planes", {"transform": tr, "level": 3})
        add(f"planes[{tr}]", [planes], ALL)
    add("planes|zstd", [_codec("planes", "Planes", {"transform": "rotl1", "level": 1}), zstd], ("float32", "bfloat16"))
    for cls, cid in (("Ans", "ans"), ("ZeroRun", "zerorun")):
        for prec, states in ((14, 8), (10, 1), (16, 32)):
            add(f"{cid}[{prec},{states}]", [_codec("ans", cls, {"precision": prec, "states": states})], INTS)
    add("huffman", [_codec("huffman", "HuffmanLevels", {})], INTS)
    for states in (1, 4, 8):
        add(f"cabac[{states}]", [_codec("cabac", "Cabac", {"states": states, "gt": 16, "rate_fast": 5, "rate_slow": 8})], ("int32", "int8", "int64"))
    add("tcq|cabac", [_codec("tcq", "Tcq", {"step": 0.01, "states": 8, "lambda": 0.3}),
                      _codec("cabac", "Cabac", {"states": 8, "gt": 16, "rate_fast": 5, "rate_slow": 8})],
        ("float32", "bfloat16", "float16", "float64"))
    ans = _codec("ans", "Ans", {"precision": 14, "states": 8})
    zr = _codec("zerorun", "ZeroRun", {"precision": 12, "states": 4})
    float_dts = ("float32", "float16", "bfloat16", "float64")
    for levels_label, ser in (("raw", raw), ("ans", ans), ("zerorun", zr), ("huffman", _codec("huffman", "HuffmanLevels", {})), ("planes", _codec("planes", "Planes", {"transform": "zigzag", "level": 3}))):
        add(f"scalar|{levels_label}", [_codec("scalar", "Scalar", {"step": 0.01}), ser], float_dts)
        add(f"scalar~dither|{levels_label}", [_codec("scalar", "Scalar", {"step": 1e30, "dither": True, "seed": 7, "stream": 3}), ser], float_dts)
        add(f"lattice[D4]|{levels_label}", [_codec("lattice", "Lattice", {"lattice": "D4", "step": 0.5}), ser], float_dts)
        add(f"lattice[E8]|{levels_label}", [_codec("lattice", "Lattice", {"lattice": "E8", "step": 0.25, "dither": True, "seed": 1, "stream": 2}), ser], float_dts)
        add(f"kmeans|{levels_label}", [_codec("kmeans", "KMeans", {"centroids": [-1.5, -0.25, 0.0, 0.5, 3.0]}), ser], float_dts)
    for r, t, z in ((4, 8, None), (2, 6, 3), (1, 2, None)):
        add(f"bloomier[{r},{t},{z}]", [_codec("bloomier", "Bloomier", {"r": r, "t": t, "zstd": z})], float_dts)
    add("prune|bloomier", [_codec("prune", "Prune", {"threshold": 0.5}), _codec("bloomier", "Bloomier", {"r": 3, "t": 8, "zstd": None})], float_dts)
    for block, scan in (([4, 4], "zigzag"), (None, "natural")):
        add(f"dct|scalar|ans", [_codec("dct", "DCT", {"block": block, "scan": scan}), _codec("scalar", "Scalar", {"step": 0.01}), ans], float_dts)
    add("lowrank|raw", [_codec("lowrank", "LowRank", {"rank": 2, "rows": 1}), raw], float_dts)
    add("prune|raw", [_codec("prune", "Prune", {"threshold": 0.5}), raw], float_dts)
    add("prune|planes", [_codec("prune", "Prune", {"threshold": 0.5}), _codec("planes", "Planes", {"transform": "rotl1", "level": 3})], float_dts)
    return out


CASES = _cases()


def decode_case(data: bytes):
    """(case label, spec, result or the accepted exception) for one input."""
    if len(data) < 2:
        return None
    # byte 0 and the high nibble of byte 1: the case; the low nibble of byte 1: the shape
    label, pipe, dt = CASES[(data[0] | (data[1] >> 4) << 8) % len(CASES)]
    spec = ArraySpec(dt, SHAPES[(data[1] & 15) % len(SHAPES)])
    payload = memoryview(data[2:])
    arr = pipe.decode(payload, spec, Context(name=label))
    check_array(arr, spec.dtype, spec.shape, what=f"case {label} {spec}")
    return arr


def TestOneInput(data: bytes) -> None:
    try:
        decode_case(bytes(data))
    except ACCEPTED:
        pass


if __name__ == "__main__":
    atheris_main(TestOneInput)
