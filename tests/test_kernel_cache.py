"""Where compiled kernels are cached, and the CLI's first-compile notice.

Numba's default cache folder is ``__pycache__`` next to the kernel sources, inside
the installed package: an uninstall leaves it behind and the left-over folder then
shadows a later editable install. nncodec caches kernels in a per-user folder
instead (nncodec.kernels.cache_dir); these tests check the resolution rules, that a
real encode/decode writes there and never under the package, and that the CLI says
once when a first run compiles.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nncodec
from nncodec import kernels
from nncodec.entropy import blockhuffman as hf

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "mtcnn_pnet.pt"
PACKAGE_PYCACHE = Path(nncodec.__file__).resolve().parent / "kernels" / "__pycache__"
NOTICE = "nncodec: compiling kernels for first use"


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NNCODEC_CACHE_DIR", "NUMBA_CACHE_DIR", "NNCODEC_QUIET", "NNCODEC_JIT", "NUMBA_DISABLE_JIT")}
    env.update(extra)
    return env


def _package_cache_files() -> dict:
    """Numba index and data files under the package's kernels/__pycache__, with their mtimes."""
    if not PACKAGE_PYCACHE.is_dir():
        return {}
    return {p.name: p.stat().st_mtime_ns for p in PACKAGE_PYCACHE.iterdir() if p.suffix in (".nbi", ".nbc")}


# ------------------------------------------------------------ resolution rules


def test_tag_names_nncodec_python_and_numba_versions():
    import numba

    tag = kernels._tag()
    assert tag == (f"nncodec-{nncodec.__version__}-py{sys.version_info[0]}{sys.version_info[1]}"
                   f"-numba{numba.__version__}")


def test_nncodec_cache_dir_wins_and_gets_the_tag(tmp_path):
    env = {"NNCODEC_CACHE_DIR": str(tmp_path / "mine"), "NUMBA_CACHE_DIR": str(tmp_path / "numba"),
           "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    first = kernels.candidates(env)[0]
    assert first == ("NNCODEC_CACHE_DIR", str(tmp_path / "mine" / kernels._tag()))


def test_an_explicit_numba_cache_dir_is_respected_as_given(tmp_path):
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "numba"), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    assert kernels.candidates(env)[0] == ("NUMBA_CACHE_DIR", str(tmp_path / "numba"))


def test_xdg_cache_home_then_home(tmp_path, monkeypatch):
    tag = kernels._tag()
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    assert kernels.candidates(env)[0] == ("XDG_CACHE_HOME", str(tmp_path / "xdg" / "nncodec" / "numba" / tag))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    home = str(tmp_path / "home" / ".cache" / "nncodec" / "numba" / tag)
    assert kernels.candidates({})[0] == ("home", home)
    # the XDG base directory spec: a relative XDG_CACHE_HOME is invalid and ignored
    assert kernels.candidates({"XDG_CACHE_HOME": "relative/cache"})[0] == ("home", home)


def test_a_temporary_folder_is_always_the_last_resort(tmp_path):
    for env in ({}, {"NNCODEC_CACHE_DIR": str(tmp_path)}, {"NUMBA_CACHE_DIR": str(tmp_path)}):
        source, path = kernels.candidates(env)[-1]
        assert source == "temp"
        assert path.endswith(kernels._tag()) and "nncodec-" in path


def test_no_candidate_is_inside_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    package = str(Path(nncodec.__file__).resolve().parent)
    for _, path in kernels.candidates({}):
        assert not os.path.abspath(path).startswith(package)


def test_this_process_caches_outside_the_package():
    from numba.core import config

    from nncodec.kernels import huffman_jit  # noqa: F401  (configures the cache)

    assert config.CACHE_DIR == kernels.cache_dir()
    assert not os.path.abspath(kernels.cache_dir()).startswith(str(Path(nncodec.__file__).resolve().parent))


