"""CompressedModel: a model held to compressed rules, trained, then encoded (see :mod:`nncodec.finetune`)."""

from __future__ import annotations

import dataclasses
import fnmatch
import io

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from .. import dtypes
from ..codecs import codec_class
from ..errors import UsageError
from .layers import (
    STE,
    Masked,
    Tied,
    codec_module,
    effective_tensors,
    kmeans_centroids,
    mask_of,
    resolve,
    round_digits,
    state_dict_to_numpy,
    to_numpy,
)
from .rules import Rule


# ------------------------------------------------------------------ the model


@dataclasses.dataclass
class _State:
    rule: Rule
    #: bloomier: the payload as built, and statistics
    payload: bytes | None = None
    stats: dict | None = None


class CompressedModel:
    """A model whose tensors are held to a compressed structure (see the module docstring).

    ``model`` is changed in place (``self.model`` is the same object).
    """

    def __init__(self, model: nn.Module, plan: dict | None = None):
        if not isinstance(model, nn.Module):
            raise UsageError(f"compress_model needs a torch.nn.Module, found {type(model).__name__}")
        self.model = model
        self._order = [k for k in model.state_dict()]
        self._states: dict = {}
        if plan:
            self.apply(plan)

    # -- structure

    def _param_names(self) -> list:
        names = [n for n, _ in self.model.named_parameters() if ".parametrizations." not in f".{n}"]
        return names + [n for n in effective_tensors(self.model) if n not in names]

    def apply(self, plan: dict) -> "CompressedModel":
        """Apply ``plan`` (parameter name or shell glob -> :class:`Rule`; the first
        match wins); a tensor that already has a rule gets the new one, starting
        from its current effective weights. Returns ``self``."""
        if not isinstance(plan, dict):
            raise UsageError("plan must be a dict: parameter name or glob -> rule")
        for pat, rule in plan.items():
            if not isinstance(rule, Rule):
                raise UsageError(f"plan[{pat!r}] is {rule!r}; build rules with nncodec.finetune.prune, cluster, "
                                 f"quantize, bloomier or lossless")
        matched = set()
        for name in self._param_names():
            for pat, rule in plan.items():
                if name == pat or fnmatch.fnmatchcase(name, pat):
                    self._set_rule(name, rule)
                    matched.add(pat)
                    break
        unused = [p for p in plan if p not in matched]
        if unused:
            raise UsageError(f"plan entries {unused} match no parameter of the model; parameters are "
                             f"{self._param_names()}")
        return self

    def _set_rule(self, name: str, rule: Rule) -> None:
        mod, attr = resolve(self.model, name)
        if parametrize.is_parametrized(mod, attr):
            parametrize.remove_parametrizations(mod, attr, leave_parametrized=True)
        param = getattr(mod, attr)
        w = to_numpy(param)
        if w.dtype.kind != "f" and dtypes.from_numpy(w.dtype) not in ("bfloat16",):
            raise UsageError(f"{name!r}: rules take float tensors, not {w.dtype}")
        dev, dt = param.device, param.dtype
        st = _State(rule)
        if rule.kind == "lossless":
            param.requires_grad_(not rule.freeze)
        elif rule.kind == "prune":
            mask = mask_of(w, rule)
            parametrize.register_parametrization(mod, attr, Masked(torch.from_numpy(mask).to(dev, dt)))
        elif rule.kind == "quantize":
            mask = mask_of(w, rule) if (rule.sparsity is not None or rule.threshold is not None) \
                else np.ones(w.shape, dtype=bool)
            parametrize.register_parametrization(mod, attr, STE(torch.from_numpy(mask).to(dev, dt), rule.step))
        elif rule.kind == "cluster":
            mask = mask_of(w, rule)
            x = w.astype(np.float64)
            vals = x[mask]
            if vals.size:
                c = round_digits(kmeans_centroids(vals, rule.k, rule.iterations), rule.centroid_digits)
                c = np.unique(c[c != 0])
                if c.size == 0:
                    c = np.array([float(np.mean(vals)) or 1.0])
                mids = 0.5 * (c[:-1] + c[1:])
                lab = np.searchsorted(mids, vals) + 1
            else:
                c, lab = np.zeros(1), np.zeros(0, dtype=np.int64)
            idx = np.zeros(w.shape, dtype=np.int64)
            idx[mask] = lab
            parametrize.register_parametrization(
                mod, attr, Tied(torch.from_numpy(idx).to(dev), torch.from_numpy(c).to(dev, dt)))
        elif rule.kind == "bloomier":
            idx, c, st.payload, st.stats = self._bloomier(name, w, rule)
            parametrize.register_parametrization(
                mod, attr, Tied(torch.from_numpy(idx).to(dev), torch.from_numpy(c).to(dev, dt)))
        else:  # pragma: no cover - Rule is built by the functions above
            raise UsageError(f"unknown rule kind {rule.kind!r}")
        if rule.kind != "lossless":
            getattr(mod.parametrizations, attr).original.requires_grad_(not rule.freeze)
        self._states[name] = st

    def _bloomier(self, name, w, rule):
        from ..codecs import ArraySpec, Context

        B = codec_module("bloomier")
        mask = mask_of(w, rule)
        x = np.where(mask, w, 0).astype(w.dtype)
        dname = dtypes.from_numpy(x.dtype)
        codec = codec_class("bloomier")(r=rule.r, t=rule.t, zstd=rule.zstd, iterations=rule.iterations)
        ctx = Context(name=name)
        payload = codec.encode(x, ctx)
        decoded = codec.decode(payload, ArraySpec(dname, x.shape), ctx)
        info = B.inspect(payload)
        cent = np.asarray(info["centroids"], dtype=np.float64)
        d = np.asarray(decoded).astype(np.float64)
        idx = np.zeros(x.shape, dtype=np.int64)
        nz = d != 0
        if cent.size:
            j = np.searchsorted(cent, d[nz])
            j = np.clip(j, 0, cent.size - 1)
            idx[nz] = j + 1
        stats = {
            "n": info["n"], "c": info["c"], "r": info["r"], "t": info["t"], "size": int(x.size),
            "payload_bytes": len(payload),
            "false_positives": int(np.count_nonzero(nz & (x == 0))),
            "measured_fp_rate": B.measured_false_positive_rate(x, decoded),
            "expected_fp_rate": B.expected_false_positive_rate(info["t"], info["c"]),
        }
        if cent.size == 0:
            cent = np.zeros(1)
        return idx, cent, payload, stats

    @property
    def rules(self) -> dict:
        """Parameter name -> the :class:`Rule` applied to it."""
        return {n: s.rule for n, s in self._states.items()}

    @property
    def bloomier_stats(self) -> dict:
        """Per Bloomier-coded tensor: n (keys), c (centroids), r, t, size, payload_bytes,
        false_positives, measured_fp_rate (of the pruned positions) and expected_fp_rate (c / 2**t)."""
        return {n: dict(s.stats) for n, s in self._states.items() if s.rule.kind == "bloomier"}

    # -- training

    def parameters(self):
        """The tensors that train (``requires_grad``): pass these to your optimizer."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def finetune(self, loader, loss_fn, epochs: int = 1, lr: float = 1e-3, *, optimizer=None,
                 weight_decay: float = 0.0, schedule: str = "cosine", device=None, callback=None) -> list:
        """Train the model with the structure fixed; returns the mean loss of each epoch.

        ``loader``: an iterable of ``(inputs, targets)`` batches, iterated once per
        epoch (a ``DataLoader``, a list). ``loss_fn(model(inputs), targets)`` is
        minimized with Adam (``lr``, ``weight_decay``) and a cosine schedule to 0
        over all steps (``schedule="constant"`` for none), or with ``optimizer``
        (a ``torch.optim.Optimizer`` built over :meth:`parameters`; then ``lr``,
        ``weight_decay`` and ``schedule`` are not used). ``device``: where the
        batches go (default: where the model is). ``callback(epoch, mean_loss)``
        is called after each epoch.
        """
        params = self.parameters()
        if not params:
            raise UsageError("finetune: every tensor is frozen; nothing to train")
        if optimizer is None:
            optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
            sched = None
            if schedule == "cosine":
                try:
                    steps = epochs * len(loader)
                except TypeError:
                    steps = None
                if steps:
                    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
            elif schedule != "constant":
                raise UsageError(f"finetune: schedule must be 'cosine' or 'constant', found {schedule!r}")
        else:
            sched = None
        if device is None:
            p0 = next(iter(self.model.parameters()), None)
            device = p0.device if p0 is not None else torch.device("cpu")
        was_training = self.model.training
        self.model.train()
        history = []
        try:
            for ep in range(int(epochs)):
                total, count = 0.0, 0
                for xb, yb in loader:
                    xb, yb = xb.to(device), yb.to(device)
                    optimizer.zero_grad(set_to_none=True)
                    loss = loss_fn(self.model(xb), yb)
                    loss.backward()
                    optimizer.step()
                    if sched is not None:
                        sched.step()
                    n = len(xb) if hasattr(xb, "__len__") else 1
                    total += float(loss.detach()) * n
                    count += n
                mean = total / max(count, 1)
                history.append(mean)
                if callback is not None:
                    callback(ep, mean)
        finally:
            self.model.train(was_training)
        return history

    # -- results

    def weights(self) -> dict:
        """The effective tensors (what the model computes with and what :meth:`encode` stores)
        as NumPy arrays, by their plain names, in the model's original state-dict order."""
        got = state_dict_to_numpy(self.model)
        out = {k: got[k] for k in self._order if k in got}
        out.update({k: v for k, v in got.items() if k not in out})
        return out

    def strip(self) -> nn.Module:
        """Remove the parametrizations (the model keeps the effective values as plain
        parameters); the rules are forgotten. Returns the model."""
        for name in list(self._states):
            mod, attr = resolve(self.model, name)
            if parametrize.is_parametrized(mod, attr):
                parametrize.remove_parametrizations(mod, attr, leave_parametrized=True)
            getattr(mod, attr).requires_grad_(True)
        self._states.clear()
        return self.model

    def _tied_parts(self, name: str):
        mod, attr = resolve(self.model, name)
        plist = getattr(mod.parametrizations, attr)
        tied = plist[0]
        idx = tied.idx.detach().cpu().numpy()
        c = plist.original.detach().cpu().numpy().astype(np.float64)
        return idx, c

    def _candidates(self, name: str, arr: np.ndarray, st: _State):
        """``(array, candidate pipelines)`` of one tensor under a cluster or quantize rule, else None."""
        from ..pipeline import Pipeline

        rule = st.rule
        planes = lambda transform: lambda: codec_class("planes")(transform=transform)  # noqa: E731
        if rule.kind == "cluster":
            dname = dtypes.from_numpy(arr.dtype)
            if rule.centroid_digits is not None:
                # trained centroids are rounded to the digits asked for; the model is updated to match
                idx, c = self._tied_parts(name)
                short = round_digits(c, rule.centroid_digits)
                if not np.array_equal(dtypes.round_float(short, dname).astype(np.float64), c):
                    mod, attr = resolve(self.model, name)
                    orig = getattr(mod.parametrizations, attr).original
                    with torch.no_grad():
                        orig.copy_(torch.from_numpy(short).to(orig))
                    arr = to_numpy(getattr(mod, attr))
            idx, c = self._tied_parts(name)
            used = np.unique(idx)
            vals = np.concatenate([[0.0], c])[used]
            # the stored centroids: the values as the model holds them (exact in the dtype)
            table = np.unique(dtypes.round_float(vals, dname).astype(np.float64))
            if rule.centroid_digits is not None:  # short text where it gives the same values
                short = round_digits(table, rule.centroid_digits)
                same = dtypes.round_float(short, dname).astype(np.float64) == table
                table = np.where(same, short, table)
            q = codec_class("kmeans")(centroids=table)
            coders = {"ans": codec_class("ans"), "zerorun": codec_class("zerorun"), "huffman": planes("none")}
        elif rule.kind == "quantize":
            q = codec_class("scalar")(rule.step)
            coders = {"ans": codec_class("ans"), "zerorun": codec_class("zerorun")}
            if rule.coder == "huffman":
                coders["huffman"] = planes("zigzag")
        else:
            return None
        names = list(coders) if rule.coder == "auto" else [rule.coder]
        return arr, [Pipeline([q, coders[cid]()]) for cid in names]

    def _bloomier_payload(self, name: str, st: _State):
        from ..pipeline import Pipeline

        B = codec_module("bloomier")
        rule = st.rule
        payload = st.payload
        info = B.inspect(payload)
        c_old = np.asarray(info["centroids"], dtype=np.float32)
        if c_old.size:
            _, c = self._tied_parts(name)
            c32 = c.astype(np.float32)[: c_old.size]
            for i in range(1, c32.size):  # the payload needs strictly increasing centroids
                if not c32[i] > c32[i - 1]:
                    c32[i] = np.nextafter(c32[i - 1], np.float32(np.inf))
            if not np.array_equal(c32, c_old):
                head = B.HEADER_SIZE
                payload = bytes(payload[:head]) + c32.astype("<f4").tobytes() + bytes(payload[head + 4 * c32.size:])
                if not np.array_equal(c32, c.astype(np.float32)):  # keep the model equal to what is stored
                    with torch.no_grad():
                        mod, attr = resolve(self.model, name)
                        orig = getattr(mod.parametrizations, attr).original
                        orig.copy_(torch.from_numpy(c32.astype(np.float64)).to(orig))
        return Pipeline([codec_class("bloomier")(r=rule.r, t=rule.t, zstd=rule.zstd)]), payload

    def encode(self, file, *, metadata: dict | None = None) -> list:
        """Write every tensor of the state dict (effective values, plain names) to ``file``.

        ``file``: a path or binary file object (a new .nnc file is written and
        closed) or an open :class:`nncodec.Writer` (tensors are added to it; you
        close it). Tensors with a rule are stored with its pipeline; the rest
        (and buffers) losslessly. Returns the :class:`nncodec.api.TensorInfo`
        of each tensor written.
        """
        from ..api import Writer
        from ..codecs import Context
        from ..encode import smallest

        arrays = self.weights()
        own = not isinstance(file, Writer)
        w = Writer(file, metadata=metadata) if own else file
        infos = []
        try:
            for name, arr in arrays.items():
                st = self._states.get(name)
                if st is not None and st.rule.kind == "bloomier":
                    enc = self._bloomier_payload(name, st)
                else:
                    cands = self._candidates(name, arr, st) if st is not None else None
                    if cands is None:  # no rule, lossless or prune: the lossless choice of nncodec.encode
                        infos.append(w.add(name, arr))
                        continue
                    arr, pipes = cands
                    enc = smallest(dtypes.as_stored(arr)[0], pipes, Context(name=name))
                pipe, payload = enc
                stored, dt = dtypes.as_stored(arr)
                infos.append(w.add_encoded(name, dt, stored.shape, pipe, payload))
            if own:
                w.close()
        except BaseException:
            if own:
                w.abort()
            raise
        return infos

    def encode_bytes(self, *, metadata: dict | None = None) -> bytes:
        """:meth:`encode` to an in-memory .nnc file."""
        buf = io.BytesIO()
        self.encode(buf, metadata=metadata)
        return buf.getvalue()

    def summary(self) -> dict:
        """Per tensor with a rule: kind, size, zeros, distinct values (and Bloomier statistics)."""
        out = {}
        arrays = self.weights()
        for name, st in self._states.items():
            a = arrays[name]
            d = {"kind": st.rule.kind, "size": int(a.size), "zeros": int(np.count_nonzero(a == 0)),
                 "distinct": int(np.unique(a).size), "frozen": st.rule.freeze}
            if st.stats:
                d.update(st.stats)
            out[name] = d
        return out


def compress_model(model: nn.Module, plan: dict | None = None) -> CompressedModel:
    """Hold ``model`` (changed in place) to the structure of ``plan`` (name or glob -> :class:`Rule`).

    See the module docstring; ``plan`` may be empty and filled later with
    :meth:`CompressedModel.apply`.
    """
    return CompressedModel(model, plan)
