"""Flower integration: compressed uplink (and downlink) for any strategy (needs ``flwr``).

Two pieces that work together, transparently to the training code, in a
``flwr run`` app (``ClientApp``/``ServerApp``, simulation or deployment engine):

* :class:`NNCodecMod` -- a client mod, ``ClientApp(mods=[NNCodecMod(...)])``:
  it decodes a compressed model arriving with a train or evaluate message,
  remembers it as the round's base, lets the app train, and replaces the
  trained arrays of the reply with one array holding the update
  (spec/UPDATES.md) against that base, keeping the error-feedback residual of
  the node in its ``Context.state`` for the next round.
* :class:`NNCodecFedAvg` -- ``flwr.serverapp.strategy.FedAvg`` that puts a seed
  per client and round into the config, sends the global model losslessly
  coded when that is smaller, and decodes each client's update against the
  global model of its round before averaging. :class:`NNCodecStrategyMixin`
  does the same for any Message-API strategy (``class S(NNCodecStrategyMixin,
  FedProx)``) and :class:`NNCodecMessageStrategy` wraps an instance.

For the deprecated ``start_server``/``start_client`` transport,
:class:`NNCodecStrategy` wraps a legacy ``flwr.server.strategy`` strategy.

On the wire an update is one array of stype ``nncodec.update`` and a coded
model one array of stype ``nncodec.model``; the bytes are a .nnc file.
Every strategy counts the payload bytes it sends and receives per round in
:attr:`rounds`.
"""

from __future__ import annotations

import secrets

import numpy as np

from .. import dither as _dither
from ..api import decode_bytes, encode_tensors
from ..errors import UsageError
from .update import ErrorFeedback, UpdateOptions, base_sha256, decode_update, encode_update

try:
    from flwr.app import Array, ArrayRecord, Message, MessageType
except ImportError as e:  # pragma: no cover - flwr is optional
    raise ImportError("nncodec.federated.flower needs Flower: pip install flwr==1.41.0 (or the [flower] extra)") from e

__all__ = ["NNCodecMod", "NNCodecFedAvg", "NNCodecStrategyMixin", "NNCodecMessageStrategy", "NNCodecStrategy",
           "STYPE_UPDATE", "STYPE_MODEL",
           "CONFIG_SEED", "CONFIG_ROUND", "record_to_model", "model_to_record", "payload_bytes"]

STYPE_UPDATE = "nncodec.update"
STYPE_MODEL = "nncodec.model"
CONFIG_SEED = "nncodec.seed"
CONFIG_ROUND = "nncodec.round"
_KEY = "nncodec"


# ------------------------------------------------------------------ records


def record_to_model(record: ArrayRecord) -> dict:
    """The arrays of a record (NumPy-serialized, as Flower sends them) by key."""
    return {k: a.numpy() for k, a in record.items()}


def model_to_record(model: dict) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in model.items()})


def _coded(record: ArrayRecord):
    """(stype, bytes) when the record carries nncodec bytes, else None."""
    if len(record) == 1:
        (a,) = record.values()
        if a.stype in (STYPE_UPDATE, STYPE_MODEL):
            return a.stype, a.data
    return None


def _coded_record(stype: str, data: bytes) -> ArrayRecord:
    return ArrayRecord({_KEY: Array(dtype="uint8", shape=(len(data),), stype=stype, data=data)})


def payload_bytes(record: ArrayRecord) -> int:
    """Bytes of the arrays' payloads in a record (what the arrays cost on the wire, before framing)."""
    return sum(len(a.data) for a in record.values())


def _round_seed(seed: int, rnd: int, client: int) -> int:
    return _dither.mix64(_dither.mix64(seed ^ _dither.mix64(rnd)) ^ (client + 1))


# ------------------------------------------------------------------ client mod


