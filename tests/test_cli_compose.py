"""The command line composes: `-` for stdin/stdout, quiet closed pipes, --json on every command,
one exit-code table, errors that name the fix. Each test runs the real CLI in a subprocess."""

import json
import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nncodec.cli import EXIT_CODES, EXIT_DATA, EXIT_PIPE, EXIT_SYSTEM, EXIT_UNSUPPORTED, EXIT_USAGE, exit_code
from nncodec.io import Checkpoint, read_checkpoint, write_checkpoint

FIXTURES = Path(__file__).parent / "fixtures"
PT = FIXTURES / "mtcnn_pnet.pt"  # 28 KB, legacy torch format
ST = FIXTURES / "digits_lenet5.safetensors"
CMD = [sys.executable, "-m", "nncodec"]
ENV = {**os.environ, "NNCODEC_QUIET": "1"}


def run(*args, stdin=None, cwd=None, **kw):
    """``python -m nncodec ARGS``; ``stdin`` is bytes or an open file."""
    feed = {"input": stdin} if isinstance(stdin, bytes) else {"stdin": stdin if stdin is not None else subprocess.DEVNULL}
    return subprocess.run([*CMD, *map(str, args)], capture_output=True, cwd=cwd, env=ENV, timeout=120, **feed, **kw)


