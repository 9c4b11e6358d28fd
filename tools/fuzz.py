"""Long fuzz runs over every harness; writes docs/FUZZING.md from what they measured.

    python tools/fuzz.py --seconds 600                  # 10 minutes per harness, the driver
    python tools/fuzz.py --seconds 3600 --engine atheris --jobs 2
    python tools/fuzz.py --seconds 60 --no-doc          # a quick look, docs untouched

Engines: ``driver`` (fuzz/driver.py, random mutation with refusal-message
feedback, no dependency) and ``atheris`` (libFuzzer with coverage feedback;
``pip install atheris``); ``both`` splits each harness's time between them.
Every harness runs in its own process with the address space capped
(``--max-memory-mb``), so an unbounded allocation shows up as a finding. The
inputs of findings land in ``build/fuzz/artifacts``; once a finding is fixed,
copy its input to ``tests/regressions/<harness>-<what>.bin`` and add it to
FINDINGS below.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import glob
import json
import os
import platform
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from fuzz import HARNESSES  # noqa: E402

BUILD = os.path.join(ROOT, "build", "fuzz")

#: every finding so far: (harness, what failed, the fix, regression input, status)
FINDINGS = [
    ("checkpoints", "format detection on a damaged zip raised zipfile.BadZipFile", "nncodec/io/__init__.py `detect_format`: zip errors become CorruptError", "checkpoints-detect-zip-central-dir.bin", "fixed"),
    ("checkpoints", "format detection on a zip with an unknown version raised NotImplementedError", "as above", "checkpoints-detect-zip-version.bin", "fixed"),
    ("checkpoints", "format detection on a zip with a non-UTF-8 member name raised UnicodeDecodeError", "as above", "checkpoints-detect-zip-name-utf8.bin", "fixed"),
    ("checkpoints", "npz member with damaged deflate data raised zlib.error", "nncodec/io/npz.py: members read by the checked zip reader, zip errors become CorruptError", "checkpoints-npz-deflate-damaged.bin", "fixed"),
    ("checkpoints", "npz member flagged as encrypted raised NotImplementedError", "as above", "checkpoints-npz-encrypted.bin", "fixed"),
    ("checkpoints", "npz member with an empty name raised IndexError (in the first version of the npz fix)", "nncodec/io/npz.py: directory test without ZipInfo.is_dir", "checkpoints-npz-empty-member-name.bin", "fixed"),
    ("checkpoints", "a bool tensor holding byte 2 was returned (and would encode to a file no decoder accepts)", "nncodec/io/__init__.py `check_bool`, called by the safetensors, torch and npz readers", "checkpoints-bool-byte-2.bin", "fixed"),
    ("container", "stream reader allocated a record's declared payload length before reading it (MemoryError on a 240-byte input)", "nncodec/format/container.py `Source.read`: the buffer grows with the bytes that arrive", "container-stream-huge-payload.bin", "fixed"),
    ("container", "a 2 KB zstd stage inflates to 64 MiB for a 64-byte tensor before the raw stage refuses it", "nncodec/pipeline.py: cap ctx.max_bytes by what the serializer can take (twice its input bytes plus 4 KiB)", "container-zstd-bomb.bin", "fixed"),
    ("pickles (issue 14 corpus)", "a 788-byte pickle of shared list references made error formatting repr() a graph of ~10^30 nodes (minutes, gigabytes)", "nncodec/io/_pickle.py `expanded_size` at STOP, `check_key`, describe() in messages", "checkpoints-pickle-list-dag.bin", "fixed"),
    ("pickles (issue 14 corpus)", "dict keys and set members built as a tuple DAG made hashing do ~10^30 work", "nncodec/io/_pickle.py `check_key`: flat keys only", "checkpoints-pickle-dag-dict-key.bin", "fixed"),
    ("pickles (issue 14 corpus)", "a 262 KB zip holding a 256 MiB data.pkl of POP opcodes ran for 67 s (regression input: 8 KB, 8 MiB of opcodes)", "nncodec/io/_pickle.py: opcodes counted against the archive's size (`input_size`)", "checkpoints-pickle-pop-bomb.bin", "fixed"),
    ("pickles (issue 14 corpus)", "integers over 4,300 digits raised ValueError while a message was formatted", "nncodec/io/_pickle.py: integers over 128 bits refused on their digits", "checkpoints-pickle-huge-int-text.bin", "fixed"),
    ("safetensors (issue 14 corpus)", "a header nested 2,000 deep raised RecursionError; a lone surrogate in metadata reached the writer (UnicodeEncodeError)", "nncodec/format/jsonutil.py `parse` (depth pre-scan, surrogates refused), used by nncodec/io/safetensors.py", "checkpoints-safetensors-deep-header.bin", "fixed"),
    ("npz (hostile test)", "a tiny npz member declaring a huge .npy shape was allocated by numpy before reading failed", "nncodec/io/npz.py `_parse_npy`: the header's shape must account for exactly the member's bytes", "tests/test_hostile.py::test_npz_huge_declared_shapes_and_bad_headers", "fixed"),
]


def run_driver(h: str, seconds: float, seed: int, mem: int, art: str) -> dict:
    cmd = [sys.executable, "-m", "fuzz.driver", h, "--seconds", str(seconds), "--seed", str(seed),
           "--max-memory-mb", str(mem), "--artifacts", art, "--corpus", os.path.join(BUILD, "corpus", h)]
    t = time.monotonic()
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=_env())
    stats = [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")]
    if not stats:
        return {"harness": h, "engine": "driver", "seconds": time.monotonic() - t, "executions": 0,
                "findings": [{"key": f"driver died (exit {p.returncode})", "error": p.stderr[-500:]}]}
    s = stats[0]
    s["seconds"] = time.monotonic() - t
    return s


def run_atheris(h: str, seconds: float, seed: int, mem: int, art: str) -> dict:
    corpus = os.path.join(BUILD, "atheris-corpus", h)
    os.makedirs(corpus, exist_ok=True)
    execs, findings, t0 = 0, [], time.monotonic()
    restarts = 0
    while time.monotonic() - t0 < seconds - 5 and restarts < 20:
        left = int(seconds - (time.monotonic() - t0))
        before = set(glob.glob(os.path.join(art, "*")))
        cmd = [sys.executable, "-m", f"fuzz.fuzz_{h}", corpus, os.path.join(BUILD, "corpus", h),
               f"-max_total_time={left}", f"-seed={seed + restarts}", f"-rss_limit_mb={mem}", "-timeout=10",
               f"-artifact_prefix={art}/{h}-", "-print_final_stats=1"]
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=_env(atheris=True))
        m = re.search(r"stat::number_of_executed_units:\s*(\d+)", p.stderr)
        execs += int(m.group(1)) if m else 0
        new = sorted(set(glob.glob(os.path.join(art, "*"))) - before)
        for f in new:
            findings.append({"key": os.path.basename(f), "path": f, "error": _tail_error(p.stderr)})
        if not new:
            break
        restarts += 1
    return {"harness": h, "engine": "atheris", "seconds": time.monotonic() - t0, "executions": execs, "findings": findings}


def _tail_error(stderr: str) -> str:
    lines = [x for x in stderr.splitlines() if "Error" in x or "Exception" in x]
    return lines[-1][:300] if lines else stderr[-300:]


def _env(atheris: bool = False) -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), NUMBA_NUM_THREADS="1")
    if atheris:
        env["NNCODEC_FUZZ_ATHERIS"] = "1"
    return env


def write_doc(path: str, results: list, args) -> None:
    total_s = sum(r["seconds"] for r in results)
    total_x = sum(r["executions"] for r in results)
    found = sum(len(r["findings"]) for r in results)
    lines = [
        "# Fuzzing nncodec",
        "",
        "nncodec reads files from strangers (spec/SECURITY.md), so every parser and decoder is",
        "fuzzed. The harnesses live in `fuzz/`; each `TestOneInput(data)` must either return",
        "arrays of the declared dtype and shape or raise an `nncodec.NNCodecError`. Anything",
        "else -- another exception, a crash, a hang, an allocation the memory cap refuses, or",
        "stream and lazy readers that disagree -- is a finding.",
        "",
        "| harness | what it feeds | extra oracles |",
        "|---|---|---|",
        "| `container` | raw bytes to `decode_bytes`, `iter_decode(salvage=True)` and `nncodec.open` on a temporary file | salvage never raises; a file the stream reader accepts decodes bit-identically through the lazy reader |",
        "| `container_crc` | the same, after `fuzz/nncfix.py` recomputes every CRC-32, so mutations reach the JSON, index and codec parsers | as above |",
        "| `codecs` | a fuzzed payload to `Pipeline.decode` for one of ~270 (pipeline, dtype) cases and one of 12 shapes: raw, planes (Huffman, context, zstd planes), zstd, ans, zerorun, huffman, cabac, scalar, lattice, kmeans, prune, tcq, dct, lowrank, bloomier | output dtype and shape exactly as declared |",
        "| `checkpoints` | a file to `read_checkpoint` as safetensors, torch zip, torch legacy (pickle), npz, or by detection | tensors of stored dtypes, bools 0/1, aliases name tensors, str metadata |",
        "| `pickles` | structure-aware: the input is a program that builds a pickle (shared references and DAGs, cycles, huge integers, deep nesting, lone surrogates, admitted globals with REDUCE/BUILD, persistent ids, tensor rebuilds), wrapped as a torch zip (stored or deflated), a legacy file or a bare pickle | as `checkpoints`; the watchdog and memory cap catch unbounded work |",
        "| `zips` | structure-aware: the input chooses archive members (pickles, duplicate `data.pkl`/`byteorder`/storage names, short, long and large deflated records, npy members), stored or deflated, read as torch zip, npz or by detection | as `checkpoints`; an archive with two members of one name must be refused |",
        "",
        "Seed corpora (`fuzz/corpus.py`) come from real files: nncodec files of every dtype and",
        "pipeline, the MTCNN legacy torch fixture, torch zip/legacy files written by nncodec and by",
        "torch, safetensors and npz files (stored and deflated).",
        "",
        "## Running",
        "",
        "```sh",
        "python -m pytest tests/test_fuzz_short.py      # CI: ~64 s of fuzzing, fixed seed",
        "python tools/fuzz.py --seconds 3600            # long run; rewrites this page",
        "python tools/fuzz.py --seconds 3600 --engine atheris   # coverage-guided (pip install atheris)",
        "python -m fuzz.fuzz_container_crc build/fuzz/corpus/container_crc   # one harness under atheris",
        "python -m fuzz.driver checkpoints --replay INPUT   # replay one input",
        "```",
        "",
        "## Latest long run",
        "",
        f"Command: `python tools/fuzz.py {' '.join(sys.argv[1:])}` on {datetime.date.today().isoformat()}, "
        f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} cores, "
        f"{args.jobs} harnesses at a time, address space capped at +{args.max_memory_mb} MiB.",
        "",
        "| harness | engine | seconds | executions | exec/s | findings |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        rate = r["executions"] / r["seconds"] if r["seconds"] else 0
        lines.append(f"| {r['harness']} | {r['engine']} | {r['seconds']:.0f} | {r['executions']:,} | {rate:.0f} | {len(r['findings'])} |")
    lines += ["", f"Total: {total_s / 3600:.2f} CPU-hours, {total_x:,} executions, {found} findings.", ""]
    for r in results:
        for f in r["findings"]:
            lines.append(f"* {r['harness']}: `{f['key']}` {f.get('error', '')[:200]}")
    lines += [
        "",
        "## Findings",
        "",
        "Every finding has its input in `tests/regressions/`, replayed by",
        "`tests/regressions/test_replay.py` (open ones as strict xfails until fixed).",
        "",
        "| harness | finding | fix | regression | status |",
        "|---|---|---|---|---|",
    ]
    for h, what, fix, reg, status in FINDINGS:
        lines.append(f"| {h} | {what} | {fix} | `{reg}` | {status} |")
    lines.append("")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=600, help="seconds per harness")
    ap.add_argument("--engine", choices=("driver", "atheris", "both"), default="driver")
    ap.add_argument("--harness", action="append", choices=HARNESSES, help="only these (repeatable)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    ap.add_argument("--max-memory-mb", type=int, default=3072)
    ap.add_argument("--doc", default=os.path.join(ROOT, "docs", "FUZZING.md"))
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args(argv)

    from fuzz import corpus

    corpus.write(os.path.join(BUILD, "corpus"))
    art = os.path.join(BUILD, "artifacts")
    os.makedirs(art, exist_ok=True)
    jobs = []
    for h in args.harness or HARNESSES:
        if args.engine in ("driver", "both"):
            jobs.append((run_driver, h, args.seconds / (2 if args.engine == "both" else 1)))
        if args.engine in ("atheris", "both"):
            jobs.append((run_atheris, h, args.seconds / (2 if args.engine == "both" else 1)))
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as ex:
        futs = [ex.submit(fn, h, s, args.seed, args.max_memory_mb, art) for fn, h, s in jobs]
        results = [f.result() for f in futs]
    for r in results:
        print(f"{r['harness']:14} {r['engine']:8} {r['seconds']:8.0f} s {r['executions']:>10,} execs  "
              f"{len(r['findings'])} findings", flush=True)
        for f in r["findings"]:
            print(f"    {f['key']}: {f.get('error', '')[:200]}  {f.get('path', '')}")
    with open(os.path.join(BUILD, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    if not args.no_doc:
        write_doc(args.doc, results, args)
        print(f"wrote {args.doc}")
    return 1 if any(r["findings"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