class NNCodecMod:
    """A Flower client mod that sends the trained model as a compressed update.

    ``NNCodecMod(quantizer="scalar", rel_step=1.0)`` takes the options of
    :func:`~nncodec.federated.encode_update` (lossless when none is given);
    ``error_feedback=True`` keeps a residual per node between rounds, in the
    node's ``Context.state`` (so it survives the SuperNode starting a fresh
    ClientApp process for every message, and the simulation engine moving a node
    between workers). The seed of each round comes from the server strategy's
    config (``nncodec.seed``), or is drawn at random: decoders read it from the
    update, never need it apart.
    """

    def __init__(self, *, error_feedback: bool = True, **options):
        self.options = UpdateOptions(**options)
        self.error_feedback = bool(error_feedback) and not self.options.lossless
        self.sent_bytes: list = []  #: bytes of each update this mod sent (in this process)

    def __repr__(self):
        opts = {k: v for k, v in self.options.__dict__.items() if v != UpdateOptions().__dict__[k]}
        return f"NNCodecMod({', '.join(f'{k}={v!r}' for k, v in opts.items())})"

    def __call__(self, msg: Message, ctx, call_next) -> Message:
        kind = msg.metadata.message_type
        if not msg.has_content() or kind not in (MessageType.TRAIN, MessageType.EVALUATE):
            return call_next(msg, ctx)
        base = None
        for key in list(msg.content.array_records):
            rec = msg.content.array_records[key]
            coded = _coded(rec)
            if coded is not None:
                if coded[0] != STYPE_MODEL:
                    raise UsageError(f"nncodec mod: a {coded[0]} array arrived in {key!r}; the server sends models")
                model = decode_bytes(coded[1])
                msg.content[key] = model_to_record(model)
            else:
                model = record_to_model(rec)
            base = model if base is None else base
        reply = call_next(msg, ctx)
        if kind != MessageType.TRAIN or base is None or not reply.has_content() or reply.has_error():
            return reply
        config = {}
        for c in msg.content.config_records.values():
            config.update(c)
        seed = config.get(CONFIG_SEED)
        seed = int(seed) % (1 << 64) if isinstance(seed, int) else secrets.randbits(64)
        bhash = base_sha256(base)
        for key in list(reply.content.array_records):
            rec = reply.content.array_records[key]
            if _coded(rec) is not None:
                continue
            model = record_to_model(rec)
            opts = UpdateOptions(**{**self.options.__dict__, "seed": seed})
            ef = _load_residual(ctx, key) if self.error_feedback else None
            data = encode_update(model, base, opts=opts, error_feedback=ef, base_hash=bhash)
            if ef is not None:
                _store_residual(ctx, key, ef)
            reply.content[key] = _coded_record(STYPE_UPDATE, data)
            self.sent_bytes.append(len(data))
        return reply


def _state_key(key: str) -> str:
    return f"nncodec.residual.{key}"


def _load_residual(ctx, key: str) -> ErrorFeedback:
    ef = ErrorFeedback()
    state = getattr(ctx, "state", None)
    if state is not None and _state_key(key) in state.array_records:
        ef.load_state_dict(record_to_model(state.array_records[_state_key(key)]))
    return ef


def _store_residual(ctx, key: str, ef: ErrorFeedback) -> None:
    state = getattr(ctx, "state", None)
    if state is not None:
        state[_state_key(key)] = model_to_record(ef.state_dict())


# ------------------------------------------------------------------ legacy strategy wrapper


def _legacy():
    from flwr.common import FitIns, Parameters, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server.strategy import Strategy

    return FitIns, Parameters, ndarrays_to_parameters, parameters_to_ndarrays, Strategy


