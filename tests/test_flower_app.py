"""The Flower App of examples/flower_digits on both of Flower's engines, reduced (2 clients, 2 rounds).

Each test starts Flower's own processes on 127.0.0.1 (free ports, a Flower home in a
temporary folder) through the example's driver, submits the app with ``flwr run``
in the nncodec mode ``scalar`` (dithered scalar quantization at 2 x RMS, error
feedback), and compares it with plain FedAvg computed in this process with the same
training seeds (the Flower run of plain FedAvg gives the same accuracy to the last
digit; ``run.py`` runs it on both engines). Every start and run has a deadline and
the processes are stopped when the test ends (the deadlines, 120 s, bound each test;
each takes about 40 s on two busy cores).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys

import numpy as np
import pytest

pytest.importorskip("flwr")
pytest.importorskip("torch")
pytest.importorskip("sklearn")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "flower_digits")
CLIENTS, ROUNDS, EPOCHS = 2, 2, 2
#: accuracy of the nncodec run at most this far below plain FedAvg after ROUNDS rounds (test images: 450)
TOLERANCE = 0.03
#: uplink at least this many times smaller than plain FedAvg's float32 arrays (about 20x measured)
FACTOR = 12


def _load(name):
    if EXAMPLE not in sys.path:
        sys.path.insert(0, EXAMPLE)
    spec = importlib.util.spec_from_file_location(f"flower_digits_{name}", os.path.join(EXAMPLE, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _need(*commands):
    run = _load("run")
    for c in commands:
        try:
            run._exe(c)
        except RuntimeError:
            pytest.skip(f"{c} is not installed")
    return run


@pytest.fixture(scope="module")
def plain():
    """Plain FedAvg of the example in process: accuracy, and the payload bytes its clients send."""
    task = _load("task")
    from nncodec.federated.flower import model_to_record, payload_bytes

    _, x_test, _, y_test = task.load_data()
    parts = [task.partition(i, CLIENTS) for i in range(CLIENTS)]
    g = task.init_model(0)
    per_client = payload_bytes(model_to_record(g))
    for rnd in range(1, ROUNDS + 1):
        models = [task.train(g, x, y, epochs=EPOCHS, seed=1000 * rnd + i) for i, (x, y) in enumerate(parts)]
        w = np.array([len(x) for x, _ in parts], np.float64)
        g = {k: (sum(wi * m[k].astype(np.float64) for wi, m in zip(w, models)) / w.sum()).astype(np.float32)
             for k in g}
    return {"accuracy": task.evaluate(g, x_test, y_test)[1], "uplink": per_client * CLIENTS * ROUNDS}


def _check(res, plain):
    assert res["mode"] == "scalar" and res["clients"] == CLIENTS and len(res["rounds"]) == ROUNDS
    up = sum(r["uplink"] for r in res["rounds"])
    assert all(r["uplink"] > 0 for r in res["rounds"])  # both clients answered every round
    assert plain["accuracy"] > 0.9
    assert up * FACTOR < plain["uplink"], (up, plain["uplink"])
    assert res["accuracy"] >= plain["accuracy"] - TOLERANCE, (res["accuracy"], plain["accuracy"])
    down = sum(r["downlink"] for r in res["rounds"])
    assert 0 < down < plain["uplink"]  # the global model goes out losslessly coded, smaller than float32


def test_simulation_engine(plain):
    pytest.importorskip("ray")
    run = _need("flower-superlink", "flwr", "flwr-simulation")
    res = run.run_engine("simulation", ["scalar"], clients=CLIENTS, rounds=ROUNDS, epochs=EPOCHS, timeout=120)[0]
    print(run.report([res]), f"\nplain FedAvg: uplink {plain['uplink']} B, accuracy {plain['accuracy']:.4f}")
    _check(res, plain)


def test_deployment_engine(plain):
    run = _need("flower-superlink", "flower-supernode", "flwr", "flwr-serverapp", "flwr-clientapp")
    with run.Federation("deployment", clients=CLIENTS, timeout=120) as fed:
        procs = list(fed.procs)
        assert len(procs) == 1 + CLIENTS  # a SuperLink and a SuperNode per client, all alive
        assert all(p.poll() is None for p in procs)
        res = fed.run("scalar", rounds=ROUNDS, epochs=EPOCHS)
    assert all(p.poll() is not None for p in procs)  # stopped on leaving
    print(run.report([res]), f"\nplain FedAvg: uplink {plain['uplink']} B, accuracy {plain['accuracy']:.4f}")
    _check(res, plain)


def test_federation_cleans_up_after_a_failed_start(monkeypatch):
    """A SuperLink that cannot start: the error names it, no process and no Flower home is left."""
    run = _need("flower-superlink")
    fed = run.Federation("deployment", clients=1, timeout=30)
    monkeypatch.setattr(run, "_exe", lambda name: shutil.which("false"))  # exits at once, status 1
    home = fed.home
    with pytest.raises(RuntimeError, match="superlink"):
        with fed:
            pass
    assert not fed.procs and not os.path.exists(home)


def test_fedavg_subclass_and_mod_in_process(monkeypatch):
    """NNCodecFedAvg and NNCodecMod without a network: own seeds per node, residual in Context.state."""
    from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
    from flwr.serverapp.strategy import FedAvg
    from flwr.supercore.task_identity import TaskIdentity

    from nncodec.federated.flower import (CONFIG_SEED, STYPE_MODEL, STYPE_UPDATE, NNCodecFedAvg, NNCodecMod,
                                          model_to_record, record_to_model)

    monkeypatch.setattr(TaskIdentity, "_run_id", 1)  # what a ServerApp process sets
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    rng = np.random.default_rng(1)
    glob = {"w": rng.standard_normal((64, 32)).astype(np.float32), "b": np.zeros(32, np.float32)}

    class Grid:
        def get_node_ids(self):
            return [21, 22]

    strategy = NNCodecFedAvg(fraction_evaluate=0.0, min_train_nodes=2, min_available_nodes=2, seed=5)
    assert isinstance(strategy, FedAvg)
    mod = NNCodecMod(quantizer="scalar", rel_step=2.0)
    contexts = {n: Context(run_id=1, node_id=n, node_config={}, state=RecordDict(), run_config={})
                for n in (21, 22)}
    for rnd in (1, 2):
        msgs = list(strategy.configure_train(rnd, model_to_record(glob), ConfigRecord({}), Grid()))
        seeds = {m.content["config"][CONFIG_SEED] for m in msgs}
        assert len(seeds) == 2  # one seed per node, although FedAvg shares one content object
        assert all(m.content["arrays"]["nncodec"].stype == STYPE_MODEL for m in msgs)
        replies = []
        for m in msgs:
            node = m.metadata.dst_node_id

            def train(msg, ctx, node=node):
                model = record_to_model(msg.content["arrays"])
                new = {k: v + np.float32(0.001 * node) * rng.standard_normal(v.shape).astype(np.float32)
                       for k, v in model.items()}
                content = RecordDict({"arrays": model_to_record(new), "metrics": MetricRecord({"num-examples": 10})})
                return Message(content, reply_to=msg)

            r = mod(m, contexts[node], train)
            assert r.content["arrays"]["nncodec"].stype == STYPE_UPDATE
            assert "nncodec.residual.arrays" in contexts[node].state.array_records  # error feedback kept
            replies.append(r)
        arrays, _ = strategy.aggregate_train(rnd, replies)
        got = record_to_model(arrays)
        assert got.keys() == glob.keys() and np.abs(got["w"] - glob["w"]).max() < 0.1
        glob = got
    plain = 2 * sum(v.nbytes for v in glob.values())
    assert 0 < strategy.rounds[2]["uplink"] < plain / 4 and strategy.uplink_bytes() == sum(
        r["uplink"] for r in strategy.rounds.values())
