"""Encode and decode arrays with Fraunhofer NNCodec 2.1.3 (MPEG NNC, DeepCABAC) at several QPs.

Run with the NNCodec peer venv's python (tools/peers/setup_nnc.sh builds it):

    .peers/nnc/bin/python tools/peers/nnc_runner.py IN.npz --qp -38,-32,-26,-20 --out DIR [--runs 3]

``IN.npz`` holds the tensors to code. NNCodec takes float32 (or int32) only:
float16 arrays and arrays named ``NAME::bfloat16`` (raw bfloat16 bits as
uint16, as tools/peers/torch_to_npz.py writes them) are widened to float32
first, which is exact, and listed under ``"cast"`` in the output; anything else
is refused. The QPs can also be given as a JSON list (``--qp '[-38, -32]'``).

For each QP the script calls ``nncodec.nn.encode(arrays, args={"qp": qp,
"verbose": False})`` and ``nncodec.nn.decode(bytearray(bits))`` -- NNCodec's
own defaults otherwise: dependent (trellis) quantization, parameter
optimisation, row skipping. Encoding runs in a fresh temporary directory,
because NNCodec writes a stray ``*_bitstream.nnc`` into its working directory.
NNCodec signals failure with ``SystemExit``; it is caught, recorded for that QP,
and the script goes on with the next QP and exits 1 at the end.

How NNCodec's dict API treats tensors by rank (nncodec 2.1.3,
``nnc_core/nnr_model``): a tensor of 2 or more dimensions is a "weight" and is
quantized with step 2^(qp/4); a 1-D tensor (biases, norms) or a scalar is
"unspecified" and is quantized at ``nonweight_qp`` = -75, a step of about
2.3e-6 -- near-lossless, so at coarse QPs the 1-D tensors cost far more bits
per value than the weights. ``--nonweight-qp Q`` overrides -75 (e.g. with the
same value as ``--qp`` for a like-for-like rate); ``--weights-only`` drops the
1-D tensors and scalars from the input so that only tensors of 2+ dimensions
are coded and counted. Scalars come back from NNCodec with shape (1,) and are
reshaped to their original shape here.

Measurements are single-threaded: OMP/MKL/OpenBLAS threads and torch's thread
pool are set to 1 before anything is imported, and the process is pinned to
one CPU. ``encode_s``/``decode_s`` are in-process, warm (``import nncodec.nn``,
about 3 s, is not counted), the median over ``--runs`` repetitions; each
repetition must produce identical bytes.

Written to ``--out``:
  ``results.json``        one record per QP (also printed as one JSON line)
  ``qp_<qp>.npz``         the decoded arrays (float32, original names and shapes)
  ``qp_<qp>.nnc``         NNCodec's bitstream (its size is ``bytes``)
Each record: qp, bytes, bits_per_value (over all coded values), encode_s,
decode_s, snr_db (10*log10(sum w^2 / sum (w - w_hat)^2) over all coded
tensors) and snr_db_2d (over tensors of 2+ dimensions only), or error.
"""

import os

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
STUB = os.path.join(HERE, "torchvision_stub")
# Our own package is also called "nncodec": never let the repository root shadow the peer.
_root = os.path.dirname(os.path.dirname(HERE))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != _root]
sys.path.insert(0, STUB)

import numpy as np  # noqa: E402


def parse_qps(text):
    text = text.strip()
    qps = json.loads(text) if text.startswith("[") else [int(t) for t in text.split(",") if t.strip()]
    if not qps or not all(isinstance(q, int) for q in qps):
        raise SystemExit(f"--qp: expected integers such as -38,-32 or [-38, -32], got {text!r}")
    return qps


def load_inputs(path, weights_only):
    """(arrays to code, original shapes, cast notes, dropped names)."""
    arrays, shapes, cast, dropped = {}, {}, {}, []
    with np.load(path, allow_pickle=False) as z:
        for key in z.files:
            a = z[key]
            name = key
            if key.endswith("::bfloat16"):
                name = key[: -len("::bfloat16")]
                if a.dtype != np.uint16:
                    raise SystemExit(f"{path}: {key!r} should hold bfloat16 bits as uint16, has {a.dtype}")
                a = (a.astype(np.uint32) << 16).view(np.float32)
                cast[name] = "bfloat16"
            elif a.dtype == np.float16:
                a = a.astype(np.float32)
                cast[name] = "float16"
            elif a.dtype != np.float32:
                raise SystemExit(f"{path}: tensor {key!r} is {a.dtype}; NNCodec codes float32 only "
                                 f"(float16 and NAME::bfloat16 are widened here)")
            if weights_only and a.ndim < 2:
                dropped.append(name)
                continue
            shapes[name] = a.shape
            arrays[name] = np.ascontiguousarray(a)
    if not arrays:
        raise SystemExit(f"{path}: no tensors to code")
    return arrays, shapes, cast, dropped