def _make_legacy_strategy():
    FitIns, Parameters, ndarrays_to_parameters, parameters_to_ndarrays, Strategy = _legacy()
    from flwr.common import EvaluateIns

    class NNCodecStrategy(Strategy):
        """Wrap a ``flwr.server.strategy`` strategy (FedAvg, FedProx, ...) to decode nncodec updates.

        ``downlink=True`` sends the global model losslessly coded when that is
        smaller than the NumPy arrays; ``seed`` seeds the per-client, per-round
        dither seeds. Clients run :class:`NNCodecMod`; a client without it
        sends plain arrays, which pass through unchanged, but cannot read a
        coded downlink: use ``downlink=False`` when some clients lack the mod.
        """

        def __init__(self, strategy, *, downlink: bool = True, seed: int = 0):
            self.strategy = strategy
            self.downlink = downlink
            self.seed = int(seed)
            self._global: dict = {}
            self.rounds: dict = {}  #: round -> {"uplink": bytes, "downlink": bytes, "clients": n}

        def __repr__(self):
            return f"NNCodecStrategy({self.strategy!r})"

        def _stats(self, rnd):
            return self.rounds.setdefault(rnd, {"uplink": 0, "downlink": 0, "clients": 0,
                                                "eval_downlink": 0})

        def initialize_parameters(self, client_manager):
            return self.strategy.initialize_parameters(client_manager)

        def _send(self, parameters):
            arrays = parameters_to_ndarrays(parameters)
            model = {str(i): a for i, a in enumerate(arrays)}
            plain = sum(len(t) for t in parameters.tensors)
            if self.downlink:
                data = encode_tensors(model)
                if len(data) < plain:
                    return model, Parameters(tensors=[data], tensor_type=STYPE_MODEL), len(data)
            return model, parameters, plain

        def configure_fit(self, server_round, parameters, client_manager):
            pairs = self.strategy.configure_fit(server_round, parameters, client_manager)
            st = self._stats(server_round)
            sent: dict = {}
            out = []
            for i, (proxy, ins) in enumerate(pairs):
                key = id(ins.parameters)
                if key not in sent:
                    sent[key] = self._send(ins.parameters)
                model, params, n = sent[key]
                self._global[(server_round, proxy.cid)] = (model, base_sha256(model))
                config = dict(ins.config)
                config[CONFIG_SEED] = _round_seed(self.seed, server_round, i) & ((1 << 63) - 1)
                config[CONFIG_ROUND] = server_round
                out.append((proxy, FitIns(params, config)))
                st["downlink"] += n
                st["clients"] += 1
            return out

        def aggregate_fit(self, server_round, results, failures):
            st = self._stats(server_round)
            decoded = []
            for proxy, res in results:
                p = res.parameters
                st["uplink"] += sum(len(t) for t in p.tensors)
                if p.tensor_type == STYPE_UPDATE:
                    model, h = self._global[(server_round, proxy.cid)]
                    new = decode_update(p.tensors[0], model, base_hash=h)
                    res.parameters = ndarrays_to_parameters([new[k] for k in sorted(new, key=int)])
                decoded.append((proxy, res))
            for k in [k for k in self._global if k[0] == server_round]:
                del self._global[k]
            return self.strategy.aggregate_fit(server_round, decoded, failures)

        def configure_evaluate(self, server_round, parameters, client_manager):
            pairs = self.strategy.configure_evaluate(server_round, parameters, client_manager)
            st = self._stats(server_round)
            sent: dict = {}
            out = []
            for proxy, ins in pairs:
                key = id(ins.parameters)
                if key not in sent:
                    sent[key] = self._send(ins.parameters)
                _, params, n = sent[key]
                out.append((proxy, EvaluateIns(params, ins.config)))
                st["eval_downlink"] += n
            return out

        def aggregate_evaluate(self, server_round, results, failures):
            return self.strategy.aggregate_evaluate(server_round, results, failures)

        def evaluate(self, server_round, parameters):
            return self.strategy.evaluate(server_round, parameters)

    return NNCodecStrategy


# ------------------------------------------------------------------ Message API (flwr run)


class _MessageCodec:
    """The server side of the Message API: code the downlink, seed each client, decode and count the uplink."""

    def __init__(self, downlink: bool, seed: int):
        self.downlink = bool(downlink)
        self.seed = int(seed)
        self._global: dict = {}
        self.rounds: dict = {}

    def stats(self, rnd):
        return self.rounds.setdefault(rnd, {"uplink": 0, "downlink": 0, "clients": 0, "eval_downlink": 0})

    def prepare(self, server_round, messages, stat):
        """Give every message its own content: the (coded) arrays, and for training a seed of its own."""
        from flwr.app import ConfigRecord, RecordDict

        st = self.stats(server_round)
        out = []
        cache: dict = {}
        for i, m in enumerate(messages):
            if not m.has_content():
                out.append(m)
                continue
            content = RecordDict()
            for key, rec in m.content.items():
                if isinstance(rec, ArrayRecord):
                    if id(rec) not in cache:  # FedAvg sends every node the same content object
                        model = record_to_model(rec)
                        coded = rec
                        if self.downlink:
                            data = encode_tensors(model)
                            if len(data) < payload_bytes(rec):
                                coded = _coded_record(STYPE_MODEL, data)
                        cache[id(rec)] = (model, base_sha256(model), coded)
                    model, h, coded = cache[id(rec)]
                    content[key] = coded
                    st[stat] += payload_bytes(coded)
                    if stat == "downlink":
                        self._global[(server_round, m.metadata.dst_node_id)] = (model, h)
                elif isinstance(rec, ConfigRecord) and stat == "downlink":
                    c = ConfigRecord(dict(rec))
                    c[CONFIG_SEED] = _round_seed(self.seed, server_round, i) & ((1 << 63) - 1)
                    c[CONFIG_ROUND] = server_round
                    content[key] = c
                else:
                    content[key] = rec
            m.content = content
            if stat == "downlink":
                st["clients"] += 1
            out.append(m)
        return out

    def decode(self, server_round, replies):
        """The replies with every nncodec update decoded against the global model its node received."""
        st = self.stats(server_round)
        out = []
        for r in replies:
            if r.has_content():
                for key in list(r.content.array_records):
                    rec = r.content.array_records[key]
                    st["uplink"] += payload_bytes(rec)
                    coded = _coded(rec)
                    if coded is not None and coded[0] == STYPE_UPDATE:
                        model, h = self._global[(server_round, r.metadata.src_node_id)]
                        r.content[key] = model_to_record(decode_update(coded[1], model, base_hash=h))
            out.append(r)
        for k in [k for k in self._global if k[0] == server_round]:
            del self._global[k]
        return out


