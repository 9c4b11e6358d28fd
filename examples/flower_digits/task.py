"""The learning task of the example: an MLP on scikit-learn's digits, split across clients.

Data: ``load_digits`` (1797 8x8 images), pixels scaled to [0, 1], split by
``train_test_split(test_size=0.25, random_state=0, stratify=y)`` like
tools/digits_model.py. Client ``i`` of ``n`` trains on every n-th training image
starting at ``i`` (an IID partition, the same on every machine); the server
evaluates the global model on the 450 test images.

The model is a NumPy dict of float32 arrays in a fixed order; training uses torch
on one thread.
"""

from __future__ import annotations

import numpy as np

HIDDEN = 256
NAMES = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias")


def load_data():
    """(x_train, x_test, y_train, y_test): float32 (N, 64) in [0, 1] and int64 labels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    return train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)


def partition(i: int, n: int):
    x_train, _, y_train, _ = load_data()
    return x_train[i::n], y_train[i::n]


def _net():
    import torch.nn as nn

    return nn.Sequential(nn.Linear(64, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(),
                         nn.Linear(HIDDEN, 10))


def _torch_names(net):
    return dict(zip(NAMES, (k for k in net.state_dict())))


def init_model(seed: int = 0) -> dict:
    import torch

    torch.manual_seed(seed)
    net = _net()
    return {n: net.state_dict()[k].numpy().copy() for n, k in _torch_names(net).items()}


def _load(model: dict):
    import torch

    net = _net()
    names = _torch_names(net)
    net.load_state_dict({names[n]: torch.from_numpy(np.array(model[n], dtype=np.float32)) for n in NAMES})
    return net


def train(model: dict, x, y, *, epochs: int = 1, lr: float = 0.05, batch_size: int = 32, seed: int = 0) -> dict:
    """Local SGD (momentum 0.9) from ``model``; returns the trained model."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    net = _load(model)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    loss_fn = torch.nn.CrossEntropyLoss()
    for _ in range(epochs):
        perm = torch.randperm(len(xt))
        for s in range(0, len(xt), batch_size):
            idx = perm[s:s + batch_size]
            opt.zero_grad()
            loss_fn(net(xt[idx]), yt[idx]).backward()
            opt.step()
    names = _torch_names(net)
    sd = net.state_dict()
    return {n: sd[names[n]].numpy().copy() for n in NAMES}


def evaluate(model: dict, x, y) -> tuple:
    """(loss, accuracy) of ``model`` on ``(x, y)``."""
    import torch

    torch.set_num_threads(1)
    net = _load(model)
    with torch.no_grad():
        out = net(torch.from_numpy(x))
        loss = float(torch.nn.functional.cross_entropy(out, torch.from_numpy(y)))
        acc = float((out.argmax(1).numpy() == y).mean())
    return loss, acc


def to_list(model: dict) -> list:
    return [model[n] for n in NAMES]


def from_list(arrays) -> dict:
    return dict(zip(NAMES, arrays))
