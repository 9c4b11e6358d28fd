"""nncodec.finetune: fine-tuning under a fixed compressed structure (masks, shared centroids,
straight-through quantization, frozen Bloomier layers) and writing the result to .nnc."""

import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

import nncodec  # noqa: E402
import nncodec.finetune as nt  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(prev)


def _toy(seed=0, n=256):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, generator=g)
    w = torch.randn(16, 4, generator=g)
    y = (x @ w).argmax(1)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    batches = [(x[i:i + 32], y[i:i + 32]) for i in range(0, n, 32)]
    return model, batches


def test_masks_stay_zero_after_finetuning():
    model, batches = _toy()
    cm = nt.compress_model(model, {"0.weight": nt.prune(0.7), "2.weight": nt.prune(0.5)})
    before = cm.weights()
    zeros = {k: before[k] == 0 for k in ("0.weight", "2.weight")}
    assert (before["0.weight"] == 0).sum() >= int(0.7 * 512) and (before["2.weight"] == 0).sum() >= 64
    cm.finetune(batches, F.cross_entropy, epochs=5, lr=1e-2, weight_decay=1e-3)
    after = cm.weights()
    for k, z in zeros.items():
        assert (after[k][z] == 0).all()
        assert not np.array_equal(after[k][~z], before[k][~z])  # the rest did train
    # a user's own loop over the model's parameters keeps them zero too
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for x, y in batches:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    for k, z in zeros.items():
        assert (cm.weights()[k][z] == 0).all()
    dec = nncodec.decode_bytes(cm.encode_bytes())
    for k, v in cm.weights().items():
        assert np.array_equal(dec[k], v)


def test_centroid_tying_keeps_at_most_k_values(tmp_path):
    model, batches = _toy(1)
    k = 6
    cm = nt.compress_model(model, {"*.weight": nt.cluster(k=k, sparsity=0.3)})
    cm.finetune(batches, F.cross_entropy, epochs=4, lr=5e-3)
    w = cm.weights()
    for name in ("0.weight", "2.weight"):
        vals = np.unique(w[name])
        assert vals.size <= k + 1  # k centroids and the pruned zero
        assert (w[name] == 0).sum() >= int(0.3 * w[name].size)
    # the gradient of a centroid is the sum of its members' gradients
    lin = model[0]
    plist = lin.parametrizations.weight
    idx = plist[0].idx
    model.zero_grad()
    x, y = batches[0]
    from torch.nn.utils import parametrize

    with parametrize.cached():  # the weight is computed once, so its gradient can be read
        wt = lin.weight
        wt.retain_grad()
        F.cross_entropy(model(x), y).backward()
    sums = torch.zeros(plist.original.numel() + 1).index_add_(0, idx.reshape(-1), wt.grad.reshape(-1))[1:]
    assert torch.allclose(plist.original.grad, sums, rtol=1e-5, atol=1e-7)
    blob = cm.encode_bytes()
    dec = nncodec.decode_bytes(blob)
    for name, v in cm.weights().items():
        assert np.array_equal(dec[name], v)
    with nncodec.open(_write(blob, tmp_path)) as f:
        assert f.info("0.weight").pipeline.stages[0].codec_id == "kmeans"


def _write(blob, tmp_path):
    path = tmp_path / "m.nnc"
    path.write_bytes(blob)
    return path


def test_ste_finetuning_decreases_loss_and_stays_on_the_grid():
    model, batches = _toy(2)
    step = 0.05
    cm = nt.compress_model(model, {"*": nt.quantize(step)})
    losses = cm.finetune(batches, F.cross_entropy, epochs=8, lr=1e-2, schedule="constant")
    assert losses[-1] < 0.8 * losses[0]
    for name, v in cm.weights().items():
        lv = v.astype(np.float64) / step
        assert np.allclose(lv, np.rint(lv), atol=1e-4), name
    # the shadow weights are float and move by less than a step per update
    shadow = model[0].parametrizations.weight.original
    assert not np.allclose(shadow.detach().numpy() / step, np.rint(shadow.detach().numpy() / step))
    dec = nncodec.decode_bytes(cm.encode_bytes())
    for name, v in cm.weights().items():
        assert np.array_equal(dec[name], v)


