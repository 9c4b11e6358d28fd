"""README's install sequence in one fresh virtual environment.

README says ``pip install .``, then the quick start (encode, info, decode, compare of
the fixture), then, for the tests, ``pip install -e ".[test]"``. Numba once cached the
quick start's kernels in ``site-packages/nncodec/kernels/__pycache__``; the editable
install's uninstall left that folder behind and it then shadowed the editable package
(``cannot import name '__version__' from 'nncodec' (unknown location)``).

This test runs that sequence (compiling kernels even for the small fixture, as a
larger file would) in a temporary venv made with ``--system-site-packages``
(numpy, numba, torch and the test extras come from this environment, so nothing large
is downloaded; pip still fetches setuptools for the isolated build) on a copy of the
source tree, with a fresh HOME so the kernel cache starts empty. It takes about a
minute, and is skipped, saying why, where a venv cannot be made or the package index
cannot be reached.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NETWORK_SIGNS = ("NewConnectionError", "Network is unreachable", "Temporary failure in name resolution",
                 "No matching distribution found for setuptools", "Could not find a version that satisfies",
                 "ConnectionError", "Read timed out", "ProxyError", "Name or service not known")


def _run(cmd, *, cwd, env, timeout=300):
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _pip(venv_py, args, *, cwd, env):
    r = _run([venv_py, "-m", "pip", *args], cwd=cwd, env=env, timeout=600)
    if r.returncode != 0:
        text = r.stdout + r.stderr
        if any(sign in text for sign in NETWORK_SIGNS):
            pytest.skip(f"the package index cannot be reached (pip {' '.join(args)}): {text.strip().splitlines()[-1]}")
        pytest.fail(f"pip {' '.join(args)} failed:\n{text[-4000:]}")
    return r


def test_readme_install_then_quick_start_then_test_install(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", "__pycache__", "*.egg-info", "build", "dist", ".pytest_cache", ".hypothesis", ".peers",
        "out", "*.nnc.part", ".venv*"))

    venv = tmp_path / "venv"
    r = _run([sys.executable, "-m", "venv", "--system-site-packages", venv], cwd=tmp_path, env=dict(os.environ),
             timeout=300)
    if r.returncode != 0:
        pytest.skip(f"cannot create a virtual environment: {(r.stderr or r.stdout).strip()[-500:]}")
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    py = bindir / ("python.exe" if os.name == "nt" else "python")
    if not py.exists():
        pytest.skip(f"the virtual environment has no interpreter at {py}")

    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("NNCODEC_CACHE_DIR", "NUMBA_CACHE_DIR", "XDG_CACHE_HOME", "PYTHONPATH", "VIRTUAL_ENV",
                        "NUMBA_DISABLE_JIT", "PIP_REQUIRE_VIRTUALENV")}
    # a new user's HOME (an empty kernel cache), but this machine's pip cache (no needless downloads)
    env["PIP_CACHE_DIR"] = os.environ.get("PIP_CACHE_DIR") or str(Path.home() / ".cache" / "pip")
    env["HOME"] = str(home)
    env["PATH"] = str(bindir) + os.pathsep + env.get("PATH", "")
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["NNCODEC_QUIET"] = "1"
    # the quick start's small file needs no compiled kernel (nncodec/kernels/huffman.py); compile them
    # anyway, as a larger file would, so that the cache is written during the quick start
    env["NNCODEC_JIT"] = "always"

    # 1. pip install .
    _pip(py, ["install", "-q", "."], cwd=src, env=env)
    elsewhere = tmp_path / "elsewhere"  # never import from the source tree by accident
    elsewhere.mkdir()
    where = _run([py, "-c", "import nncodec; print(nncodec.__file__)"], cwd=elsewhere, env=env)
    assert where.returncode == 0, where.stderr
    installed = Path(where.stdout.strip()).resolve().parent
    assert str(installed).startswith(str(venv.resolve())), f"nncodec imported from {installed}, not the venv"

    # 2. the quick start, each command a separate process, as README writes it
    out = tmp_path / "qs"
    out.mkdir()
    nncodec = bindir / ("nncodec.exe" if os.name == "nt" else "nncodec")
    fixture = Path("tests") / "fixtures" / "mtcnn_pnet.pt"
    for args in (["encode", fixture, out / "pnet.nnc"], ["info", out / "pnet.nnc"],
                 ["decode", out / "pnet.nnc", out / "pnet.pt"], ["compare", fixture, out / "pnet.pt"]):
        r = _run([nncodec, *args], cwd=src, env=env)
        assert r.returncode == 0, f"nncodec {args[0]}: {r.stderr}"
    # the kernels were cached in the new user's cache folder, none inside the installed package
    assert list((home / ".cache" / "nncodec" / "numba").rglob("*.nbi"))
    assert not [p for p in installed.rglob("*") if p.suffix in (".nbi", ".nbc")]

    # 3. pip install -e ".[test]" replaces the installed package with the editable one
    _pip(py, ["install", "-q", "-e", ".[test]"], cwd=src, env=env)

    # 4. nncodec imports, from the source tree, with its version
    r = _run([py, "-c", "import nncodec; print(nncodec.__version__); print(nncodec.__file__)"],
             cwd=elsewhere, env=env)
    assert r.returncode == 0, r.stderr
    version, path = r.stdout.split()
    assert version == _version()
    assert Path(path).resolve() == (src / "nncodec" / "__init__.py").resolve()
    assert not installed.exists() or not any(installed.rglob("*")), f"left behind: {sorted(installed.rglob('*'))}"
    r = _run([nncodec, "encode", fixture, out / "again.nnc"], cwd=src, env=env)
    assert r.returncode == 0, r.stderr
    assert (out / "again.nnc").read_bytes() == (out / "pnet.nnc").read_bytes()


def _version() -> str:
    import nncodec

    return nncodec.__version__