def test_an_unwritable_cache_dir_falls_back_without_failing(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")  # a folder cannot be created under a regular file, not even by root
    code = ("from nncodec import kernels; from nncodec.kernels import huffman_jit; "
            "from numba.core import config; print(kernels.cache_dir()); print(config.CACHE_DIR)")
    r = subprocess.run([sys.executable, "-c", code], env=_env(NNCODEC_CACHE_DIR=str(blocker / "cache")),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    chosen, numba_dir = r.stdout.split()
    assert chosen == numba_dir
    assert not chosen.startswith(str(blocker))
    assert os.path.isdir(chosen)


# ------------------------------------------------------ a real run, end to end


def _cli_with_tty_stderr(args, env, cwd) -> tuple[int, str]:
    """Run ``python -m nncodec ARGS`` with stderr on a pseudo-terminal; return (exit status, stderr text)."""
    pty = pytest.importorskip("pty")
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "nncodec", *args], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=slave, env=env, cwd=cwd)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        rc = proc.wait(timeout=300)
    finally:
        os.close(master)
    return rc, b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="nothing is compiled without the JIT")
def test_cold_run_caches_in_the_given_folder_and_says_so_once(tmp_path):
    cache = tmp_path / "cache"
    env = _env(NNCODEC_CACHE_DIR=str(cache), NNCODEC_JIT="always")  # compile even for this small file
    before = _package_cache_files()
    nnc, back = tmp_path / "p.nnc", tmp_path / "p.pt"

    rc, err = _cli_with_tty_stderr(["encode", str(FIXTURE), str(nnc)], env, tmp_path)
    assert rc == 0, err
    assert err.count(NOTICE) == 1, err
    where = cache / kernels._tag()
    assert f"(cached in {where})" in err

    index = sorted(p.name for p in where.rglob("*.nbi"))
    assert any(name.startswith("huffman_jit.") for name in index), index
    assert list(where.rglob("*.nbc"))

    rc, err = _cli_with_tty_stderr(["encode", str(FIXTURE), str(tmp_path / "again.nnc")], env, tmp_path)
    assert rc == 0, err
    assert NOTICE not in err  # warm: every kernel it needs is in the cache
    assert (tmp_path / "again.nnc").read_bytes() == nnc.read_bytes()

    rc, err = _cli_with_tty_stderr(["decode", str(nnc), str(back)], env, tmp_path)
    assert rc == 0, err
    assert err.count(NOTICE) <= 1
    rc, err = _cli_with_tty_stderr(["decode", str(nnc), str(tmp_path / "again.pt")], env, tmp_path)
    assert rc == 0, err
    assert NOTICE not in err

    import numpy as np

    from nncodec.io import read_checkpoint

    a, b = read_checkpoint(str(FIXTURE)), read_checkpoint(str(back))
    assert a.names() == b.names() and a.names()
    for name in a.names():
        x, y = a.get(name), b.get(name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert np.ascontiguousarray(x).tobytes() == np.ascontiguousarray(y).tobytes(), name

    # nothing was written under the package, whatever was there before
    assert _package_cache_files() == before


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="nothing is compiled without the JIT")
def test_the_notice_is_silenced_by_nncodec_quiet(tmp_path):
    env = _env(NNCODEC_CACHE_DIR=str(tmp_path / "cache"), NNCODEC_QUIET="1", NNCODEC_JIT="always")
    golden = ROOT / "tests" / "golden" / "huffman_v1.nnc"  # planes and Huffman blocks: kernels to compile
    rc, err = _cli_with_tty_stderr(["decode", str(golden), str(tmp_path / "out.npz")], env, tmp_path)
    assert rc == 0, err
    assert NOTICE not in err
    assert list((tmp_path / "cache").rglob("*.nbi"))  # it did compile