@contextlib.contextmanager
def stdout_to_stderr():
    """Send everything written to fd 1 (Python and C++ alike) to stderr."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def snr_db(ref, rec, names):
    if not names:
        return None
    num = sum(float(np.sum(np.square(ref[n], dtype=np.float64))) for n in names)
    den = sum(float(np.sum(np.square(ref[n].astype(np.float64) - rec[n].astype(np.float64)))) for n in names)
    if den == 0.0:
        return float("inf")
    return 10.0 * np.log10(num / den) if num > 0 else float("-inf")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("input", help=".npz of float32 arrays")
    ap.add_argument("--qp", required=True, help="comma-separated QPs or a JSON list, e.g. -38,-32,-26")
    ap.add_argument("--out", required=True, help="directory for results.json, decoded .npz and bitstreams")
    ap.add_argument("--runs", type=int, default=1, help="repetitions per QP; times are medians")
    ap.add_argument("--nonweight-qp", type=int, default=None,
                    help="QP for 1-D tensors and scalars (NNCodec's default: -75)")
    ap.add_argument("--weights-only", action="store_true", help="code only tensors of 2+ dimensions")
    argv, rest = [], iter(sys.argv[1:])
    for a in rest:  # let "--qp -38,-32" through: argparse would take "-38,-32" for an option
        argv.append(a + "=" + next(rest, "") if a in ("--qp", "--nonweight-qp") else a)
    args = ap.parse_args(argv)
    qps = parse_qps(args.qp)

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})

    arrays, shapes, cast, dropped = load_inputs(args.input, args.weights_only)
    os.makedirs(args.out, exist_ok=True)
    out_dir = os.path.abspath(args.out)

    import torch
    from importlib.metadata import version

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    with stdout_to_stderr():
        import nncodec.nn as nnc_nn
    import_s = time.perf_counter() - t0

    n_values = sum(a.size for a in arrays.values())
    names_2d = [n for n, s in shapes.items() if len(s) >= 2]
    results = []
    failed = False
    for qp in qps:
        rec = {"qp": qp}
        enc_args = {"qp": qp, "verbose": False}
        if args.nonweight_qp is not None:
            enc_args["nonweight_qp"] = args.nonweight_qp
        try:
            enc_times, dec_times, bits, decoded = [], [], None, None
            for _ in range(max(1, args.runs)):
                with tempfile.TemporaryDirectory(prefix="nnc_runner_") as tmp:
                    cwd = os.getcwd()
                    os.chdir(tmp)
                    try:
                        inp = {k: v.copy() for k, v in arrays.items()}  # in case the coder edits in place
                        with stdout_to_stderr():
                            t = time.perf_counter()
                            b = nnc_nn.encode(inp, args=dict(enc_args))
                            enc_times.append(time.perf_counter() - t)
                            t = time.perf_counter()
                            d = nnc_nn.decode(bytearray(b), args={"verbose": False})
                            dec_times.append(time.perf_counter() - t)
                    finally:
                        os.chdir(cwd)
                b = bytes(b)
                if bits is not None and b != bits:
                    raise RuntimeError("NNCodec produced different bytes for the same input on a repeat run")
                bits, decoded = b, d
        except SystemExit as e:  # NNCodec reports errors this way
            rec["error"] = f"SystemExit: {e.code}"
            failed = True
            results.append(rec)
            continue
        except Exception as e:  # noqa: BLE001  (record it, go on with the next QP)
            rec["error"] = f"{type(e).__name__}: {e}"
            failed = True
            results.append(rec)
            continue

        out = {}
        for name, shape in shapes.items():
            if name not in decoded:
                raise SystemExit(f"QP {qp}: NNCodec's output lacks tensor {name!r}")
            a = np.asarray(decoded[name], dtype=np.float32)
            if a.shape != shape:
                if a.size != int(np.prod(shape)):
                    raise SystemExit(f"QP {qp}: tensor {name!r} came back with shape {a.shape}, sent {shape}")
                a = a.reshape(shape)
            out[name] = a
        stem = f"qp_{qp}"
        with open(os.path.join(out_dir, stem + ".npz"), "wb") as f:
            np.savez(f, **out)
        with open(os.path.join(out_dir, stem + ".nnc"), "wb") as f:
            f.write(bits)
        rec.update({
            "bytes": len(bits),
            "bits_per_value": 8.0 * len(bits) / n_values,
            "encode_s": statistics.median(enc_times),
            "decode_s": statistics.median(dec_times),
            "snr_db": snr_db(arrays, out, list(shapes)),
            "snr_db_2d": snr_db(arrays, out, names_2d),
            "decoded": stem + ".npz",
            "bitstream": stem + ".nnc",
        })
        results.append(rec)

    summary = {
        "peer": "nncodec", "version": version("nncodec"), "torch": torch.__version__,
        "input": os.path.abspath(args.input), "tensors": len(arrays), "values": int(n_values),
        "float32_bytes": int(4 * n_values), "tensors_2d": len(names_2d),
        "values_2d": int(sum(arrays[n].size for n in names_2d)),
        "nonweight_qp": args.nonweight_qp if args.nonweight_qp is not None else -75,
        "weights_only": args.weights_only, "dropped": dropped, "cast": cast,
        "runs": max(1, args.runs), "threads": 1, "import_s": import_s,
        "timing": "in-process, warm, median of runs", "results": results,
    }
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    print(json.dumps(summary))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