def test_bloomier_layer_is_frozen_with_its_false_positives():
    model, batches = _toy(3)
    cm = nt.compress_model(model, {"0.weight": nt.bloomier(r=3, t=5, sparsity=0.8)})
    st = cm.bloomier_stats["0.weight"]
    assert st["false_positives"] > 0
    assert abs(st["measured_fp_rate"] - st["expected_fp_rate"]) < 0.1
    frozen = cm.weights()["0.weight"].copy()
    assert (frozen != 0).sum() == st["n"] + st["false_positives"]
    cm.finetune(batches, F.cross_entropy, epochs=2, lr=1e-2)
    w = cm.weights()
    assert np.array_equal(w["0.weight"], frozen)
    dec = nncodec.decode_bytes(cm.encode_bytes())
    assert np.array_equal(dec["0.weight"], frozen)  # the file decodes to what was trained around
    # tuned centroids: the table is kept, the false positives follow their centroid
    model, batches = _toy(3)
    cm = nt.compress_model(model, {"0.weight": nt.bloomier(r=3, t=5, sparsity=0.8, tune=True)})
    cm.finetune(batches, F.cross_entropy, epochs=2, lr=1e-2)
    w = cm.weights()["0.weight"]
    assert np.unique(w[w != 0]).size <= 7
    dec = nncodec.decode_bytes(cm.encode_bytes())
    assert np.array_equal(dec["0.weight"], cm.weights()["0.weight"])


def test_state_dict_helpers_round_trip():
    model, _ = _toy(4)
    arrays = nt.state_dict_to_numpy(model)
    assert list(arrays) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    other, _ = _toy(5)
    nt.load_numpy_state_dict(other, nncodec.decode_bytes(nncodec.encode_tensors(arrays)))
    for k, v in nt.state_dict_to_numpy(other).items():
        assert np.array_equal(v, arrays[k])
    with pytest.raises(nncodec.UsageError):
        nt.load_numpy_state_dict(other, {"0.weight": arrays["0.weight"]})
    with pytest.raises(nncodec.UsageError):
        nt.compress_model(other, {"nope.weight": nt.prune(0.5)})


def test_digits_finetuning_recovers_accuracy():
    pytest.importorskip("sklearn")
    pytest.importorskip("safetensors")
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    try:
        import digits_model as dm
    finally:
        sys.path.pop(0)
    x_tr, _, y_tr, _ = dm.load_data()
    X, Y = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    g = torch.Generator().manual_seed(0)

    class Loader:
        def __iter__(self):
            perm = torch.randperm(len(Y), generator=g)
            return iter([(X[perm[i:i + 64]], Y[perm[i:i + 64]]) for i in range(0, len(Y), 64)])

        def __len__(self):
            return -(-len(Y) // 64)

    model = dm._model()
    nt.load_numpy_state_dict(model, dm.load_fixture())
    sp = {"conv2.weight": 0.7, "fc1.weight": 0.9, "fc2.weight": 0.9, "fc3.weight": 0.8}
    cm = nt.compress_model(model, {n: nt.cluster(k=4, sparsity=s, centroid_digits=3) for n, s in sp.items()})
    cm.apply({"*.bias": nt.quantize(0.05)})
    before = dm.evaluate(nncodec.decode_bytes(cm.encode_bytes()))
    cm.finetune(Loader(), F.cross_entropy, epochs=4, lr=3e-3)
    blob = cm.encode_bytes()
    after = dm.evaluate(nncodec.decode_bytes(blob))
    assert after > before + 0.02, (before, after)
    assert after > 0.85
    assert len(blob) < 79016 / 8