def test_the_notice_is_not_written_to_a_pipe(tmp_path):
    env = _env(NNCODEC_CACHE_DIR=str(tmp_path / "cache"), NNCODEC_JIT="always")
    r = subprocess.run([sys.executable, "-m", "nncodec", "encode", str(FIXTURE), str(tmp_path / "p.nnc")],
                       env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert NOTICE not in r.stderr


# ------------------------------------------------- small calls need no compiler


def test_a_small_file_compiles_nothing(tmp_path):
    """README's quick start file encodes and decodes without importing Numba at all."""
    cache = tmp_path / "cache"
    code = (
        "import sys, nncodec\n"
        f"nncodec.encode_file({str(FIXTURE)!r}, {str(tmp_path / 'p.nnc')!r})\n"
        f"nncodec.decode_file({str(tmp_path / 'p.nnc')!r}, {str(tmp_path / 'p.pt')!r})\n"
        "print('numba' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], env=_env(NNCODEC_CACHE_DIR=str(cache)), cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False"]
    assert not list(cache.rglob("*.nbi"))
    golden = ROOT / "tests" / "golden" / "huffman_v1.nnc"
    assert golden.exists()


def test_bad_nncodec_jit_value_is_named(monkeypatch):
    from nncodec.kernels import huffman

    monkeypatch.setenv("NNCODEC_JIT", "sometimes")
    with pytest.raises(nncodec.UsageError, match="NNCODEC_JIT='sometimes': set it to auto, always or never"):
        huffman.histogram4(np.zeros(8, np.uint8), np.array([0, 2, 4, 6, 8]))


# The NumPy versions of the kernels must give the compiled kernels' results bit for bit,
# on valid input and, for the decoders, on damaged streams too (status and bit positions).

@contextlib.contextmanager
def _jit_mode(mode):
    """NNCODEC_JIT set to ``mode`` within the block, as it was after it."""
    old = os.environ.get("NNCODEC_JIT")
    os.environ["NNCODEC_JIT"] = mode
    try:
        yield
    finally:
        if old is None:
            del os.environ["NNCODEC_JIT"]
        else:
            os.environ["NNCODEC_JIT"] = old


def _skewed(rng, n, p):
    return np.minimum(rng.geometric(p, n) - 1, 255).astype(np.uint8)


@pytest.mark.parametrize("w,dt", [(1, np.uint8), (2, np.uint16), (4, np.uint32), (8, np.uint64)])
@pytest.mark.parametrize("transform", [0, 1, 2])
@pytest.mark.parametrize("n", [0, 1, 5, 1000])
def test_planes_split_and_merge_agree(w, dt, transform, n):
    from nncodec.kernels import huffman as k

    x = np.random.default_rng(n + w).integers(0, np.iinfo(dt).max, n, dtype=dt, endpoint=True)

    def run():
        planes = np.zeros((w, n), np.uint8)
        getattr(k, f"split{w}")(x, transform, planes)
        back = np.zeros(n, dt)
        srcs = [planes[p].copy() for p in range(w)]
        for s_ in srcs:
            s_.flags.writeable = False
        getattr(k, f"merge{w}")(*srcs, transform, back)
        return planes, back

    with _jit_mode("never"):
        pa, ba = run()
    with _jit_mode("always"):
        pb, bb = run()
    assert np.array_equal(pa, pb)
    assert np.array_equal(ba, bb) and np.array_equal(ba, x)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 3000), p=st.floats(0.02, 0.95), seed=st.integers(0, 2**32 - 1))
def test_histograms_and_code_lengths_agree(n, p, seed):
    from nncodec.kernels import huffman as k

    rng = np.random.default_rng(seed)
    data, ctx = _skewed(rng, n, p), _skewed(rng, n, 0.5)
    b = hf.segment_bounds(n)
    counts = rng.integers(0, 50, 256).astype(np.int64) * (rng.random(256) < p)
    results = []
    for mode in ("never", "always"):
        with _jit_mode(mode):
            results.append((k.histogram4(data, b), k.context_histogram4(data, ctx, b), k.package_merge(counts, 12),
                            k.package_merge(np.bincount(data, minlength=256).astype(np.int64), 12)))
    for a, c in zip(*results):
        assert a.dtype == c.dtype and np.array_equal(a, c)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 40000), p=st.floats(0.05, 0.95), seed=st.integers(0, 2**32 - 1),
       damage=st.integers(0, 3))
