"""The same federated digits over Flower's deprecated ``start_server``/``start_client`` transport.

    python examples/flower_digits/legacy_grpc.py              # 2 clients, 10 rounds, plain then nncodec

Kept for the legacy strategy wrapper :class:`nncodec.federated.flower.NNCodecStrategy`
(``flwr.server.strategy``); new code runs the Flower App of this folder with
``flwr run`` (run.py, server_app.py, client_app.py). Each run starts a Flower server
(``start_server``, gRPC on 127.0.0.1 and a free port) and ``--clients`` client
processes; the server runs FedAvg inside ``NNCodecStrategy`` (which counts the bytes
of the parameters sent each way), evaluates the global model on the digits test set
after every round, and writes its numbers to a JSON file. In the ``nncodec`` run the
clients carry :class:`nncodec.federated.flower.NNCodecMod`, which sends each trained
model as a compressed update with error feedback, and the server sends the global
model losslessly coded. Every process has a deadline (``--timeout``) and the driver
kills what is left, so the script always stops.

The bytes printed are the parameter payloads (the arrays' bytes in the Flower
messages); gRPC framing and config entries come on top, the same in both runs.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for p in (HERE, ROOT):
    if p not in sys.path:
        sys.path.insert(0, p)

#: the nncodec settings of the compressed run: top-k 2% of each update, stochastic
#: rounding at the RMS of the kept values, error feedback (see tools/bench_federated.py)
CODECS = {
    "topk": {"topk": 0.02, "rel_step": 1.0},
    "3lc": {"quantizer": "3lc"},
    "scalar": {"quantizer": "scalar", "rel_step": 2.0},
}


def _quiet():
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    import logging

    logging.getLogger("flwr").setLevel(logging.WARNING)


# ------------------------------------------------------------------ server


def server(args) -> None:
    _quiet()
    import numpy as np
    from flwr.common import ndarrays_to_parameters
    from flwr.server import ServerConfig, start_server
    from flwr.server.strategy import FedAvg

    import task
    from nncodec.federated.flower import NNCodecStrategy

    _, x_test, _, y_test = task.load_data()
    accs = {}

    def evaluate(rnd, arrays, config):
        loss, acc = task.evaluate(task.from_list(arrays), x_test, y_test)
        accs[rnd] = acc
        return loss, {"accuracy": acc}

    inner = FedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=args.clients,
                   min_evaluate_clients=0, min_available_clients=args.clients, evaluate_fn=evaluate,
                   initial_parameters=ndarrays_to_parameters(task.to_list(task.init_model(0))))
    strategy = NNCodecStrategy(inner, downlink=args.mode != "plain", seed=args.seed)
    start_server(server_address=f"127.0.0.1:{args.port}", strategy=strategy,
                 config=ServerConfig(num_rounds=args.rounds, round_timeout=args.timeout))
    raw = int(sum(a.nbytes for a in task.init_model(0).values()))
    out = {"mode": args.mode, "clients": args.clients, "rounds": [], "model_bytes": raw}
    for rnd in range(1, args.rounds + 1):
        st = strategy.rounds.get(rnd, {})
        out["rounds"].append({"round": rnd, "uplink": st.get("uplink", 0), "downlink": st.get("downlink", 0),
                              "accuracy": accs.get(rnd)})
    out["accuracy"] = accs.get(args.rounds)
    with open(args.out, "w") as f:
        json.dump(out, f)
    del np


# ------------------------------------------------------------------ client


def client(args) -> None:
    _quiet()
    from flwr.client import NumPyClient
    from flwr.clientapp import ClientApp
    from flwr.compat.client.app import start_client_internal

    import task
    from nncodec.federated.flower import NNCodecMod

    x, y = task.partition(args.cid, args.clients)

    class DigitsClient(NumPyClient):
        def fit(self, parameters, config):
            rnd = int(config.get("nncodec.round", 0))
            model = task.train(task.from_list(parameters), x, y, epochs=args.epochs,
                               seed=1000 * rnd + args.cid)
            return task.to_list(model), len(x), {}

    mods = [] if args.mode == "plain" else [NNCodecMod(**CODECS[args.mode])]
    app = ClientApp(client_fn=lambda context: DigitsClient().to_client(), mods=mods)
    # start_client() builds the same ClientApp without mods; this is the call it makes.
    start_client_internal(server_address=f"127.0.0.1:{args.port}", node_config={},
                          load_client_app_fn=lambda *a: app, insecure=True,
                          max_retries=30, max_wait_time=args.timeout)


# ------------------------------------------------------------------ driver


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def run_once(mode: str, *, clients: int, rounds: int, epochs: int, timeout: float, workdir: str,
             seed: int = 0, log: bool = False) -> dict:
    """One federated run in separate processes; returns the server's JSON numbers."""
    port = free_port()
    out = os.path.join(workdir, f"flower_{mode}_{port}.json")
    me = [sys.executable, os.path.abspath(__file__)]
    common = ["--port", str(port), "--mode", mode, "--clients", str(clients), "--rounds", str(rounds),
              "--epochs", str(epochs), "--timeout", str(timeout), "--seed", str(seed)]
    env = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", OMP_NUM_THREADS="1", GRPC_VERBOSITY="ERROR",
               PYTHONPATH=os.pathsep.join([ROOT, HERE, os.environ.get("PYTHONPATH", "")]))
    sink = None if log else subprocess.DEVNULL  # None: the processes write to our stdout/stderr
    procs = [subprocess.Popen(me + ["server", "--out", out] + common, env=env, stdout=sink, stderr=sink)]
    try:
        deadline = time.monotonic() + timeout
        while not _listening(port):  # clients of the legacy transport do not retry a refused stream
            if procs[0].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the {mode} server did not start (exit status {procs[0].poll()})")
            time.sleep(0.2)
        for i in range(clients):
            procs.append(subprocess.Popen(me + ["client", "--cid", str(i)] + common, env=env,
                                          stdout=sink, stderr=sink))
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"the {mode} run did not finish within {timeout} s") from None
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    if procs[0].returncode != 0 or not os.path.exists(out):
        raise RuntimeError(f"the {mode} server failed (exit status {procs[0].returncode})")
    with open(out) as f:
        res = json.load(f)
    os.unlink(out)
    return res


def report(results: list) -> str:
    """The per-round table and totals, as ``run.py`` prints them for the Flower App."""
    from run import report as table

    return table(results)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("role", nargs="?", default="driver", choices=["driver", "server", "client"])
    ap.add_argument("--mode", default="topk", help="client codec: plain, " + ", ".join(CODECS))
    ap.add_argument("--modes", default=None, help="driver: comma-separated modes to run (default plain,MODE)")
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--cid", type=int, default=0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--json", default=None, help="driver: also write the numbers to this file")
    ap.add_argument("--verbose", action="store_true", help="driver: show the processes' logs")
    args = ap.parse_args(argv)
    if args.role == "server":
        server(args)
        return 0
    if args.role == "client":
        client(args)
        return 0
    import tempfile

    modes = (args.modes or f"plain,{args.mode}").split(",")
    results = []
    with tempfile.TemporaryDirectory() as d:
        for m in modes:
            t = time.monotonic()
            results.append(run_once(m, clients=args.clients, rounds=args.rounds, epochs=args.epochs,
                                    timeout=args.timeout, workdir=d, seed=args.seed,
                                    log=args.verbose))
            results[-1]["seconds"] = round(time.monotonic() - t, 1)
    print(report(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
