"""tools/shannon.py: differential-entropy estimate, Shannon lower bound, weight SNR."""

import importlib.util
import math
import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("shannon", os.path.join(ROOT, "tools", "shannon.py"))
shannon = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(shannon)


@pytest.mark.parametrize("sigma", [1e-3, 0.05, 1.0, 30.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gaussian_entropy_within_0_05_bit(sigma, seed):
    x = (np.random.default_rng(seed).standard_normal(100_000) * sigma).astype(np.float32)
    h = shannon.differential_entropy(x)
    assert abs(h - 0.5 * math.log2(2 * math.pi * math.e * sigma**2)) < 0.05


def test_other_densities():
    rng = np.random.default_rng(3)
    b = 0.02
    assert abs(shannon.differential_entropy(rng.laplace(0, b, 100_000)) - math.log2(2 * math.e * b)) < 0.05
    assert abs(shannon.differential_entropy(rng.uniform(-2, 2, 100_000)) - 2.0) < 0.05


def test_entropy_shifts_with_scale():
    x = np.random.default_rng(4).standard_normal(20_000)
    assert abs(shannon.differential_entropy(4 * x) - shannon.differential_entropy(x) - 2.0) < 1e-9


def test_rate_lower_bound_gaussian():
    sigma = 0.1
    x = np.random.default_rng(5).standard_normal(200_000) * sigma
    # for a Gaussian R(D) = 1/2 log2(sigma^2 / D): D = sigma^2 / 4**k needs k bits
    for k in (1, 2, 4, 8):
        assert abs(shannon.rate_lower_bound(x, sigma**2 / 4**k) - k) < 0.05
    assert shannon.rate_lower_bound(x, 10 * sigma**2) == 0.0  # clamped at zero rate
    with pytest.raises(ValueError):
        shannon.rate_lower_bound(x, 0.0)


def test_weight_snr_db():
    w = {"a": np.ones((4, 4), np.float32), "b": np.full(8, 2.0, np.float32)}
    w_hat = {"a": w["a"] + 0.1, "b": w["b"]}
    # signal 16 + 32 = 48, error 16 * 0.01 = 0.16
    expect = 10 * math.log10(48 / 0.16)
    assert abs(shannon.weight_snr_db(w, w_hat) - expect) < 1e-4
    assert abs(shannon.weight_snr_db([w["a"], w["b"]], [w_hat["a"], w_hat["b"]]) - expect) < 1e-4
    assert shannon.weight_snr_db(w["b"], w["b"]) == math.inf
    with pytest.raises(KeyError):
        shannon.weight_snr_db(w, {"a": w["a"]})


def test_atoms_are_flagged():
    x = np.random.default_rng(6).standard_normal(10_000)
    assert not shannon.has_atoms(x)
    x[:2000] = 0.0  # pruned
    assert shannon.has_atoms(x)
    assert shannon.differential_entropy(x) < shannon.differential_entropy(np.random.default_rng(6).standard_normal(10_000)) - 5


def test_lower_bound_bits_sums_tensors():
    rng = np.random.default_rng(7)
    t = {"w": rng.standard_normal((100, 100)), "b": rng.standard_normal(10)}
    d = {"w": t["w"] + rng.standard_normal((100, 100)) * 0.01, "b": t["b"]}
    r = shannon.lower_bound_bits(t, d)
    assert "bound_bits" not in r["tensors"]["b"]  # decoded exactly: no finite bound
    assert r["total_bits"] == pytest.approx(r["tensors"]["w"]["bound_bits"])
    assert 6.0 < r["tensors"]["w"]["bound_bpw"] < 7.5  # ~ log2(1 / 0.01)