def test_block_coders_agree_on_good_and_damaged_blocks(n, p, seed, damage):
    from nncodec.kernels import huffman as k

    rng = np.random.default_rng(seed)
    data, ctx = _skewed(rng, n, p), _skewed(rng, n, 0.6)
    blocks = []
    for mode in ("never", "always"):
        with _jit_mode(mode):
            plan = hf.plan_block(data)
            out = np.zeros(plan.size + 64, np.uint8)
            end = hf.write_block(data, plan, out, 0)
            cplan = hf.plan_context(data, ctx)
            cout = np.zeros(cplan.size + 64, np.uint8)
            cend = hf.write_context_block(data, ctx, cplan, cout, 0)
            blocks.append((out[:end].tobytes(), cout[:cend].tobytes()))
    assert blocks[0] == blocks[1]  # the same bytes from either

    # the raw decoders on every stream layout, with random bytes over the bitstreams (damage > 0)
    single = hf.decode_table(hf.code_lengths(np.bincount(data, minlength=256)))
    if np.count_nonzero(single & 15) == 0:
        return
    body = bytearray(blocks[0][0])
    if damage:
        for i in rng.integers(len(body) // 2, len(body), damage * 4):
            body[i] = int(rng.integers(0, 256))
    q = len(body) // 4
    sb = np.array([0, q // 2, q, 2 * q, len(body)], np.int64) if damage else None
    if sb is None:
        sb = np.array([0, len(body) // 4, len(body) // 2, 3 * len(body) // 4, len(body)], np.int64)
    buf = np.frombuffer(bytes(body) + bytes(8), np.uint8)
    bounds = hf.segment_bounds(n)
    mtable, _ = k.jit_module().multi_table(single)
    tables = np.concatenate([single, single])
    cmap = (np.arange(256) & 1).astype(np.uint8)
    for name, args in (("decode4", (buf, sb, single)), ("decode4_multi", (buf, sb, single, mtable)),
                       ("decode4_context", (buf, sb, tables, cmap, ctx))):
        got = []
        for mode in ("never", "always"):
            with _jit_mode(mode):
                o, bp = np.zeros(n, np.uint8), np.full(4, -7, np.int64)
                status = getattr(k, name)(*args, o, bounds, bp)
                got.append((status, bp.tolist(), o.tobytes() if status < 0 else None))
        assert got[0] == got[1], name
    for mode in ("never", "always"):
        with _jit_mode(mode):
            t, mean = k.multi_table(single)
            got.append((t.tobytes(), mean))
    assert got[-2] == got[-1]


def test_loading_kernels_does_not_import_scipy_linalg_and_user_blas_still_works():
    pytest.importorskip("scipy")
    code = (
        "import sys, numpy as np, numba, nncodec\n"
        "a = np.random.default_rng(0).standard_normal((600, 600)).astype(np.float32)\n"
        "assert np.array_equal(nncodec.decode_bytes(nncodec.encode_tensors({'a': a}))['a'], a)\n"
        "assert 'numba.np.arraymath' in sys.modules\n"
        "assert 'scipy.linalg' not in sys.modules, 'the kernels pulled in scipy.linalg'\n"
        "@numba.njit\n"
        "def dot(x, y):\n"
        "    return np.dot(x, y)\n"
        "assert dot(np.ones(3), np.ones(3)) == 3.0  # numba's own BLAS check is back for user code\n"
        "print('ok')\n"
    )
    env = dict(os.environ, NNCODEC_JIT="always")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
