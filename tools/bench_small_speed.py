"""Whole-process encode speed, memory, size and weight SNR of ``--preset small`` against the
default preset and Fraunhofer NNCodec 2.1.3, on all-MiniLM-L6-v2 (fp32).

    python tools/bench_small_speed.py [--model model.safetensors] [--bits 3,4.5,6] [--presets small,balanced]
                                      [--nnc-qp -32] [--no-peer] [--profile]

Every encode is one child process (``python -m nncodec encode ... -q``) timed from outside with
``/usr/bin/time -f '%e %M'`` (wall seconds, peak RSS). The weight SNR is
10 log10(sum w^2 / sum (w - w_hat)^2) over all float tensors of the decoded file. NNCodec runs
with its venv's python from a temporary folder (tools/peers/setup_nnc.sh builds it), at its
default settings and one QP. ``--profile`` prints, per 2-D tensor of the model, the seconds the
small preset's kernels take (trellis, rate model, path costs, cabac).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

_FHG_ENCODE = (
    "import sys,os,json\n"
    "sys.path[:]=[p for p in sys.path if p not in ('',os.getcwd())]\n"
    "import numpy as np\n"
    "src,dst,qp=sys.argv[1],sys.argv[2],int(sys.argv[3])\n"
    "f=open(src,'rb');n=int.from_bytes(f.read(8),'little');h=json.loads(f.read(n));data=f.read()\n"
    "arr={k:np.frombuffer(data[e['data_offsets'][0]:e['data_offsets'][1]],dtype='<f4').reshape(e['shape']).copy()"
    " for k,e in h.items() if k!='__metadata__' and e['dtype']=='F32'}\n"
    "import nncodec.nn\n"
    "bits=nncodec.nn.encode(arr,args={'qp':qp,'verbose':False})\n"
    "open(dst,'wb').write(bits)\n"
)


def timed(cmd, env=None, cwd=None):
    r = subprocess.run(["/usr/bin/time", "-f", "%e %M"] + cmd, capture_output=True, text=True, env=env, cwd=cwd)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {r.stderr[-2000:]}")
    wall, rss = r.stderr.strip().splitlines()[-1].split()
    return float(wall), int(rss) * 1024


def load(path):
    from nncodec.io import safetensors as sio

    ck = sio.read(path)
    ts = ck.tensors if hasattr(ck, "tensors") else ck
    return {n: np.asarray(a) for n, a in ts.items()}


def snr_db(orig: dict, path: str) -> float:
    import nncodec

    with tempfile.TemporaryDirectory() as tmp:
        back = os.path.join(tmp, "b.safetensors")
        nncodec.decode_file(path, back)
        dec = load(back)
    num = den = 0.0
    for n, a in orig.items():
        if a.dtype.kind != "f":
            continue
        w = a.astype(np.float64)
        num += float(np.sum(w * w))
        den += float(np.sum((w - dec[n].astype(np.float64)) ** 2))
    return 10 * np.log10(num / den) if den > 0 else float("inf")


def default_model():
    sys.path.insert(0, HERE)
    import make_shards

    return make_shards.minilm_path()


def profile(path):
    from nncodec.codecs.base import Context
    from nncodec.codecs.cabac import Cabac
    from nncodec.codecs.tcq import Tcq
    from nncodec.entropy import contexts
    from nncodec.kernels import tcq as k

    ts = load(path)
    table, quant = contexts.state_table(8)
    tot = np.zeros(6)
    for n, a in ts.items():
        if a.ndim != 2 or a.dtype != np.float32:
            continue
        q = Tcq(float(a.std()) / 3)
        ctx = Context(name=n)
        c = [time.perf_counter()]
        t = q.scaled(a, ctx)
        c.append(time.perf_counter())
        width = contexts.row_width(a.shape)
        g = np.empty(t.size, np.int32)
        k.greedy(t, table, quant, g)
        c.append(time.perf_counter())
        cost = contexts.rate_model(g, a.shape, 8, contexts.DEFAULT_GT)
        c.append(time.perf_counter())
        v = np.empty(t.size, np.int32)
        k.viterbi(t, width, table, quant, contexts.DEFAULT_GT, cost, q.lam, g, v)
        c.append(time.perf_counter())
        k.path_cost(t, v, width, table, quant, contexts.DEFAULT_GT, cost, q.lam)
        k.path_cost(t, g, width, table, quant, contexts.DEFAULT_GT, cost, q.lam)
        c.append(time.perf_counter())
        Cabac(8).encode(v.reshape(a.shape), ctx)
        c.append(time.perf_counter())
        tot += np.diff(c)
    print("kernel seconds over the 2-D float tensors (one pass): scaled %.3f greedy %.3f rate model %.3f "
          "viterbi %.3f path costs %.3f cabac %.3f" % tuple(tot))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model")
    ap.add_argument("--bits", default="3,4.5,6")
    ap.add_argument("--presets", default="small,balanced")
    ap.add_argument("--nnc-qp", type=int, default=-32)
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args()
    model = a.model or default_model()
    if a.profile:
        profile(model)
    orig = load(model)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for bits in a.bits.split(","):
            for preset in a.presets.split(","):
                out = os.path.join(tmp, f"{preset}.{bits}.nnc")
                wall, rss = timed([sys.executable, "-m", "nncodec", "encode", model, out, "--preset", preset,
                                   "--bits", bits, "-q"])
                row = {"preset": preset, "bits": float(bits), "wall_s": wall, "rss_mb": rss / 2**20,
                       "bytes": os.path.getsize(out), "snr_db": snr_db(orig, out)}
                rows.append(row)
                print(json.dumps(row), flush=True)
                os.remove(out)
        py = os.path.join(ROOT, ".peers", "nnc", "bin", "python")
        if not a.no_peer and os.path.exists(py):
            env = dict(os.environ, PYTHONPATH=os.path.join(HERE, "peers", "torchvision_stub"))
            with tempfile.TemporaryDirectory() as wd:
                dst = os.path.join(tmp, "fhg.nnc")
                wall, rss = timed([py, "-c", _FHG_ENCODE, model, dst, str(a.nnc_qp)], env=env, cwd=wd)
            row = {"preset": f"NNCodec 2.1.3 qp {a.nnc_qp}", "wall_s": wall, "rss_mb": rss / 2**20,
                   "bytes": os.path.getsize(dst)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
