"""The legacy Flower transport (start_server/start_client): a real server and two clients on 127.0.0.1.

The Flower App (``flwr run``, both engines) is tested in tests/test_flower_app.py.
"""

from __future__ import annotations

import os

import pytest

pytest.importorskip("flwr")
pytest.importorskip("torch")
pytest.importorskip("sklearn")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(ROOT, "examples", "flower_digits", "legacy_grpc.py")


def _example():
    import importlib.util

    spec = importlib.util.spec_from_file_location("flower_digits_legacy_grpc", RUN)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_flower_digits_example_runs_and_compresses(tmp_path):
    run = _example()

    kw = dict(clients=2, rounds=2, epochs=2, timeout=150, workdir=str(tmp_path))
    plain = run.run_once("plain", **kw)
    coded = run.run_once("topk", **kw)
    print(run.report([plain, coded]))
    assert plain["accuracy"] > 0.6 and coded["accuracy"] > 0.5  # chance is 0.1
    up_plain = sum(r["uplink"] for r in plain["rounds"])
    up_coded = sum(r["uplink"] for r in coded["rounds"])
    assert up_plain >= 2 * 2 * plain["model_bytes"]  # every client sent the float32 model each round
    assert 0 < up_coded < up_plain / 20
    down_plain = sum(r["downlink"] for r in plain["rounds"])
    assert 0 < sum(r["downlink"] for r in coded["rounds"]) < down_plain  # the lossless downlink helps


def test_mod_and_message_strategy_in_process(monkeypatch):
    """The client mod and the Message-API strategy wrapper, without a network: FedAvg sees plain arrays."""
    import numpy as np
    from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
    from flwr.serverapp.strategy import FedAvg

    from nncodec.federated.flower import (STYPE_UPDATE, NNCodecMessageStrategy, NNCodecMod, model_to_record,
                                          record_to_model)

    from flwr.supercore.task_identity import TaskIdentity

    monkeypatch.setattr(TaskIdentity, "_run_id", 1)  # what a ServerApp process sets
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    rng = np.random.default_rng(0)
    glob = {"w": rng.standard_normal((50, 20)).astype(np.float32), "b": np.zeros(20, np.float32)}

    class Grid:  # the two calls FedAvg.configure_train makes
        def get_node_ids(self):
            return [11, 12]

    strategy = NNCodecMessageStrategy(FedAvg(fraction_train=1.0, min_train_nodes=2, min_available_nodes=2))
    msgs = list(strategy.configure_train(1, model_to_record(glob), ConfigRecord({}), Grid()))
    assert len(msgs) == 2
    mod = NNCodecMod(topk=0.1, rel_step=1.0)
    replies = []
    for m in msgs:
        node = m.metadata.dst_node_id
        def train(msg, ctx, node=node):
            model = record_to_model(msg.content["arrays"])
            new = {k: v + np.float32(0.01 * node) for k, v in model.items()}
            content = RecordDict({"arrays": model_to_record(new), "metrics": _metrics()})
            return Message(content, reply_to=msg)

        ctx = Context(run_id=1, node_id=node, node_config={}, state=RecordDict(), run_config={})
        assert m.metadata.message_type == MessageType.TRAIN and node in (11, 12)
        r = mod(m, ctx, train)
        assert r.content["arrays"]["nncodec"].stype == STYPE_UPDATE
        replies.append(r)
    arrays, _ = strategy.aggregate_train(1, replies)
    got = {k: a.numpy() for k, a in arrays.items()}
    # FedAvg of w + 0.11 and w + 0.12: the top 10% of a constant shift are coded exactly, the rest zero
    assert got.keys() == glob.keys()
    d = got["w"] - glob["w"]
    assert np.isclose(d.max(), 0.115, atol=1e-3)
    assert strategy.rounds[1]["uplink"] < 0.5 * 2 * (glob["w"].nbytes + glob["b"].nbytes)


def _metrics():
    from flwr.app import MetricRecord

    return MetricRecord({"num-examples": 10})
