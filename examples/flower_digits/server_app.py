"""The ServerApp: FedAvg over the nodes, the global model evaluated on the digits test set each round.

``codec = "plain"`` runs Flower's own FedAvg (counting the bytes of the replies'
arrays); any other codec runs :class:`nncodec.federated.flower.NNCodecFedAvg`, which
decodes the clients' nncodec updates before averaging and sends the global model
losslessly coded. The numbers (bytes each way and accuracy per round) go to the
log and, when the run config names a ``results-file``, to that file as JSON.
"""

from __future__ import annotations

import json
import os
from logging import INFO

from flwr.app import Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.supercore import log

import task
from nncodec.federated.flower import NNCodecFedAvg, model_to_record, payload_bytes, record_to_model

app = ServerApp()


class PlainFedAvg(FedAvg):
    """Flower's FedAvg, unchanged, that also counts the payload bytes of the arrays each way."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rounds: dict = {}

    def _stats(self, rnd):
        return self.rounds.setdefault(rnd, {"uplink": 0, "downlink": 0, "clients": 0})

    def configure_train(self, server_round, arrays, config, grid):
        msgs = list(super().configure_train(server_round, arrays, config, grid))
        st = self._stats(server_round)
        st["downlink"] += len(msgs) * payload_bytes(arrays)
        st["clients"] += len(msgs)
        return msgs

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        st = self._stats(server_round)
        for r in replies:
            if r.has_content():
                st["uplink"] += sum(payload_bytes(rec) for rec in r.content.array_records.values())
        return super().aggregate_train(server_round, replies)


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    codec, n, rounds = str(cfg["codec"]), int(cfg["num-clients"]), int(cfg["num-server-rounds"])
    kw = dict(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n, min_available_nodes=n)
    strategy = PlainFedAvg(**kw) if codec == "plain" else NNCodecFedAvg(**kw, seed=int(cfg["seed"]))
    _, x_test, _, y_test = task.load_data()

    def evaluate(rnd, arrays):
        loss, acc = task.evaluate(record_to_model(arrays), x_test, y_test)
        return MetricRecord({"loss": loss, "accuracy": acc})

    init = task.init_model(0)
    result = strategy.start(grid=grid, initial_arrays=model_to_record(init), num_rounds=rounds,
                            timeout=float(cfg["round-timeout"]), evaluate_fn=evaluate)
    accs = {r: float(m["accuracy"]) for r, m in result.evaluate_metrics_serverapp.items()}
    out = {"mode": codec, "clients": n, "model_bytes": int(sum(a.nbytes for a in init.values())), "rounds": [],
           "accuracy": accs.get(rounds)}
    for rnd in range(1, rounds + 1):
        st = strategy.rounds.get(rnd, {})
        out["rounds"].append({"round": rnd, "uplink": st.get("uplink", 0), "downlink": st.get("downlink", 0),
                              "accuracy": accs.get(rnd)})
    up = sum(r["uplink"] for r in out["rounds"])
    log(INFO, "nncodec example: codec %s, uplink %d B, final accuracy %.4f", codec, up, out["accuracy"] or 0.0)
    if cfg.get("results-file"):  # written whole, then renamed: a reader never sees half of it
        path = str(cfg["results-file"])
        with open(path + ".part", "w") as f:
            json.dump(out, f)
        os.replace(path + ".part", path)
