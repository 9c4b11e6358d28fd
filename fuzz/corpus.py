"""Seed corpora built from real files, one list of inputs per harness.

``python -m fuzz.corpus OUTDIR`` writes them as ``OUTDIR/<harness>/seed-NNNN``
files (the layout atheris/libFuzzer reads); the driver calls :func:`seeds`.

* container: nncodec files of every dtype and of each pipeline that exists
  (raw, planes, zstd, ans, zerorun, quantizers), with metadata, aliases,
  0-d and empty tensors, and the MTCNN fixture encoded;
* codecs: the payload each case's pipeline encodes for a sample array,
  behind the case and shape selector bytes;
* checkpoints: safetensors, torch zip and npz files written by nncodec's
  writers, a compressed npz, torch.save files when torch is installed and the
  committed legacy torch fixture ``tests/fixtures/mtcnn_pnet.pt``.
"""

from __future__ import annotations

import io
import os
import sys
import zipfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "mtcnn_pnet.pt")


def sample(dtype: str, shape, seed: int = 0) -> np.ndarray:
    from nncodec import dtypes

    rng = np.random.default_rng(seed)
    n = int(np.prod(shape)) if shape else 1
    k = dtypes.kind(dtype)
    if k == "f":
        x = rng.standard_normal(n) * 0.05
        if n > 8:
            x[:3] = [np.nan, -0.0, 3.0]
        if n > 16:
            x[n // 2: n // 2 + n // 4] = 0.0
        return x.astype(dtypes.to_numpy(dtype)).reshape(shape)
    if k == "b":
        return (rng.random(n) < 0.3).reshape(shape)
    x = rng.integers(0, 9, n) * (rng.random(n) < 0.4)
    return x.astype(np.dtype(dtype)).reshape(shape)


def _container_seeds() -> list:
    import nncodec
    from fuzz.fuzz_codecs import CASES

    out = []
    for dt in ("float32", "bfloat16", "float16", "float64", "float8_e4m3fn", "int8", "int64", "uint16", "bool"):
        out.append(nncodec.encode_tensors({"w": sample(dt, (40,)), "b": sample(dt, (3,), 1)}))
    out.append(nncodec.encode_tensors({}))
    out.append(nncodec.encode_tensors({"scalar": np.float32(1.5), "empty": np.zeros((0, 3), np.float32)},
                                      metadata={"k": "v", "nncodec.source_format": "npz"}))
    a = sample("float32", (8, 8))
    out.append(nncodec.encode_tensors({"emb": a, "head": a, "x": sample("int32", (5,))}))
    # one tensor per available pipeline
    buf = io.BytesIO()
    seen = set()
    with nncodec.Writer(buf, metadata={"m": "1"}) as w:
        for label, pipe, dt in CASES:
            stem = label.split(":")[0]
            if stem in seen:
                continue
            try:
                w.add(f"t{len(seen)}", sample(dt, (33,), len(seen)), pipeline=pipe)
            except nncodec.NNCodecError:
                continue
            seen.add(stem)
    out.append(buf.getvalue())
    if os.path.exists(FIXTURE):
        from nncodec.io import read_checkpoint

        ck = read_checkpoint(FIXTURE)
        out.append(nncodec.encode_tensors(dict(list(ck.tensors.items())[:4])))
    return out


def _codec_seeds() -> list:
    import nncodec
    from fuzz.fuzz_codecs import CASES, SHAPES
    from nncodec.codecs import Context

    out = []
    shape_ix = [SHAPES.index(s) for s in ((7,), (3, 5), (257,), ())]
    for ci, (label, pipe, dt) in enumerate(CASES):
        for k, si in enumerate(shape_ix):
            if (ci + k) % 2:  # half of the combinations keep the corpus small
                continue
            arr = sample(dt, SHAPES[si], ci)
            try:
                payload = pipe.encode(arr, Context(name=label))
            except nncodec.NNCodecError:
                continue
            out.append(bytes([ci & 255, (ci >> 8) << 4 | si]) + bytes(payload))
    return out


def _checkpoint_seeds() -> list:
    from fuzz.fuzz_checkpoints import READERS
    from nncodec.io import Checkpoint, safetensors as st, torch as tio, npz

    sel = {fmt: bytes([i]) for i, (fmt, _) in enumerate(READERS)}
    tensors = {"conv.weight": sample("float32", (4, 3)), "conv.bias": sample("bfloat16", (4,)),
               "steps": sample("int64", ()), "mask": sample("bool", (5,)), "empty": np.zeros((0,), np.float16)}
    ck = Checkpoint(tensors=tensors, aliases={"head.weight": "conv.weight"})
    out = []
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        def written(fn, name, fmt):
            p = os.path.join(d, name)
            fn(p, ck, format=fmt)
            with open(p, "rb") as f:
                return f.read()

        out.append(sel["safetensors"] + written(st.write, "a.safetensors", "safetensors"))
        out.append(sel["torch"] + written(tio.write, "a.pt", "torch"))
        legacy_ck = Checkpoint(tensors={k: v for k, v in tensors.items() if k != "conv.bias"})
        p = os.path.join(d, "l.pt")
        tio.write(p, legacy_ck, format="torch-legacy")
        out.append(sel["torch-legacy"] + open(p, "rb").read())
        out.append(sel["npz"] + written(npz.write, "a.npz", "npz"))
        b = io.BytesIO()
        np.savez_compressed(b, w=sample("float32", (30,)), i=sample("int16", (2, 2)))
        out.append(sel["npz"] + b.getvalue())
        try:
            import torch

            b = io.BytesIO()
            torch.save({"state_dict": {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}, "epoch": 3}, b)
            out.append(sel["torch"] + b.getvalue())
            b = io.BytesIO()
            torch.save({"w": torch.ones(3, dtype=torch.float16)}, b, _use_new_zipfile_serialization=False)
            out.append(sel["torch-legacy"] + b.getvalue())
        except ImportError:
            pass
    if os.path.exists(FIXTURE):
        with open(FIXTURE, "rb") as f:
            out.append(sel["torch-legacy"] + f.read())
    # format detection on each kind
    out += [sel[None] + s[1:] for s in out[:4]]
    # a zip holding a deflated member, for the zip readers
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        z.writestr("archive/byteorder", b"little")
    out.append(sel["torch"] + b.getvalue())
    return out


def _pickle_seeds() -> list:
    # programs for fuzz/fuzz_pickles.py: first byte = wrapper, then (step, argument) pairs
    tensor = bytes([10, 0, 4, 0, 2, 1, 19, 0, 9, 3])  # {"w": tensor}
    return [
        bytes([0]) + tensor, bytes([1]) + tensor, bytes([2]) + tensor, bytes([3]) + tensor,
        bytes([0, 15, 40, 21, 0]),  # a 40-level DAG
        bytes([0, 10, 0, 15, 30, 0, 1, 9, 2]),  # a DAG as a dict key
        bytes([2, 1, 200, 1, 201, 1, 202]),  # huge integers
        bytes([0, 11, 255, 11, 40]),  # deep nesting
        bytes([0, 3, 0, 7, 0, 6, 0, 9, 0]),  # a list that contains itself
        bytes([1, 2, 0x85, 21, 0]),  # a lone surrogate
        bytes([0, 12, 0, 22, 0, 13, 0, 4, 0, 2, 1, 0, 5, 9, 3, 14, 0]),  # OrderedDict + BUILD
    ]


def _zip_seeds() -> list:
    # programs for fuzz/fuzz_zips.py: first byte = reader, then (member, argument) pairs
    return [
        bytes([0, 0, 0, 2, 0, 3, 0, 4, 0]),  # a valid torch zip
        bytes([0, 0, 0, 11, 0, 2, 0, 3, 0]),  # two data.pkl members
        bytes([0, 0, 0, 2, 0, 2, 2, 3, 0]),  # two byteorder members
        bytes([0, 0, 0, 2, 0, 3, 0, 3, 1]),  # two storage records
        bytes([0, 0, 1, 2, 0, 9, 23]),  # a deflated 8 MiB record for a 16-byte storage
        bytes([1, 5, 0, 5, 3]),  # npz with two members of one name
        bytes([2, 5, 1, 5, 2]),
    ]


_BUILDERS = {
    "container": _container_seeds,
    "container_crc": _container_seeds,
    "codecs": _codec_seeds,
    "checkpoints": _checkpoint_seeds,
    "pickles": _pickle_seeds,
    "zips": _zip_seeds,
}
_cache: dict = {}


def seeds(harness: str) -> list:
    fn = _BUILDERS[harness]
    if fn not in _cache:
        _cache[fn] = fn()
    return list(_cache[fn])


def write(outdir: str, harnesses=None) -> dict:
    from fuzz import HARNESSES

    counts = {}
    for h in harnesses or HARNESSES:
        d = os.path.join(outdir, h)
        os.makedirs(d, exist_ok=True)
        ss = seeds(h)
        for i, s in enumerate(ss):
            with open(os.path.join(d, f"seed-{i:04d}"), "wb") as f:
                f.write(s)
        counts[h] = len(ss)
    return counts


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "fuzz", "corpus")
    for h, n in write(out).items():
        print(f"{h}: {n} seeds in {os.path.join(out, h)}")
