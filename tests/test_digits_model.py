"""The digits LeNet-5 fixture: the accuracy check behind nncodec's lossy benchmarks.

tests/fixtures/digits_lenet5.safetensors was written once by
``python tools/digits_model.py train``; its .json records the test accuracy.
These tests never rewrite it.
"""

import importlib.util
import json
import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "digits_lenet5.safetensors")
RECORD = os.path.join(ROOT, "tests", "fixtures", "digits_lenet5.json")


def _tool(relpath, name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, relpath))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def dm():
    return _tool("tools/digits_model.py", "digits_model")


@pytest.fixture(scope="module")
def record():
    with open(RECORD) as f:
        return json.load(f)


def test_fixture_is_small_float32_and_reads_without_torch(dm):
    assert os.path.getsize(FIXTURE) < 200 * 1024
    pytest.importorskip("safetensors")
    sd = dm.load_fixture()
    assert set(sd) == set(dm.SHAPES)
    for name, shape in dm.SHAPES.items():
        assert sd[name].shape == shape, name
        assert sd[name].dtype == np.float32, name
        assert np.isfinite(sd[name]).all(), name


def test_nncodec_reader_agrees_with_safetensors(dm):
    pytest.importorskip("safetensors")
    from nncodec.io import read_checkpoint

    ck = read_checkpoint(FIXTURE)
    sd = dm.load_fixture()
    assert set(ck.tensors) == set(sd)
    for k in sd:
        np.testing.assert_array_equal(np.asarray(ck.tensors[k]), sd[k])


def test_fixture_reproduces_recorded_accuracy(dm, record):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    correct, total = dm.evaluate_counts(dm.load_fixture())
    assert (correct, total) == (record["test_correct"], record["test_total"])
    assert correct / total == record["test_accuracy"]
    assert correct / total > 0.9  # chance is 0.1


def test_evaluate_is_deterministic_and_accepts_other_dtypes(dm):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    sd = dm.load_fixture()
    a = dm.evaluate(sd)
    assert dm.evaluate(sd) == a
    # a float16 copy (a decoded lossy checkpoint may come back in another dtype) still evaluates
    half = {k: v.astype(np.float16) for k, v in sd.items()}
    assert abs(dm.evaluate(half) - a) <= 0.01


def test_evaluate_rejects_a_wrong_checkpoint(dm):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    sd = dm.load_fixture()
    bad = dict(sd)
    del bad["fc3.bias"]
    with pytest.raises(ValueError, match="fc3.bias"):
        dm.evaluate(bad)
    bad = dict(sd, **{"fc1.weight": sd["fc1.weight"].T})
    with pytest.raises(ValueError, match="fc1.weight"):
        dm.evaluate(bad)


def test_destroyed_weights_fall_to_chance(dm):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    sd = {k: np.zeros_like(v) for k, v in dm.load_fixture().items()}
    assert dm.evaluate(sd) < 0.2


def test_gguf_q8_0_keeps_the_accuracy(dm, record):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    pytest.importorskip("gguf")
    g = _tool("tools/peers/gguf_runner.py", "gguf_runner")
    sd = dm.load_fixture()
    rec, nbytes, info = g.quantize_dict(sd, "Q8_0")
    # 2-D+ tensors padded to whole 32-value blocks of 34 bytes, 1-D ones kept float32
    expect = sum(-(-v.size // 32) * 34 if v.ndim >= 2 else 4 * v.size for v in sd.values())
    assert nbytes == expect
    assert abs(dm.evaluate(rec) - record["test_accuracy"]) <= 0.01


def test_gguf_padding_of_ragged_tensors():
    pytest.importorskip("gguf")
    g = _tool("tools/peers/gguf_runner.py", "gguf_runner")
    x = np.random.default_rng(0).standard_normal((10, 7)).astype(np.float32)  # 70 values: 3 blocks
    for t, bpb in (("Q4_0", 18), ("Q4_1", 20), ("Q5_0", 22), ("Q5_1", 24), ("Q8_0", 34)):
        y, nb = g.quantize_dequantize(x, t)
        assert y.shape == x.shape and y.dtype == np.float32
        assert nb == 3 * bpb
        assert np.max(np.abs(y - x)) < 0.5
        y, nb = g.quantize_dequantize(x, t, layout="rows")  # 10 rows of 7 -> 10 blocks
        assert y.shape == x.shape and nb == 10 * bpb
    assert g.bits_per_weight("Q4_0") == 4.5
