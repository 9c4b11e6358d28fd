#!/usr/bin/env python3
"""Write the golden files under tests/golden/: one small .nnc per codec id and format version.

Each case writes ``<case>.nnc``, ``<case>.npz`` (the arrays the file must decode to)
and ``<case>.input.npz`` (the arrays it was encoded from). tests/test_golden.py decodes
every .nnc and compares, and re-encodes each input with the pipeline stored in the file
to check that the encoder still produces the same bytes.

Golden files are written only by this tool, on purpose, never by a test. An existing
file is left alone unless ``--force`` is given: a change to the bytes of a codec needs
a new codec id (and a new case here), not a rewritten golden file.

    python tools/make_golden.py            # write the missing cases
    python tools/make_golden.py --list     # list the cases
"""

from __future__ import annotations

import argparse
import io
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "..", "tests", "golden")
sys.path.insert(0, os.path.join(HERE, ".."))


def _weights(shape, seed, dtype="float32", scale=0.05):
    from nncodec import dtypes

    rng = np.random.default_rng(seed)
    x = rng.standard_normal(int(np.prod(shape))) * scale
    x[: min(3, x.size)] *= 40  # a few outliers
    return x.astype(dtypes.to_numpy(dtype)).reshape(shape)


def cases():
    """name -> (tensors dict, {tensor name: Pipeline or None for the default lossless choice})."""
    from nncodec.codecs import codec_class
    from nncodec.pipeline import Pipeline

    raw = codec_class("raw")()
    zstd = codec_class("zstd")
    planes = codec_class("planes")
    out = {}
    out["container_v1"] = (
        {"w": _weights((4, 3), 1), "scalar": np.array(3.25, np.float64), "empty": np.zeros((0, 2), np.int8),
         "tied": None, "名前": np.array([True, False, True])},
        {"w": Pipeline([raw]), "scalar": Pipeline([raw]), "empty": Pipeline([raw]), "名前": Pipeline([raw])},
    )
    out["raw_v1"] = ({f"{d}": _int_or_float(d, (5, 3), i) for i, d in enumerate(
        ["float32", "float16", "bfloat16", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"])}, "raw")
    out["zstd_v1"] = ({"w": _weights((64, 16), 2), "i": np.arange(300, dtype=np.int64)},
                      Pipeline([raw, zstd(level=3)]))
    out["planes_v1"] = ({"f32": _weights((96, 40), 3), "bf16": _weights((96, 40), 4, "bfloat16"),
                         "f16": _weights((50, 30), 5, "float16"), "f64": _weights((20, 20), 6, "float64"),
                         "i64": np.arange(-200, 400, 3, dtype=np.int64), "u8": np.arange(256, dtype=np.uint8).repeat(3),
                         "bool": np.arange(300) % 7 == 0},
                        "planes")
    c = codec_class
    w = _weights((64, 48), 7)
    out["scalar_v1"] = ({"plain": w, "dither": w, "bf16": _weights((32, 40), 8, "bfloat16"),
                         "f16": _weights((32, 40), 9, "float16"), "f64": _weights((16, 16), 10, "float64")},
                        {"plain": Pipeline([c("scalar")(0.01), c("raw")()]),
                         "dither": Pipeline([c("scalar")(0.01, dither=True, seed=7, stream=11), c("ans")()]),
                         "bf16": Pipeline([c("scalar")(0.02), c("ans")()]),
                         "f16": Pipeline([c("scalar")(0.005), c("ans")()]),
                         "f64": Pipeline([c("scalar")(0.001), c("ans")()])})
    out["lattice_v1"] = ({"d4": w, "e8": w, "e8_dither": _weights((10, 13), 11)},
                         {"d4": Pipeline([c("lattice")("D4", 0.02), c("ans")()]),
                          "e8": Pipeline([c("lattice")("E8", 0.02), c("ans")()]),
                          "e8_dither": Pipeline([c("lattice")("E8", 0.02, dither=True, seed=3, stream=5), c("raw")()])})
    out["kmeans_v1"] = ({"w": w, "bf16": _weights((20, 30), 12, "bfloat16")},
                        {"w": Pipeline([c("kmeans")(16), c("ans")()]), "bf16": Pipeline([c("kmeans")(4), c("raw")()])})
    out["prune_v1"] = ({"w": w, "thr": _weights((30, 30), 13)},
                       {"w": Pipeline([c("prune")(sparsity=0.8), c("scalar")(0.01), c("zerorun")()]),
                        "thr": Pipeline([c("prune")(0.05), c("planes").for_dtype("float32")])})
    rng = np.random.default_rng(14)
    lev = rng.laplace(0, 3, (50, 40)).round().astype(np.int32)
    sparse = np.where(rng.random((60, 50)) < 0.9, 0, rng.integers(-9, 9, (60, 50))).astype(np.int16)
    out["ans_v1"] = ({"levels": lev, "const": np.full((7, 3), -4, np.int64), "u8": rng.integers(0, 256, 500).astype(np.uint8),
                      "empty": np.zeros((0,), np.int32), "zero_d": np.array(5, np.int8)},
                     {"levels": Pipeline([c("ans")()]), "const": Pipeline([c("ans")()]),
                      "u8": Pipeline([c("ans")(precision=12, states=4)]), "empty": Pipeline([c("ans")()]),
                      "zero_d": Pipeline([c("ans")()])})
    out["zerorun_v1"] = ({"sparse": sparse, "allzero": np.zeros((40,), np.int32)},
                         {"sparse": Pipeline([c("zerorun")()]), "allzero": Pipeline([c("zerorun")()])})
    out["huffman_v1"] = ({"levels": lev, "escapes": (lev * 97).astype(np.int32), "u16": rng.integers(0, 600, 300).astype(np.uint16),
                          "scalar": w},
                         {"levels": Pipeline([c("huffman")()]), "escapes": Pipeline([c("huffman")()]),
                          "u16": Pipeline([c("huffman")()]), "scalar": Pipeline([c("scalar")(0.01), c("huffman")()])})
    out["tcq_cabac_v1"] = ({"w8": w, "w4": _weights((40, 30), 20), "bf16": _weights((16, 24), 21, "bfloat16"),
                            "levels": lev, "conv": _weights((8, 4, 3, 3), 22)},
                           {"w8": Pipeline([c("tcq")(0.005, states=8), c("cabac")(8)]),
                            "w4": Pipeline([c("tcq")(0.01, states=4), c("cabac")(4)]),
                            "bf16": Pipeline([c("tcq")(0.02), c("raw")()]),
                            "levels": Pipeline([c("cabac")(1)]),
                            "conv": Pipeline([c("scalar")(0.01), c("cabac")(1, gt=4)])})
    out["3lc_v1"] = ({"delta": _weights((30, 17), 23), "sparse": _weights((100,), 24)},
                     {"delta": Pipeline([c("3lc")()]), "sparse": Pipeline([c("3lc")(sparsity=1.8)])})
    conv = _weights((8, 4, 3, 3), 15)
    out["dct_v1"] = ({"mat": _weights((20, 30), 16), "conv": conv},
                     {"mat": Pipeline([c("dct")((8, 8), "zigzag"), c("scalar")(0.01), c("ans")()]),
                      "conv": Pipeline([c("dct")(None), c("scalar")(0.01), c("ans")()])})
    out["lowrank_v1"] = ({"mat": _weights((40, 24), 17), "conv": conv},
                         {"mat": Pipeline([c("lowrank")(4), c("scalar")(0.005), c("ans")()]),
                          "conv": Pipeline([c("lowrank")(3), c("raw")()])})
    out["bloomier_v1"] = ({"w": _weights((50, 40), 18), "z": _weights((30, 30), 19)},
                          {"w": Pipeline([c("prune")(sparsity=0.9), c("bloomier")(4, 8)]),
                           "z": Pipeline([c("prune")(sparsity=0.7), c("bloomier")(2, 6, 3)])})
    # format 1.1: chunked records (spec/FORMAT.md 4.2.1), with small pieces so the files stay small;
    # a (pipeline, rows) entry is coded in pieces of that many rows of the serializer's input
    planes32 = c("planes").for_dtype("float32")
    out["chunks_v1_1"] = ({"f32": _weights((40, 30), 25), "bf16": _weights((33, 8), 26, "bfloat16"),
                           "i16": sparse, "lossy": _weights((25, 12), 27), "trellis": _weights((18, 10), 28),
                           "zstd": _weights((17, 5), 29), "tied": None},
                          {"f32": (Pipeline([planes32]), 7), "bf16": (Pipeline([c("planes").for_dtype("bfloat16")]), 10),
                           "i16": (Pipeline([c("zerorun")()]), 16),
                           "lossy": (Pipeline([c("scalar")(0.01), c("ans")()]), 4),
                           "trellis": (Pipeline([c("tcq")(0.01, states=8), c("cabac")(8)]), 5),
                           "zstd": (Pipeline([c("raw")(), c("zstd")(level=3)]), 6)})
    # format 1.2: the dtypes it added (spec/FORMAT.md 4.3), coded losslessly
    out["dtypes_v1_2"] = _dtypes_1_2(c, Pipeline)
    # format 1.2: the packed FP6 dtypes (safetensors F6_E2M3, F6_E3M2), their bytes coded losslessly
    out["dtypes_f6_v1_2"] = _dtypes_f6(c, Pipeline)
    return out


#: cases written as this format minor version (a file's header records the version that defines it)
FORMAT_MINOR = {"dtypes_v1_2": 2, "dtypes_f6_v1_2": 2}


def _dtypes_1_2(c, Pipeline):
    from nncodec import dtypes

    rng = np.random.default_rng(30)
    scales = np.clip(np.rint(rng.normal(122, 3, (24, 16))), 0, 254).astype(np.uint8)
    scales[0, :3] = [0, 254, 255]  # the smallest and largest scale, NaN
    e8m0 = scales.view(dtypes.to_numpy("float8_e8m0fnu"))
    fnuz = _weights((40, 24), 31, "float8_e4m3fnuz")
    fnuz.reshape(-1).view(np.uint8)[:2] = [0x80, 0x00]  # the NaN, zero
    e5 = _weights((30, 20), 32, "float8_e5m2fnuz")
    nib = np.clip(np.rint(np.abs(rng.normal(0, 2.5, (36, 2 * 20)))), 0, 7).astype(np.uint8)
    nib |= (rng.random(nib.shape) < 0.5).astype(np.uint8) << 3  # sign
    f4 = (nib[:, 0::2] | nib[:, 1::2] << 4).view(dtypes.to_numpy("float4_e2m1fn_x2"))
    cx = (rng.standard_normal((20, 12, 2)) * 0.05).astype(np.float32).view(np.complex64)[..., 0]
    cx.reshape(-1).view(np.uint32)[:4] = [0x7FC00001, 0x80000000, 0x7F800000, 0xFF800000]  # NaN payload, -0, +-inf
    planes = lambda d: Pipeline([c("planes").for_dtype(d)])  # noqa: E731
    return ({"e8m0": e8m0, "e8m0_zstd": e8m0[:5], "e4m3fnuz": fnuz, "e5m2fnuz": e5, "f4": f4,
             "f4_huffman": f4[:10], "c64": cx, "c64_raw": cx[:3, :5].copy(), "f4_scalar": f4[:1, :1].reshape(()),
             "e8m0_empty": e8m0[:0]},
            {"e8m0": planes("float8_e8m0fnu"), "e8m0_zstd": Pipeline([c("raw")(), c("zstd")(level=3)]),
             "e4m3fnuz": planes("float8_e4m3fnuz"), "e5m2fnuz": planes("float8_e5m2fnuz"),
             "f4": planes("float4_e2m1fn_x2"), "f4_huffman": Pipeline([c("huffman")()]),
             "c64": planes("complex64"), "c64_raw": Pipeline([c("raw")()]), "f4_scalar": Pipeline([c("raw")()]),
             "e8m0_empty": Pipeline([c("raw")()])})


def _f6_bytes(rng, rows, values, exp_bits):
    """Packed FP6 bytes of small-magnitude codes: 4 values in 3 bytes, value i in bits 6i..6i+5
    of the row's little-endian bit stream (nncodec keeps the bytes, whatever the order)."""
    from nncodec import dtypes

    code = np.clip(np.rint(np.abs(rng.normal(0, 3, (rows, values)))), 0, 15)  # sign bit 5 set below
    code = code.astype(np.uint32) | (rng.random(code.shape) < 0.5).astype(np.uint32) << 5
    g = code.reshape(rows, values // 4, 4)
    word = g[..., 0] | g[..., 1] << 6 | g[..., 2] << 12 | g[..., 3] << 18
    out = np.stack([word & 0xFF, word >> 8 & 0xFF, word >> 16], axis=-1).astype(np.uint8)
    return out.reshape(rows, values // 4 * 3).view(dtypes.to_numpy("float6_e2m3fn_x4" if exp_bits == 2
                                                                  else "float6_e3m2fn_x4"))


def _dtypes_f6(c, Pipeline):
    rng = np.random.default_rng(40)
    e2m3 = _f6_bytes(rng, 24, 64, 2)
    e3m2 = _f6_bytes(rng, 30, 32, 3)
    return ({"e2m3": e2m3, "e3m2": e3m2, "e2m3_raw": e2m3[:2].copy(), "e3m2_zstd": e3m2[:6],
             "e2m3_huffman": e2m3[:8], "e3m2_empty": e3m2[:0]},
            {"e2m3": Pipeline([c("planes").for_dtype("float6_e2m3fn_x4")]),
             "e3m2": Pipeline([c("planes").for_dtype("float6_e3m2fn_x4")]),
             "e2m3_raw": Pipeline([c("raw")()]), "e3m2_zstd": Pipeline([c("raw")(), c("zstd")(level=3)]),
             "e2m3_huffman": Pipeline([c("huffman")()]), "e3m2_empty": Pipeline([c("raw")()])})


def _int_or_float(d, shape, seed):
    from nncodec import dtypes

    if dtypes.kind(d) == "f":
        return _weights(shape, seed, d)
    if d == "bool":
        return np.arange(np.prod(shape)).reshape(shape) % 3 == 0
    return (np.arange(np.prod(shape)).reshape(shape) * 37 - 100).astype(d)


def write_case(name, tensors, pipes, directory):
    import nncodec
    from nncodec.codecs import codec_class
    from nncodec.pipeline import Pipeline

    buf = io.BytesIO()
    expected = {}
    aliases = set()
    with nncodec.Writer(buf, metadata={"golden": name}) as w:
        if any(a is None for a in tensors.values()):  # aliases point at the first tensor
            w.expect_aliases([next(n for n, a in tensors.items() if a is not None)])
        first = None
        for tname, arr in tensors.items():
            if arr is None:
                w.add_alias(tname, first)
                expected[tname] = expected[first]
                aliases.add(tname)
                continue
            first = first or tname
            if isinstance(pipes, dict):
                p = pipes.get(tname)
            elif pipes == "raw":
                p = Pipeline([codec_class("raw")()])
            elif pipes == "planes":
                from nncodec import dtypes

                p = Pipeline([codec_class("planes").for_dtype(dtypes.from_numpy(arr.dtype))])
            else:
                p = pipes
            if isinstance(p, tuple):
                from nncodec import dtypes
                from nncodec.codecs import Context

                p, rows = p
                stored, dt = dtypes.as_stored(arr)
                w.add_encoded(tname, dt, stored.shape, p, p.encode_pieces(stored, Context(name=tname), rows))
            else:
                w.add(tname, arr, pipeline=p)
            expected[tname] = arr
    with open(os.path.join(directory, name + ".nnc"), "wb") as f:
        f.write(buf.getvalue())
    from nncodec.io import Checkpoint, write_checkpoint

    inputs = {n: a for n, a in expected.items() if n not in aliases}
    write_checkpoint(os.path.join(directory, name + ".input.npz"), Checkpoint(tensors=inputs), "npz")
    # pin what the file decodes to today (for lossy stages that is not the input)
    decoded = nncodec.decode_bytes(buf.getvalue())
    for tname, arr in expected.items():
        lossless = {s.codec_id for s in _pipeline_of(buf.getvalue(), tname)} <= LOSSLESS
        if lossless:
            assert decoded[tname].tobytes() == np.ascontiguousarray(arr).tobytes(), tname
        expected[tname] = decoded[tname]

    write_checkpoint(os.path.join(directory, name + ".npz"), Checkpoint(tensors=expected), "npz")


#: codecs that reproduce their input exactly
LOSSLESS = {"raw", "planes", "zstd", "ans", "zerorun", "huffman", "cabac"}


def _pipeline_of(data: bytes, name: str):
    import tempfile

    import nncodec

    with tempfile.NamedTemporaryFile(suffix=".nnc") as f:
        f.write(data)
        f.flush()
        with nncodec.open(f.name) as r:
            return r.info(name).pipeline.stages


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="overwrite existing golden files (changes pinned bytes!)")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--dir", default=GOLDEN)
    ap.add_argument("cases", nargs="*", help="only these cases")
    a = ap.parse_args(argv)
    all_cases = cases()
    if a.list:
        print("\n".join(all_cases))
        return 0
    os.makedirs(a.dir, exist_ok=True)
    for name, (tensors, pipes) in all_cases.items():
        if a.cases and name not in a.cases:
            continue
        path = os.path.join(a.dir, name + ".nnc")
        if os.path.exists(path) and not a.force:
            print(f"keep   {path}")
            continue
        from nncodec.format import container

        default_minor = container.FORMAT_MINOR
        container.FORMAT_MINOR = max(default_minor, FORMAT_MINOR.get(name, 0))
        try:
            write_case(name, tensors, pipes, a.dir)
        finally:
            container.FORMAT_MINOR = default_minor
        print(f"wrote  {path} ({os.path.getsize(path)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
