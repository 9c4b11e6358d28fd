#!/usr/bin/env python3
"""Write the golden files under tests/golden/: one small .nnc per codec id and format version.

Each case writes ``<case>.nnc`` and ``<case>.npz`` (the arrays the file must decode to).
tests/test_golden.py decodes every .nnc and compares, and re-encodes each tensor with
the pipeline stored in the file to check that the encoder still produces the same bytes.

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
    return out


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
    with nncodec.Writer(buf, metadata={"golden": name}) as w:
        first = None
        for tname, arr in tensors.items():
            if arr is None:
                w.add_alias(tname, first)
                expected[tname] = expected[first]
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
            w.add(tname, arr, pipeline=p)
            expected[tname] = arr
    with open(os.path.join(directory, name + ".nnc"), "wb") as f:
        f.write(buf.getvalue())
    from nncodec.io import Checkpoint, write_checkpoint

    write_checkpoint(os.path.join(directory, name + ".npz"), Checkpoint(tensors=expected), "npz")


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
        write_case(name, tensors, pipes, a.dir)
        print(f"wrote  {path} ({os.path.getsize(path)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
