"""Golden files pin the bytes of every codec id and format version.

tests/golden/<case>.nnc was written once by tools/make_golden.py; this test never
writes it. Every file must still decode to <case>.npz bit-exactly, and re-encoding
each tensor with the pipeline stored in the file must give the same payload bytes.
"""

import glob
import io
import os

import pytest

import nncodec
from nncodec.api import _tensor_spec
from nncodec.format import container as C
from nncodec.format.constants import DEFAULT_LIMITS, KIND_TENSOR
from nncodec.io import read_checkpoint

from helpers import assert_same

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
FILES = sorted(glob.glob(os.path.join(GOLDEN, "*.nnc")))


def test_golden_files_exist():
    ids = set()
    for f in FILES:
        with nncodec.open(f) as r:
            for n in r.keys():
                ids.update(s.codec_id for s in r.info(n).pipeline.stages)
    from nncodec.codecs import builtin_codec_ids

    missing = set(builtin_codec_ids()) - ids
    assert not missing, f"codec ids without a golden file: {sorted(missing)}; run tools/make_golden.py"


@pytest.mark.parametrize("path", FILES, ids=[os.path.basename(f) for f in FILES])
def test_golden_decodes(path):
    expected = read_checkpoint(path[:-4] + ".npz").tensors
    with nncodec.open(path) as r:
        assert r.keys() == list(expected)
        for n in r.keys():
            assert_same(r[n], expected[n])
    streamed = nncodec.decode_bytes(open(path, "rb").read())
    for n, a in expected.items():
        assert_same(streamed[n], a)


@pytest.mark.parametrize("path", FILES, ids=[os.path.basename(f) for f in FILES])
def test_golden_reencodes_to_same_bytes(path):
    expected = read_checkpoint(path[:-4] + ".npz").tensors
    data = open(path, "rb").read()
    src = C.Source(data, pos=16, what=path)
    while True:
        rec = C.read_record(src, DEFAULT_LIMITS)
        if rec.kind != KIND_TENSOR:
            if rec.kind == ord("I"):
                break
            continue
        name, spec, pipe = _tensor_spec(rec.header, DEFAULT_LIMITS, path)
        payload = pipe.encode(expected[name], nncodec.api.Context(name=name))
        assert payload == bytes(rec.payload), f"{os.path.basename(path)}: tensor {name!r} encodes differently"