def sh(script, cwd):
    """A bash pipeline; ``$NN`` runs nncodec."""
    env = {**ENV, "NN": " ".join(CMD)}
    return subprocess.run(["bash", "-c", script], capture_output=True, cwd=cwd, env=env, timeout=120)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Shared inputs: the fixtures encoded, an update, a truncated and a corrupt .nnc, odd files."""
    d = tmp_path_factory.mktemp("compose")
    shutil.copy(PT, d / "pnet.pt")
    shutil.copy(ST, d / "digits.safetensors")
    assert run("encode", "-q", "pnet.pt", "pnet.nnc", cwd=d).returncode == 0
    assert run("encode", "-q", "digits.safetensors", "digits.nnc", cwd=d).returncode == 0
    t = read_checkpoint(d / "digits.safetensors").tensors
    new = {k: (v + np.float32(0.01)).astype(v.dtype) if v.dtype == np.float32 else v for k, v in t.items()}
    write_checkpoint(d / "new.safetensors", Checkpoint(tensors=new), "safetensors")
    assert run("diff", "-q", "digits.safetensors", "new.safetensors", "upd.nnc", cwd=d).returncode == 0
    raw = (d / "pnet.nnc").read_bytes()
    (d / "cut.nnc").write_bytes(raw[: len(raw) // 3])
    bad = bytearray(raw)
    bad[len(raw) // 2] ^= 0x10
    (d / "flip.nnc").write_bytes(bad)
    (d / "junk.bin").write_bytes(b"hello, these are not weights\n" * 4)
    (d / "empty.nnc").write_bytes(b"")
    from nncodec.format.container import crc32

    head = bytearray(raw[:16])
    head[8] = 2  # format 2.x: a newer nncodec wrote it
    head[12:16] = crc32(bytes(head[:12])).to_bytes(4, "little")
    (d / "future.nnc").write_bytes(bytes(head) + raw[16:])
    many = {f"layer.{i}.weight": np.full((3,), i, np.float32) for i in range(3000)}
    write_checkpoint(d / "many.safetensors", Checkpoint(tensors=many), "safetensors")
    folder = d / "model"
    folder.mkdir()
    shutil.copy(ST, folder / "model.safetensors")
    (folder / "config.json").write_text('{"model_type": "lenet"}\n')
    return d


# ----------------------------------------------------------------------------- - for stdin/stdout


def test_encode_to_stdout_equals_encode_to_file(work):
    r = run("encode", "pnet.pt", "-", cwd=work)
    assert r.returncode == 0, r.stderr
    assert r.stdout == (work / "pnet.nnc").read_bytes()
    assert b"<stdout>" in r.stderr and b"13 tensors" in r.stderr  # the summary moves to stderr
    assert not (work / "-").exists()


def test_encode_from_stdin(work):
    with open(work / "pnet.pt", "rb") as f:
        r = run("encode", "-", "-", stdin=f, cwd=work)
    assert r.returncode == 0, r.stderr
    assert r.stdout == (work / "pnet.nnc").read_bytes()
    r = run("encode", "--format", "safetensors", "-", "st.nnc", stdin=(work / "digits.safetensors").read_bytes(),
            cwd=work)
    assert r.returncode == 0, r.stderr
    assert (work / "st.nnc").read_bytes() == (work / "digits.nnc").read_bytes()
    assert b"<stdin> -> st.nnc" in r.stdout


def test_info_and_compare_read_stdin(work):
    r = run("info", "--json", "-", stdin=(work / "pnet.nnc").read_bytes(), cwd=work)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["file"] == "-" and len(doc["tensors"]) == 13 and doc["file_bytes"] == (work / "pnet.nnc").stat().st_size
    r = run("compare", "--json", "-", "pnet.pt", stdin=(work / "pnet.nnc").read_bytes(), cwd=work)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["overall"]["exact"]


def test_decode_from_stdin_and_to_stdout(work):
    r = run("decode", "-q", "-", "back.pt", stdin=(work / "pnet.nnc").read_bytes(), cwd=work)
    assert r.returncode == 0, r.stderr
    assert run("decode", "-q", "pnet.nnc", "back.safetensors", cwd=work).returncode == 0
    r = run("decode", "pnet.nnc", "-", cwd=work)  # to stdout: safetensors unless --format says otherwise
    assert r.returncode == 0, r.stderr
    assert r.stdout == (work / "back.safetensors").read_bytes()
    r = run("decode", "-q", "--format", "npz", "pnet.nnc", "-", cwd=work)
    assert r.returncode == 0 and r.stdout[:2] == b"PK" and r.stderr == b""


def test_pipeline_round_trip(work):
    r = sh("$NN encode -q pnet.pt - | $NN decode -q - - | $NN compare --json pnet.pt -", work)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["overall"]["exact"]
    r = sh("$NN diff -q digits.safetensors new.safetensors - | $NN patch -q digits.safetensors - - "
           "| $NN compare --json new.safetensors -", work)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["overall"]["exact"]


def test_dash_misuse_is_a_usage_error(work):
    r = run("compare", "-", "-", stdin=b"x", cwd=work)
    assert r.returncode == EXIT_USAGE and b"stdin can be read once" in r.stderr
    for args in (("encode", "model", "-"), ("decode", "model", "-"), ("compare", "model", "-"),
                 ("diff", "model", "-", "out"), ("patch", "-", "model", "out")):
        r = run(*args, stdin=b"", cwd=work)
        assert r.returncode == EXIT_USAGE, args
        assert b"carries one file, not a folder" in r.stderr, (args, r.stderr)
    assert not (work / "out").exists()


def _with_pty(args, cwd, stream):
    master, slave = pty.openpty()
    try:
        kw = {"stdout": slave, "stderr": subprocess.PIPE, "stdin": subprocess.DEVNULL} if stream == "stdout" else \
             {"stdin": slave, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
        return subprocess.run([*CMD, *args], cwd=cwd, env=ENV, timeout=120, **kw)
    finally:
        os.close(slave)
        os.close(master)


def test_refuses_binary_to_a_terminal(work):
    for args in (["encode", "pnet.pt", "-"], ["decode", "pnet.nnc", "-"]):
        r = _with_pty(args, work, "stdout")
        assert r.returncode == EXIT_USAGE, r.stderr
        assert b"refusing to write binary data to a terminal" in r.stderr
    r = _with_pty(["info", "-"], work, "stdin")
    assert r.returncode == EXIT_USAGE and b"stdin is a terminal" in r.stderr


# ----------------------------------------------------------------------------- closed pipes


def test_closed_pipe_ends_quietly(work):
    for script in ("$NN compare many.safetensors many.safetensors | head -1",
                   "$NN compare --json many.safetensors many.safetensors | head -1",
                   "$NN compare many.safetensors many.safetensors | true",
                   "$NN encode many.safetensors - | true"):
        r = sh(script + '; echo "rc=${PIPESTATUS[0]}" >&2', work)
        assert r.stderr.decode().strip() == f"rc={EXIT_PIPE}", (script, r.stderr)
    r = sh("$NN compare many.safetensors many.safetensors | head -1", work)
    assert r.stdout.decode().split() == ["name", "dtype", "shape", "SNR", "dB", "max", "|err|", "rel", "err"]


# ----------------------------------------------------------------------------- --json everywhere


def _json(r):
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_json_on_every_command(work, tmp_path):
    doc = _json(run("encode", "--json", work / "pnet.pt", tmp_path / "a.nnc"))
    assert doc["command"] == "encode" and doc["tensors"] == 13 and doc["lossless"] and doc["rate"] is None
    assert doc["input_format"] == "torch-legacy" and doc["output_bytes"] == (tmp_path / "a.nnc").stat().st_size
    assert doc["input_bytes"] == PT.stat().st_size and doc["seconds"] >= 0
    doc = _json(run("encode", "--json", "--bits", "4", work / "digits.safetensors", tmp_path / "l.nnc"))
    assert not doc["lossless"] and doc["rate"] == {"bits": 4.0} and doc["lossy_tensors"] > 0
    assert 2 < doc["bits_per_weight"] < 6
    doc = _json(run("decode", "--json", tmp_path / "a.nnc", tmp_path / "a.safetensors"))
    assert doc["command"] == "decode" and doc["format"] == "safetensors" and doc["tensors"] == 13
    assert doc["output_bytes"] == (tmp_path / "a.safetensors").stat().st_size
    doc = _json(run("diff", "--json", work / "digits.safetensors", work / "new.safetensors", tmp_path / "u.nnc"))
    assert doc["command"] == "diff" and doc["lossless"] and doc["tensors"] == 10
    doc = _json(run("patch", "--json", work / "digits.safetensors", tmp_path / "u.nnc", tmp_path / "n.safetensors"))
    assert doc["command"] == "patch" and doc["format"] == "safetensors" and doc["tensors"] == 10
    assert "tensors" in _json(run("info", "--json", tmp_path / "a.nnc"))
    assert _json(run("compare", "--json", work / "pnet.pt", tmp_path / "a.nnc"))["overall"]["exact"]


def test_json_on_folder_commands(work, tmp_path):
    enc, back, upd, pat = (tmp_path / n for n in ("enc", "back", "upd", "pat"))
    doc = _json(run("encode", "--json", work / "model", enc))
    assert doc["command"] == "encode" and doc["folder"] and doc["shards"] == 1 and doc["tensors"] == 10
    assert doc["files"] == 1 and doc["lossless"]
    doc = _json(run("decode", "--json", enc, back))
    assert doc["command"] == "decode" and doc["shards"] == 1 and doc["tensors"] == 10
    new = tmp_path / "new"
    shutil.copytree(work / "model", new)
    shutil.copy(work / "new.safetensors", new / "model.safetensors")
    doc = _json(run("diff", "--json", work / "model", new, upd))
    assert doc["command"] == "diff" and doc["folder"] and doc["lossless"]
    doc = _json(run("patch", "--json", work / "model", upd, pat))
    assert doc["command"] == "patch" and doc["shards"] == 1
    assert _json(run("info", "--json", enc))["total"]["tensors"] == 10
    assert _json(run("compare", "--json", new, pat))["overall"]["exact"]


def test_json_goes_to_stderr_when_the_output_is_stdout(work):
    r = run("encode", "--json", "pnet.pt", "-", cwd=work)
    assert r.returncode == 0 and r.stdout == (work / "pnet.nnc").read_bytes()
    doc = json.loads(r.stderr)
    assert doc["output"] == "-" and doc["output_bytes"] == len(r.stdout)
    r = run("decode", "--json", "-", "-", stdin=(work / "pnet.nnc").read_bytes(), cwd=work)
    assert r.returncode == 0 and r.stdout[8:10] == b'{"'  # safetensors: header length, then JSON
    assert json.loads(r.stderr)["input"] == "-"


# ----------------------------------------------------------------------------- one exit-code table


def _codes(cases, cwd):
    out = {}
    for args in cases:
        r = run(*args, cwd=cwd)
        out[" ".join(args)] = (r.returncode, r.stderr.decode())
    return out


def test_same_bad_input_same_exit_code_everywhere(work):
    table = {
        EXIT_USAGE: [  # a missing file
            ("encode", "nope.pt", "o.nnc"), ("decode", "nope.nnc", "o.pt"), ("info", "nope.nnc"),
            ("compare", "nope.pt", "pnet.pt"), ("diff", "nope.pt", "pnet.pt", "o.nnc"),
            ("patch", "nope.pt", "upd.nnc", "o.pt"), ("patch", "digits.safetensors", "nope.nnc", "o.pt")],
        EXIT_DATA: [  # a truncated .nnc file
            ("decode", "cut.nnc", "o.pt"), ("info", "cut.nnc"), ("compare", "cut.nnc", "pnet.pt"),
            ("diff", "pnet.pt", "cut.nnc", "o.nnc"), ("patch", "cut.nnc", "upd.nnc", "o.pt")],
    }
    wrong_kind = [  # bytes that are no kind nncodec reads, or the wrong kind for the command
        ("encode", "junk.bin", "o.nnc"), ("decode", "junk.bin", "o.pt"), ("info", "junk.bin"),
        ("compare", "junk.bin", "pnet.pt"), ("diff", "junk.bin", "pnet.pt", "o.nnc"),
        ("patch", "pnet.pt", "junk.bin", "o.pt"),
        ("decode", "pnet.pt", "o.pt"), ("info", "pnet.pt"), ("encode", "pnet.nnc", "o.nnc"),
        ("patch", "digits.safetensors", "digits.nnc", "o.pt"), ("patch", "digits.safetensors", "new.safetensors", "o.pt"),
        ("decode", "upd.nnc", "o.pt"), ("compare", "upd.nnc", "digits.safetensors"),
        ("diff", "upd.nnc", "digits.safetensors", "o.nnc")]
    table[EXIT_USAGE] += wrong_kind
    table[EXIT_DATA] += [  # an empty file, a flipped bit
        ("encode", "empty.nnc", "o.nnc"), ("decode", "empty.nnc", "o.pt"), ("info", "empty.nnc"),
        ("compare", "empty.nnc", "pnet.pt"), ("decode", "flip.nnc", "o.pt"), ("compare", "flip.nnc", "pnet.pt")]
    table[EXIT_UNSUPPORTED] = [("decode", "future.nnc", "o.pt"), ("info", "future.nnc"),
                               ("compare", "future.nnc", "pnet.pt")]
    for want, cases in table.items():
        for cmd, (code, err) in _codes(cases, work).items():
            assert code == want, f"nncodec {cmd}: exit {code}, expected {want}: {err}"
            assert err.startswith("nncodec: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (work / "o.nnc").exists() and not (work / "o.pt").exists()


def test_exit_code_mapping():
    import errno

    import nncodec

    assert exit_code(nncodec.UsageError("x")) == exit_code(nncodec.FormatError("x")) == EXIT_USAGE
    for e in (nncodec.CorruptError("x"), nncodec.TruncatedError("x"), nncodec.LimitError("x"),
              nncodec.UnsafePickleError("x"), nncodec.BaseMismatchError("x")):
        assert exit_code(e) == EXIT_DATA
    assert exit_code(nncodec.UnsupportedError("x")) == EXIT_UNSUPPORTED
    assert exit_code(FileNotFoundError(errno.ENOENT, "gone")) == EXIT_USAGE
    assert exit_code(OSError(errno.ENOSPC, "disk full")) == exit_code(MemoryError()) == EXIT_SYSTEM
    assert exit_code(BrokenPipeError()) == EXIT_PIPE
    assert [c for c, _ in EXIT_CODES] == [0, 1, 2, 3, 4, 130, 141]


def test_argparse_errors_are_usage_errors(work):
    for args in (("encode",), ("decode", "--bogus", "a", "b"), ("info", "--json"), ("encode", "--bits", "x", "a", "b")):
        assert run(*args, cwd=work).returncode == EXIT_USAGE


# ----------------------------------------------------------------------------- errors that name the fix


def test_hints(work):
    r = run("info", "digits.safetensors", cwd=work)
    assert b"not an nncodec file" in r.stderr and b"nncodec encode digits.safetensors" in r.stderr
    r = run("decode", "pnet.pt", "o.safetensors", cwd=work)
    assert b"nncodec encode" in r.stderr and b"nncodec compare" in r.stderr
    r = run("patch", "digits.safetensors", "new.safetensors", "o.pt", cwd=work)
    assert b"not an nncodec update" in r.stderr and b"nncodec compare" in r.stderr and b"nncodec diff" in r.stderr
    r = run("decode", "upd.nnc", "o.pt", cwd=work)
    assert b"nncodec patch BASE upd.nnc OUT" in r.stderr
    for args in (("info", "cut.nnc"), ("decode", "cut.nnc", "o.pt"), ("compare", "pnet.pt", "cut.nnc"),
                 ("decode", "flip.nnc", "o.pt"), ("diff", "pnet.pt", "cut.nnc", "o.nnc")):
        r = run(*args, cwd=work)
        assert b"--salvage" in r.stderr, (args, r.stderr)
    r = run("compare", "-", "pnet.pt", stdin=(work / "cut.nnc").read_bytes(), cwd=work)
    assert b"<stdin>" in r.stderr and b"--salvage" in r.stderr and str(work).encode() not in r.stderr
    assert b"nncodec-" not in r.stderr  # no temporary path
    assert run("decode", "-q", "--salvage", "cut.nnc", "salvaged.safetensors", cwd=work).returncode == 0
    r = run("compare", "pnet.pt", "digits.safetensors", cwd=work)
    assert r.returncode == 0 and b"no tensor name in common" in r.stderr


def test_pattern_that_matches_nothing_warns(work, tmp_path):
    r = run("encode", "--step", "0.01", "--keep", "nomatch*", "--lossy", "conv*.weight", "--lossy", "*.nothing",
            "pnet.pt", tmp_path / "k.nnc", cwd=work)
    assert r.returncode == 0, r.stderr
    err = r.stderr.decode()
    assert "warning: --keep 'nomatch*' matches no tensor" in err
    assert "warning: --lossy '*.nothing' matches no tensor" in err
    assert "conv*.weight" not in err  # matches conv4_1.weight
    r = run("encode", "-q", "--keep", "features.*", "pnet.pt", tmp_path / "q.nnc", cwd=work)
    assert r.returncode == 0 and r.stderr == b""
    r = run("encode", "-q", "--bits", "4", "--keep", "zzz", work / "model", tmp_path / "enc")
    assert r.returncode == 0 and b"--keep 'zzz' matches no tensor" in r.stderr
