"""A short, deterministic fuzz pass over every harness (the long runs: tools/fuzz.py).

Each harness runs under nncodec's random-mutation driver (fuzz/driver.py) with
a fixed seed, bounded by an iteration count and by wall time (about 11 s per
harness, two groups of three harnesses at a time, the structure-aware
``pickles`` and ``zips`` included), in a subprocess whose address space is
capped so that an unbounded allocation fails as a MemoryError. Any finding
fails the test and leaves its input in the test's temporary folder: copy it to
tests/regressions/ as ``<harness>-<what>.bin`` once the bug is fixed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: (harnesses run in one process, seconds per harness, iteration cap per harness)
GROUPS = (
    ("container_crc,container,pickles", 11, 8000),
    ("codecs,checkpoints,zips", 11, 12000),
)
SEED = 20261122
MEMORY_MB = 3072


def test_fuzz_short(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), NUMBA_NUM_THREADS="1")
    procs = []
    for harnesses, seconds, iters in GROUPS:
        cmd = [sys.executable, "-m", "fuzz.driver", harnesses, "--seconds", str(seconds), "--iters", str(iters),
               "--seed", str(SEED), "--timeout", "10", "--max-memory-mb", str(MEMORY_MB),
               "--artifacts", str(tmp_path)]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    report = []
    for p, (harnesses, seconds, _) in zip(procs, GROUPS):
        out, err = p.communicate(timeout=300)
        stats = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        assert p.returncode in (0, 1), f"{harnesses}: the driver died (exit {p.returncode}):\n{err[-3000:]}"
        assert len(stats) == len(harnesses.split(",")), f"{harnesses}: incomplete output:\n{out}\n{err[-3000:]}"
        for s in stats:
            print(f"{s['harness']}: {s['executions']} executions in {s['seconds']} s, {len(s['findings'])} findings")
            report.append(s)
            assert s["executions"] > 200, s
    findings = [f"{s['harness']}: {f['error']} (input {f.get('path')})\n{f['traceback']}" for s in report for f in s["findings"]]
    assert not findings, "\n\n".join(findings)
