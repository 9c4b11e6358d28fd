"""A LeNet-5-style CNN for scikit-learn's digits: the accuracy check of nncodec's lossy benchmarks.

The model is small (about 20k float32 weights, an 80 KB safetensors file) so
that it can live in the repository as ``tests/fixtures/digits_lenet5.safetensors``,
and trains in 10-30 s on one CPU thread. Its test accuracy after a lossy round trip
(nncodec, MPEG NNC, GGUF quantization) says whether the coding error matters
to the network, which weight SNR alone does not.

    python tools/digits_model.py train --out tests/fixtures/digits_lenet5.safetensors
    python tools/digits_model.py eval FILE    # .safetensors, .pt/.pth, .npz or .nnc

Data: ``sklearn.datasets.load_digits`` (1797 8x8 images of 0..16, 10 classes),
pixels scaled to [0, 1], split by ``train_test_split(test_size=0.25,
random_state=0, stratify=y)``: 1347 training and 450 test images, the same on
every machine (the dataset ships inside scikit-learn).

Architecture (input 1x8x8)::

    conv1  1->6,  3x3, pad 1 -> ReLU -> max-pool 2   (6x4x4)
    conv2  6->16, 3x3, pad 1 -> ReLU -> max-pool 2   (16x2x2 = 64)
    fc1    64->120 -> ReLU
    fc2   120->84  -> ReLU
    fc3    84->10

Evaluation runs in float64 on one thread, so the recorded accuracy does not
depend on the BLAS build or on float32 rounding at a decision boundary: a
checkpoint is converted to float64 exactly as stored (float32, float16 or
bfloat16 values are all exact in float64) and the 450 test images are
classified by argmax. ``evaluate`` takes NumPy arrays, i.e. a decoded
checkpoint, and needs torch; ``load_fixture`` needs neither torch nor a
network connection.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "digits_lenet5.safetensors")

#: names and shapes of the model's tensors, in state-dict order
SHAPES = {
    "conv1.weight": (6, 1, 3, 3),
    "conv1.bias": (6,),
    "conv2.weight": (16, 6, 3, 3),
    "conv2.bias": (16,),
    "fc1.weight": (120, 64),
    "fc1.bias": (120,),
    "fc2.weight": (84, 120),
    "fc2.bias": (84,),
    "fc3.weight": (10, 84),
    "fc3.bias": (10,),
}

SPLIT = {"test_size": 0.25, "random_state": 0, "stratify": True}
DEFAULTS = {"seed": 0, "epochs": 60, "batch_size": 64, "lr": 5e-3, "weight_decay": 0.0}


def load_data():
    """(x_train, x_test, y_train, y_test): float32 images (N, 1, 8, 8) in [0, 1], int64 labels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = d.target.astype(np.int64)
    return train_test_split(
        x, y, test_size=SPLIT["test_size"], random_state=SPLIT["random_state"], stratify=y
    )


def _model():
    import torch.nn as nn

    class LeNet5(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 6, 3, padding=1)
            self.conv2 = nn.Conv2d(6, 16, 3, padding=1)
            self.fc1 = nn.Linear(64, 120)
            self.fc2 = nn.Linear(120, 84)
            self.fc3 = nn.Linear(84, 10)

        def forward(self, x):
            import torch.nn.functional as F

            x = F.max_pool2d(F.relu(self.conv1(x)), 2)
            x = F.max_pool2d(F.relu(self.conv2(x)), 2)
            x = x.flatten(1)
            x = F.relu(self.fc1(x))
            x = F.relu(self.fc2(x))
            return self.fc3(x)

    return LeNet5()


