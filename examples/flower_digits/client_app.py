"""The ClientApp: local SGD on this node's share of the digits; nncodec codes the reply.

The trained model goes back as plain arrays; :class:`nncodec.federated.flower.NNCodecMod`
(a client mod, chosen by the run config's ``codec``) turns it into an update against
the global model this node received, with error feedback kept in the node's context.
"""

from __future__ import annotations

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

import task
from nncodec.federated.flower import NNCodecMod, model_to_record, record_to_model

#: the nncodec settings of each codec (encode_update options; see tools/bench_federated.py)
CODECS = {
    "topk": {"topk": 0.02, "rel_step": 1.0},
    "3lc": {"quantizer": "3lc"},
    "scalar": {"quantizer": "scalar", "rel_step": 2.0},
}
MODS = {name: NNCodecMod(**opts) for name, opts in CODECS.items()}


def nncodec_mod(msg: Message, context: Context, call_next) -> Message:
    """The run config picks the codec; ``plain`` runs the app as it is."""
    codec = str(context.run_config.get("codec", "plain"))
    if codec == "plain":
        return call_next(msg, context)
    if codec not in MODS:
        raise ValueError(f"codec = {codec!r}: one of plain, {', '.join(MODS)}")
    return MODS[codec](msg, context, call_next)


app = ClientApp(mods=[nncodec_mod])


@app.train()
def train(msg: Message, context: Context) -> Message:
    pid = int(context.node_config["partition-id"])
    x, y = task.partition(pid, int(context.node_config["num-partitions"]))
    rnd = int(msg.content["config"]["server-round"])
    model = task.train(record_to_model(msg.content["arrays"]), x, y,
                       epochs=int(context.run_config["local-epochs"]), seed=1000 * rnd + pid)
    content = RecordDict({"arrays": model_to_record(model), "metrics": MetricRecord({"num-examples": len(x)})})
    return Message(content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    pid = int(context.node_config["partition-id"])
    x, y = task.partition(pid, int(context.node_config["num-partitions"]))
    loss, acc = task.evaluate(record_to_model(msg.content["arrays"]), x, y)
    metrics = MetricRecord({"loss": loss, "accuracy": acc, "num-examples": len(x)})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)
