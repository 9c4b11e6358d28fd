"""The DDP communication hook: two CPU processes (gloo on 127.0.0.1) train to the loss of plain DDP."""

from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

STEPS = 120


def _data():
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)


def _train(rank, world, hook_state, seed=0):
    import torch.nn as nn
    from torch.nn.parallel import DistributedDataParallel as DDP

    from nncodec.federated.ddp import nncodec_hook

    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    model = DDP(net, bucket_cap_mb=0.01)  # several buckets
    if hook_state is not None:
        model.register_comm_hook(hook_state, nncodec_hook)
    x, y = _data()
    xs, ys = torch.from_numpy(x[rank::world]), torch.from_numpy(y[rank::world])
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(100 + rank)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(STEPS):
        idx = torch.randint(0, len(xs), (32,), generator=g)
        opt.zero_grad()
        loss_fn(model(xs[idx]), ys[idx]).backward()
        opt.step()
    with torch.no_grad():
        loss = float(loss_fn(net(torch.from_numpy(x)), torch.from_numpy(y)))
    params = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    return loss, params


def _worker(rank, world, port, out):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from nncodec.federated.ddp import NNCodecHookState

        res = {}
        for name, state in (("plain", None), ("3lc", NNCodecHookState(quantizer="3lc")),
                            ("scalar", NNCodecHookState(quantizer="scalar", rel_step=1.0, seed=7))):
            loss, params = _train(rank, world, state)
            # every rank applied the same averaged gradients: the replicas agree
            other = [torch.zeros_like(params) for _ in range(world)]
            dist.all_gather(other, params)
            res[name] = {"loss": loss, "replicas_agree": all(torch.equal(o, params) for o in other)}
            if state is not None:
                res[name]["ratio"] = state.bytes_dense / state.bytes_sent
        if rank == 0:
            with open(out, "w") as f:
                json.dump(res, f)
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_hook_trains_like_uncompressed(tmp_path):
    import torch.multiprocessing as mp

    out = str(tmp_path / "res.json")
    mp.spawn(_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    with open(out) as f:
        res = json.load(f)
    print(res)
    plain = res["plain"]["loss"]
    assert plain < 0.5  # it learned (ln 10 = 2.3 at the start)
    for name in ("3lc", "scalar"):
        r = res[name]
        assert r["replicas_agree"], name
        assert abs(r["loss"] - plain) < max(0.1, 0.5 * plain), (name, r["loss"], plain)
    assert res["3lc"]["ratio"] > 8  # bytes per rank against float32 buckets, record overhead included


def test_bucket_stream_round_trip():
    from nncodec.federated.ddp import NNCodecHookState, decode_bucket, encode_bucket

    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    st = NNCodecHookState(quantizer="scalar", rel_step=0.5)
    data, dec = encode_bucket(x, st.pipeline(x, 0, 3))
    np.testing.assert_array_equal(decode_bucket(data), dec)
    assert np.abs(dec - x).max() <= 0.25 * np.sqrt(np.mean(x.astype(np.float64) ** 2)) * 1.0001