def train(seed: int = DEFAULTS["seed"], epochs: int = DEFAULTS["epochs"], *,
          batch_size: int = DEFAULTS["batch_size"], lr: float = DEFAULTS["lr"],
          weight_decay: float = DEFAULTS["weight_decay"], verbose: bool = False) -> dict:
    """Train from scratch; returns the state dict as float32 NumPy arrays (in SHAPES order).

    Adam with a cosine learning-rate schedule, cross-entropy loss, mini-batches
    reshuffled each epoch by a generator seeded with ``seed``; one thread and
    deterministic algorithms, so a given torch build repeats the same weights.
    """
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x_tr, _, y_tr, _ = load_data()
        x_tr, y_tr = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
        model = _model()
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        steps = epochs * -(-len(y_tr) // batch_size)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        gen = torch.Generator().manual_seed(seed)
        for ep in range(epochs):
            model.train()
            perm = torch.randperm(len(y_tr), generator=gen)
            total = 0.0
            for i in range(0, len(y_tr), batch_size):
                idx = perm[i:i + batch_size]
                opt.zero_grad()
                loss = F.cross_entropy(model(x_tr[idx]), y_tr[idx])
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * len(idx)
            if verbose and (ep + 1) % 10 == 0:
                print(f"epoch {ep + 1:3d}  train loss {total / len(y_tr):.4f}", file=sys.stderr)
        sd = model.state_dict()
        return {k: sd[k].detach().numpy().astype(np.float32) for k in SHAPES}
    finally:
        torch.set_num_threads(prev_threads)


def _check_state_dict(state_dict) -> dict:
    """Float64 arrays by name; raises ValueError naming a missing, extra or misshapen tensor."""
    missing = [k for k in SHAPES if k not in state_dict]
    extra = [k for k in state_dict if k not in SHAPES]
    if missing or extra:
        raise ValueError(f"checkpoint does not match the digits LeNet-5: missing {missing}, unexpected {extra}")
    out = {}
    for k, shape in SHAPES.items():
        v = state_dict[k]
        if hasattr(v, "detach"):  # a torch tensor
            v = v.detach().float().numpy()
        a = np.asarray(v).astype(np.float64)
        if a.shape != shape:
            raise ValueError(f"tensor {k!r} has shape {a.shape}, the model needs {shape}")
        out[k] = a
    return out


def predict(state_dict, x: np.ndarray) -> np.ndarray:
    """Class predictions (int64) of the model with these weights for images ``x`` (N, 1, 8, 8)."""
    import torch

    weights = _check_state_dict(state_dict)
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = _model().double()
        model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
        model.eval()
        with torch.no_grad():
            logits = model(torch.from_numpy(np.asarray(x, dtype=np.float64)))
        return logits.argmax(1).numpy()
    finally:
        torch.set_num_threads(prev_threads)


def evaluate_counts(state_dict) -> tuple:
    """(correct, total) on the fixed test split."""
    _, x_te, _, y_te = load_data()
    pred = predict(state_dict, x_te)
    return int((pred == y_te).sum()), int(len(y_te))


def evaluate(state_dict) -> float:
    """Test accuracy (fraction correct of the 450 test images) of a state dict of arrays."""
    correct, total = evaluate_counts(state_dict)
    return correct / total


def read_weights(path) -> dict:
    """Arrays by name from a checkpoint file: .nnc, safetensors, PyTorch or .npz."""
    path = os.fspath(path)
    if ROOT not in sys.path:  # run from a checkout without nncodec installed
        sys.path.insert(0, ROOT)
    from nncodec.io import detect_format

    fmt = detect_format(path)
    if fmt == "nnc":
        import nncodec

        with nncodec.open(path) as f:
            return f.to_dict()
    if fmt in ("torch", "torch-legacy"):
        try:
            from nncodec.io import read_checkpoint

            return dict(read_checkpoint(path, format=fmt).tensors)
        except ImportError:  # no PyTorch reader in this nncodec: let torch read it, without pickle code
            import torch

            obj = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
                obj = obj["state_dict"]
            return {k: v for k, v in obj.items() if hasattr(v, "detach")}
    from nncodec.io import read_checkpoint

    return dict(read_checkpoint(path, format=fmt).tensors)


def load_fixture(path=FIXTURE) -> dict:
    """The committed trained weights as float32 NumPy arrays (no torch needed)."""
    from safetensors.numpy import load_file

    return load_file(os.fspath(path))


def _cmd_train(args) -> int:
    import safetensors.numpy
    import sklearn
    import torch

    t0 = time.perf_counter()
    sd = train(seed=args.seed, epochs=args.epochs, verbose=True)
    train_s = time.perf_counter() - t0
    correct, total = evaluate_counts(sd)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    safetensors.numpy.save_file(sd, args.out, metadata={"model": "digits LeNet-5 (tools/digits_model.py)"})
    os.chmod(args.out, 0o644)  # the writer creates it private; it is meant to be committed
    reread = load_fixture(args.out)
    if evaluate_counts(reread) != (correct, total):
        raise SystemExit("the written file does not evaluate like the trained weights")
    info = {
        "model": "LeNet-5-style CNN for sklearn load_digits (tools/digits_model.py)",
        "test_accuracy": correct / total,
        "test_correct": correct,
        "test_total": total,
        "evaluation": "float64, 1 thread, argmax over the test split",
        "split": {"function": "sklearn.model_selection.train_test_split", **SPLIT},
        "training": {
            "seed": args.seed, "epochs": args.epochs, "batch_size": DEFAULTS["batch_size"],
            "optimizer": "Adam", "lr": DEFAULTS["lr"], "weight_decay": DEFAULTS["weight_decay"],
            "schedule": "cosine annealing to 0 over all steps", "loss": "cross-entropy",
            "input_scaling": "pixels / 16",
        },
        "parameters": int(sum(int(np.prod(s)) for s in SHAPES.values())),
        "dtype": "float32",
        "versions": {"torch": torch.__version__, "scikit-learn": sklearn.__version__},
    }
    json_path = os.path.splitext(args.out)[0] + ".json"
    with open(json_path, "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    print(f"{args.out}: test accuracy {correct}/{total} = {correct / total:.4f} "
          f"(trained in {train_s:.1f} s); settings in {json_path}")
    return 0


def _cmd_eval(args) -> int:
    for path in args.files:
        correct, total = evaluate_counts(read_weights(path))
        print(f"{path}: test accuracy {correct}/{total} = {correct / total:.4f}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train and write the fixture (safetensors, float32) plus a .json")
    t.add_argument("--out", default=FIXTURE)
    t.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    t.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    e = sub.add_parser("eval", help="print the test accuracy of checkpoint files")
    e.add_argument("files", nargs="+")
    args = ap.parse_args(argv)
    return _cmd_train(args) if args.cmd == "train" else _cmd_eval(args)


if __name__ == "__main__":
    sys.exit(main())