class NNCodecStrategyMixin:
    """Put before a ``flwr.serverapp.strategy`` class to decode nncodec updates: ``class S(NNCodecStrategyMixin, FedProx)``.

    Takes the keywords ``downlink`` (send the global model losslessly coded when
    that is smaller; every client then needs :class:`NNCodecMod`) and ``seed``
    (seeds the per-client, per-round dither seeds); the rest go to the strategy.
    Replies without nncodec arrays pass through unchanged. :attr:`rounds` maps
    each round to the payload bytes sent and received (``uplink``,
    ``downlink``, ``eval_downlink``) and the number of clients.
    """

    def __init__(self, *args, downlink: bool = True, seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self._nncodec = _MessageCodec(downlink, seed)

    @property
    def rounds(self) -> dict:
        return self._nncodec.rounds

    @property
    def downlink(self) -> bool:
        return self._nncodec.downlink

    def uplink_bytes(self) -> int:
        """Payload bytes of all training replies so far."""
        return sum(r["uplink"] for r in self.rounds.values())

    def configure_train(self, server_round, arrays, config, grid):
        return self._nncodec.prepare(server_round, list(super().configure_train(server_round, arrays, config, grid)),
                                     "downlink")

    def aggregate_train(self, server_round, replies):
        return super().aggregate_train(server_round, self._nncodec.decode(server_round, replies))

    def configure_evaluate(self, server_round, arrays, config, grid):
        return self._nncodec.prepare(server_round,
                                     list(super().configure_evaluate(server_round, arrays, config, grid)),
                                     "eval_downlink")


def _make_fedavg():
    from flwr.serverapp.strategy import FedAvg

    class NNCodecFedAvg(NNCodecStrategyMixin, FedAvg):
        """``FedAvg`` of ``flwr.serverapp.strategy`` that decodes nncodec updates and counts the bytes.

        ``NNCodecFedAvg(fraction_evaluate=0.0, min_train_nodes=2, downlink=True, seed=0)``:
        FedAvg's arguments plus ``downlink`` and ``seed`` (see
        :class:`NNCodecStrategyMixin`). Run it like FedAvg, ``strategy.start(grid=...,
        initial_arrays=..., num_rounds=...)``, with :class:`NNCodecMod` on the clients.
        """

        def summary(self) -> None:
            super().summary()
            from logging import INFO

            from flwr.supercore import log

            log(INFO, "\t└──> nncodec: updates decoded, downlink %s", "coded" if self.downlink else "plain")

    return NNCodecFedAvg


def _make_message_strategy():
    from flwr.serverapp.strategy import Strategy

    class NNCodecMessageStrategy(Strategy):
        """Wrap a ``flwr.serverapp.strategy`` strategy (FedAvg, ...) to decode nncodec updates.

        The wrapped strategy's own methods run unchanged; subclassing through
        :class:`NNCodecStrategyMixin` (or :class:`NNCodecFedAvg`) does the same
        without the wrapper.
        """

        def __init__(self, strategy, *, downlink: bool = True, seed: int = 0):
            self.strategy = strategy
            self._nncodec = _MessageCodec(downlink, seed)

        @property
        def rounds(self) -> dict:
            return self._nncodec.rounds

        @property
        def downlink(self) -> bool:
            return self._nncodec.downlink

        def summary(self) -> None:
            self.strategy.summary()

        def configure_train(self, server_round, arrays, config, grid):
            return self._nncodec.prepare(
                server_round, list(self.strategy.configure_train(server_round, arrays, config, grid)), "downlink")

        def aggregate_train(self, server_round, replies):
            return self.strategy.aggregate_train(server_round, self._nncodec.decode(server_round, replies))

        def configure_evaluate(self, server_round, arrays, config, grid):
            return self._nncodec.prepare(
                server_round, list(self.strategy.configure_evaluate(server_round, arrays, config, grid)),
                "eval_downlink")

        def aggregate_evaluate(self, server_round, replies):
            return self.strategy.aggregate_evaluate(server_round, replies)

    return NNCodecMessageStrategy


# The strategies are built on first use: each imports only its own Flower API (the legacy
# ``flwr.server`` one may leave Flower before the Message API does).
_FACTORIES = {"NNCodecStrategy": _make_legacy_strategy, "NNCodecMessageStrategy": _make_message_strategy,
              "NNCodecFedAvg": _make_fedavg}


def __getattr__(name):
    if name not in _FACTORIES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    cls = _FACTORIES[name]()
    globals()[name] = cls
    return cls
