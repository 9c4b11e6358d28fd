"""GGUF (llama.cpp) block quantization as a lossy peer: quantize, dequantize, count bytes.

Uses the ``gguf`` package (llama.cpp's Python side, 0.19.0 measured; it needs
only NumPy, so it runs in nncodec's own environment: ``pip install gguf``).
Its NumPy quantizers are byte-identical to llama.cpp's C reference
quantizers (``quantize_row_*_ref``); llama-quantize's importance-matrix
paths are not modelled.

    python tools/peers/gguf_runner.py FILE [--types Q8_0,Q4_0,...] [--out DIR]

Types measured (gguf 0.19.0 quantizes these in NumPy):

    type   block  bytes/block  bits/weight   per block
    Q8_0    32       34          8.5         fp16 scale d, 32 x int8
    Q5_1    32       24          6.0         fp16 d and min m, 32 x 5-bit
    Q5_0    32       22          5.5         fp16 d, 32 x 5-bit (offset 16)
    Q4_1    32       20          5.0         fp16 d and min m, 32 x 4-bit
    Q4_0    32       18          4.5         fp16 d, 32 x 4-bit (offset 8)
    BF16, F16 (1 value, 2 bytes) as 16-bit references.

Not measured: the K-quants (Q2_K..Q6_K, Q8_K) and the IQ types. gguf 0.19.0
can only *dequantize* them in NumPy; ``quantize`` raises NotImplementedError
(checked by ``quantizable_types()``), and their C quantizers are not on PyPI in
a form this machine can run. TQ1_0/TQ2_0 do quantize in NumPy but are ternary
formats for networks trained ternary, and MXFP4 (32 x FP4 E2M1 values with a
shared power-of-two E8M0 scale, 17 bytes, 4.25 bits/weight) quantizes too; both
are accepted by name but are not in the default list (``--list`` prints what
the installed package can quantize).

Layout and padding: ggml quantizes along a tensor's innermost dimension
(ggml's ne[0], NumPy's last axis) and requires it to be a multiple of the block
size; llama-quantize falls back to another type (ultimately F16) for a tensor
whose rows do not fit, and keeps 1-D tensors (biases, norms) in F32.
- ``layout="flat"`` (the default): the tensor is flattened in C order and
  zero-padded to a whole number of blocks, then quantized as one row. The
  padding's bytes are counted: it is what a file storing this tensor blockwise
  would hold. Every tensor gets the requested type, so rates compare cleanly.
- ``layout="rows"``: each row (last axis) is zero-padded to whole blocks and
  quantized separately, padding counted; this is ggml's row layout when the
  row width fits, and an upper bound on it when it does not.
``quantize_dict`` keeps tensors with fewer than ``min_ndim`` dimensions (2 by
default) in float32, as llama.cpp does, and counts 4 bytes per value for them.
Byte counts are tensor data only: no GGUF header, metadata or alignment.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

import numpy as np

#: types measured by default, finest first
DEFAULT_TYPES = ("Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0")
REFERENCE_TYPES = ("BF16", "F16")


def _gguf():
    try:
        import gguf
        from gguf import quants
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise SystemExit("the gguf package is missing: pip install gguf (NumPy only, no torch)") from e
    return gguf, quants


def qtype(name):
    """The GGMLQuantizationType of ``name`` ("Q4_0", "q4_0", or the enum itself)."""
    gguf, _ = _gguf()
    if isinstance(name, gguf.GGMLQuantizationType):
        return name
    try:
        return gguf.GGMLQuantizationType[str(name).upper()]
    except KeyError:
        raise ValueError(f"unknown GGML type {name!r}; measured types: {', '.join(DEFAULT_TYPES + REFERENCE_TYPES)}") from None


def block_size(t) -> tuple:
    """(values per block, bytes per block) of a GGML type."""
    gguf, _ = _gguf()
    return tuple(gguf.GGML_QUANT_SIZES[qtype(t)])


def bits_per_weight(t) -> float:
    """Nominal bits per weight of a GGML type (bytes per block * 8 / values per block), padding aside."""
    n, b = block_size(t)
    return 8.0 * b / n


def quantizable_types() -> list:
    """Names of the GGML types the installed gguf package can quantize in NumPy (probed on one block)."""
    gguf, quants = _gguf()
    ok = []
    for t in gguf.GGMLQuantizationType:
        n, _ = gguf.GGML_QUANT_SIZES[t]
        try:
            quants.quantize(np.zeros((1, n), dtype=np.float32), t)
        except (NotImplementedError, ValueError, TypeError, AssertionError):
            continue
        ok.append(t.name)
    return ok


def quantize_dequantize(arr, type, *, layout: str = "flat") -> tuple:  # noqa: A002  (the brief's name)
    """Quantize ``arr`` to GGML ``type`` and back: (float32 array shaped like ``arr``, bytes stored).

    ``arr`` may be any float dtype (it is converted to float32 first, as
    llama.cpp's converter does). See the module notes for ``layout`` and how
    padding is counted.
    """
    _, quants = _gguf()
    t = qtype(type)
    x = np.asarray(arr)
    shape = x.shape
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise ValueError("tensor holds inf or nan; GGML quantization of it is undefined")
    n_blk, b_blk = block_size(t)
    if x.size == 0:
        return x.reshape(shape), 0
    if layout == "flat":
        rows = x.reshape(1, -1)
    elif layout == "rows":
        rows = x.reshape(-1, shape[-1] if x.ndim else 1)
    else:
        raise ValueError(f"layout must be 'flat' or 'rows', got {layout!r}")
    width = rows.shape[1]
    padded = -(-width // n_blk) * n_blk
    if padded != width:
        rows = np.pad(rows, ((0, 0), (0, padded - width)))
    q = quants.quantize(np.ascontiguousarray(rows), t)
    nbytes = rows.shape[0] * (padded // n_blk) * b_blk
    if q.nbytes != nbytes:  # pragma: no cover - a gguf package that stores types differently
        raise RuntimeError(f"{t.name}: quantized data is {q.nbytes} bytes, expected {nbytes}")
    y = quants.dequantize(q, t).astype(np.float32, copy=False).reshape(rows.shape)
    return np.ascontiguousarray(y[:, :width]).reshape(shape), int(nbytes)


def quantize_dict(tensors: dict, type, *, min_ndim: int = 2, layout: str = "flat") -> tuple:  # noqa: A002
    """Quantize every tensor of ``min_ndim``+ dimensions; keep the rest float32.

    Returns (reconstructed tensors, total bytes, {name: {"type", "bytes", "n"}}).
    """
    out, info, total = {}, {}, 0
    for name, a in tensors.items():
        a = np.asarray(a)
        if a.ndim >= min_ndim:
            y, nb = quantize_dequantize(a, type, layout=layout)
            kind = qtype(type).name
        else:
            y, nb, kind = a.astype(np.float32), 4 * a.size, "F32"
        out[name] = y
        info[name] = {"type": kind, "bytes": nb, "n": int(a.size)}
        total += nb
    return out, total, info


def _snr_db(ref: dict, rec: dict, names) -> float | None:
    names = list(names)
    if not names:
        return None
    sig = sum(float(np.sum(np.square(np.asarray(ref[k], dtype=np.float64)))) for k in names)
    err = sum(float(np.sum(np.square(np.asarray(ref[k], dtype=np.float64) - rec[k]))) for k in names)
    if err == 0:
        return math.inf
    return 10 * math.log10(sig / err) if sig > 0 else -math.inf


def _read(path) -> dict:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if root not in sys.path:
        sys.path.insert(0, root)
    from nncodec.io import read_checkpoint

    return dict(read_checkpoint(path).tensors)


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file", nargs="?", help="checkpoint: safetensors, .npz or .pt")
    ap.add_argument("--types", default=",".join(DEFAULT_TYPES), help="comma-separated GGML types")
    ap.add_argument("--layout", choices=("flat", "rows"), default="flat")
    ap.add_argument("--min-ndim", type=int, default=2, help="tensors with fewer dimensions stay float32")
    ap.add_argument("--out", help="directory for results.json and the dequantized <TYPE>.npz files")
    ap.add_argument("--list", action="store_true", help="print the types this gguf package can quantize")
    args = ap.parse_args(argv)
    if args.list:
        print(" ".join(quantizable_types()))
        return 0
    if not args.file:
        ap.error("a checkpoint FILE is required (or --list)")

    from importlib.metadata import version

    tensors = {k: v for k, v in _read(args.file).items()
               if np.asarray(v).dtype.kind == "f" or np.asarray(v).dtype.name == "bfloat16"}
    n_values = sum(np.asarray(v).size for v in tensors.values())
    coded = [k for k, v in tensors.items() if np.asarray(v).ndim >= args.min_ndim]
    results = []
    for name in [t.strip() for t in args.types.split(",") if t.strip()]:
        t0 = time.perf_counter()
        rec, total, info = quantize_dict(tensors, name, min_ndim=args.min_ndim, layout=args.layout)
        secs = time.perf_counter() - t0
        coded_bytes = sum(info[k]["bytes"] for k in coded)
        coded_n = sum(info[k]["n"] for k in coded)
        r = {
            "type": qtype(name).name, "bytes": total, "bits_per_value": 8.0 * total / n_values,
            "bytes_coded": coded_bytes, "bits_per_weight_coded": 8.0 * coded_bytes / coded_n if coded_n else None,
            "nominal_bits_per_weight": bits_per_weight(name),
            "snr_db": _snr_db(tensors, rec, tensors), "snr_db_coded": _snr_db(tensors, rec, coded),
            "seconds_numpy": secs,
        }
        if args.out:
            os.makedirs(args.out, exist_ok=True)
            with open(os.path.join(args.out, f"{r['type']}.npz"), "wb") as f:
                np.savez(f, **rec)
            r["decoded"] = f"{r['type']}.npz"
        results.append(r)
    summary = {
        "peer": "gguf", "version": version("gguf"), "input": os.path.abspath(args.file),
        "layout": args.layout, "min_ndim": args.min_ndim, "tensors": len(tensors),
        "values": int(n_values), "coded_tensors": len(coded),
        "bytes_counted": "tensor data only; padding to whole blocks included; tensors below min_ndim as F32",
        "timing": "NumPy reference quantizer, not llama.cpp's C speed", "results": results,
    }
    if args.out:
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
