"""The io registry: every format detected and round-tripped through the table; load_any; compare's "(all)" row."""

import os

import numpy as np
import pytest

import nncodec
from nncodec import io as nio
from nncodec.compare import compare
from nncodec.errors import UsageError

from helpers import assert_same


def _ck():
    return nio.Checkpoint(tensors={"w": np.arange(12, dtype=np.float32).reshape(3, 4), "n": np.array([7], np.int64)})


@pytest.mark.parametrize("row", [r for r in nio.TABLE if r.writable], ids=lambda r: r.name)
def test_every_writable_format_is_detected_and_round_trips(tmp_path, row):
    path = tmp_path / f"ck{row.extensions[0] if row.extensions else '.pt'}"
    nio.write_checkpoint(path, _ck(), row.name)
    assert nio.detect_format(path) == row.name
    back = nio.load_any(path)
    for name, a in _ck().tensors.items():
        assert_same(back.tensors[name], a)
    for ext in row.extensions:
        assert nio.format_from_extension("x" + ext.upper()) == row.name


def test_table_names_match_formats():
    assert sorted(r.name for r in nio.TABLE) == sorted(nio.FORMATS)
    assert "nnc" not in nio.CHECKPOINT_FORMATS
    with pytest.raises(UsageError):
        nio.write_checkpoint("x.nnc", _ck(), "nnc")
    with pytest.raises(UsageError):
        nio.read_checkpoint("x.nnc", format="nnc")


def test_load_any_reads_nnc_with_aliases_and_metadata(tmp_path):
    src = tmp_path / "a.safetensors"
    nio.write_checkpoint(src, _ck(), "safetensors")
    out = tmp_path / "a.nnc"
    w = np.ones((2, 2), np.float32)
    out.write_bytes(nncodec.encode_tensors({"w": w, "tied": w}, metadata={"k": "v"}))
    assert nio.detect_format(out) == "nnc"
    ck = nio.load_any(out)
    assert ck.format == "nnc" and ck.aliases == {"tied": "w"} and ck.metadata.get("k") == "v"
    assert_same(ck.get("tied"), w)
    with pytest.raises(UsageError, match="no such file"):
        nio.load_any(tmp_path / "missing.nnc")


def test_safetensors_header_with_leading_whitespace_is_detected(tmp_path):
    import json
    import struct

    head = b"  " + json.dumps({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    p = tmp_path / "ws.safetensors"
    p.write_bytes(struct.pack("<Q", len(head)) + head + b"\0\0\0\0")
    assert nio.detect_format(p) == "safetensors"


def test_compare_overall_counts_only_float_tensors(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal(1000).astype(np.float32)
    a = {"w": w, "num_batches_tracked": np.array([10**6], np.int64)}
    b = {"w": w + np.float32(0.1), "num_batches_tracked": np.array([10**6], np.int64)}
    pa, pb = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    nio.write_checkpoint(pa, nio.Checkpoint(tensors=a), "safetensors")
    nio.write_checkpoint(pb, nio.Checkpoint(tensors=b), "safetensors")
    diffs, overall, _, _ = compare(pa, pb)
    wdiff = next(d for d in diffs if d.name == "w")
    # the int counter's 1e12 of "signal" would lift the overall SNR far above the weight's
    assert overall.snr_db == pytest.approx(wdiff.snr_db)
    assert overall.snr_db < 40 and not overall.exact


@pytest.mark.parametrize("header_len", [0x280, 0x380, 0x480, 0x580])
def test_a_safetensors_header_length_that_looks_like_a_pickle_is_still_safetensors(tmp_path, header_len):
    import json

    from nncodec.io import detect_format, read_checkpoint

    entry = {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}
    body = json.dumps(entry).encode()
    head = body + b" " * (header_len - len(body))  # padded to the length under test
    p = tmp_path / "w.safetensors"
    p.write_bytes(header_len.to_bytes(8, "little") + head + np.arange(4, dtype="<f4").tobytes())
    assert p.read_bytes()[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
    assert detect_format(p) == "safetensors"
    assert read_checkpoint(p).tensors["w"].tolist() == [0.0, 1.0, 2.0, 3.0]
