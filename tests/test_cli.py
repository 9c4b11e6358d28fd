"""The nncodec command line: exit codes, one-line errors, atomic outputs, a light --help."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import nncodec
from nncodec.cli import main
from nncodec.io import Checkpoint, read_checkpoint, write_checkpoint

from helpers import assert_same, sample


@pytest.fixture
def ckpt(tmp_path):
    p = tmp_path / "model.npz"
    t = {"conv.weight": sample("float32", (16, 3, 3, 3)), "conv.bias": sample("float32", (16,)),
         "steps": np.array(7, np.int64)}
    write_checkpoint(p, Checkpoint(tensors=t), "npz")
    return p, t


def test_encode_info_decode(ckpt, tmp_path, capsys):
    p, t = ckpt
    nnc = tmp_path / "model.nnc"
    assert main(["encode", str(p), str(nnc), "--metadata", "run=7"]) == 0
    assert "tensors" in capsys.readouterr().out
    assert main(["info", str(nnc)]) == 0
    out = capsys.readouterr().out
    assert "conv.weight" in out and "bits/value" in out and "run=7" in out
    assert main(["info", "--json", str(nnc)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in info["tensors"]] == list(t)
    assert info["metadata"]["run"] == "7"
    row = info["tensors"][0]
    assert row["raw_bytes"] == t["conv.weight"].nbytes and 0 < row["ratio"] <= 1
    back = tmp_path / "back.npz"
    assert main(["decode", str(nnc), str(back), "-q"]) == 0
    assert capsys.readouterr().out == ""
    ck = read_checkpoint(back)
    for n, a in t.items():
        assert_same(ck.tensors[n], a)


def test_errors_are_one_line_with_exit_codes(ckpt, tmp_path, capsys):
    p, _ = ckpt
    # a checkpoint given where a .nnc file is needed is the wrong kind of input: usage (2), as from every command
    assert main(["decode", str(p), str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not an nncodec file" in err and "Traceback" not in err
    assert main(["encode", str(tmp_path / "missing.pt"), str(tmp_path / "o.nnc")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["encode", str(p), str(tmp_path / "o.nnc"), "--metadata", "novalue"]) == 2
    assert not (tmp_path / "o.nnc").exists()
    with pytest.raises(SystemExit) as e:
        main(["encode", "--bogus-flag", "a", "b"])
    assert e.value.code == 2


def test_debug_shows_traceback(ckpt, tmp_path):
    p, _ = ckpt
    with pytest.raises(nncodec.FormatError):
        main(["--debug", "decode", str(p), str(tmp_path / "x.npz")])


def test_corrupt_input_names_tensor_and_keeps_output(ckpt, tmp_path, capsys):
    p, _ = ckpt
    nnc = tmp_path / "m.nnc"
    main(["encode", "-q", str(p), str(nnc)])
    with nncodec.open(nnc) as r:
        off = r._tensors["conv.weight"]
    raw = bytearray(nnc.read_bytes())
    raw[off + 150] ^= 4
    nnc.write_bytes(raw)
    out = tmp_path / "out.npz"
    assert main(["decode", str(nnc), str(out)]) == 1
    err = capsys.readouterr().err
    assert "conv.weight" in err and "checksum" in err
    assert not out.exists()


def test_salvage_truncated(ckpt, tmp_path):
    p, t = ckpt
    nnc = tmp_path / "m.nnc"
    main(["encode", "-q", str(p), str(nnc)])
    with nncodec.open(nnc) as r:
        off = r._tensors["steps"]
    nnc.write_bytes(nnc.read_bytes()[: off + 10])
    out = tmp_path / "salvaged.npz"
    assert main(["decode", "-q", str(nnc), str(out)]) == 1
    assert main(["decode", "-q", "--salvage", str(nnc), str(out)]) == 0
    ck = read_checkpoint(out)
    assert list(ck.tensors) == ["conv.weight", "conv.bias"]


def test_help_imports_nothing_heavy():
    r = subprocess.run([sys.executable, "-c",
                        "import sys; from nncodec.cli import main\n"
                        "try:\n    main(['--help'])\nexcept SystemExit: pass\n"
                        "print(sorted(m for m in ('numba', 'numpy', 'torch', 'zstandard') if m in sys.modules))"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"  # --help loads no numpy, numba, torch or zstandard


def test_diff_and_patch(tmp_path, capsys):
    rng = np.random.default_rng(3)
    base = {"w": (rng.standard_normal((64, 32)) * 0.05).astype(np.float32), "b": sample("float32", (32,)),
            "n": np.array(3, np.int64)}
    new = {k: (v + (rng.standard_normal(v.shape) * 0.01).astype(v.dtype)) if v.dtype == np.float32 else v + 1
           for k, v in base.items()}
    for name, t in (("base", base), ("new", new), ("other", {**new, "w": new["w"] * 2})):
        write_checkpoint(tmp_path / f"{name}.npz", Checkpoint(tensors=t), "npz")
    upd, out = tmp_path / "u.nnc", tmp_path / "out.npz"
    assert main(["diff", "-q", str(tmp_path / "base.npz"), str(tmp_path / "new.npz"), str(upd)]) == 0
    assert main(["patch", "-q", str(tmp_path / "base.npz"), str(upd), str(out)]) == 0
    got = read_checkpoint(out).tensors
    for k, v in new.items():
        assert_same(got[k], v)  # lossless by default: bit-exact
    lossy = tmp_path / "l.nnc"
    assert main(["diff", "-q", str(tmp_path / "base.npz"), str(tmp_path / "new.npz"), str(lossy),
                 "--quantizer", "scalar", "--rel-step", "1"]) == 0
    assert lossy.stat().st_size < upd.stat().st_size
    capsys.readouterr()
    assert main(["patch", str(tmp_path / "other.npz"), str(lossy), str(tmp_path / "x.npz")]) == 1
    assert "base" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()


def test_salvage_of_a_torch_checkpoint_to_pt_writes_what_was_recovered(tmp_path):
    src = os.path.join(os.path.dirname(__file__), "fixtures", "mtcnn_pnet.pt")
    nnc = tmp_path / "p.nnc"
    assert main(["encode", "-q", src, str(nnc)]) == 0
    with nncodec.open(nnc) as r:
        names = list(r._tensors)
        off = r._tensors[names[3]]
    nnc.write_bytes(nnc.read_bytes()[: off + 10])
    out = tmp_path / "salvaged.pt"
    assert main(["decode", "-q", "--salvage", str(nnc), str(out)]) == 0
    ck = read_checkpoint(out)
    assert list(ck.tensors) == names[:3]
    whole = read_checkpoint(src)
    for n in names[:3]:
        assert ck.tensors[n].tobytes() == whole.tensors[n].tobytes()
