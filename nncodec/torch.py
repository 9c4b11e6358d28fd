"""Fine-tuning a PyTorch model under a fixed compressed structure, then writing it to .nnc.

Compression that prunes, clusters or quantizes weights loses accuracy; a few
epochs of training *with the structure held fixed* win most of it back (Deep
Compression, Weightless). This module holds the structure fixed while you train
with your own data loader and loss, and then encodes exactly the weights you
trained::

    import nncodec.torch as nt

    cm = nt.compress_model(model, {
        "fc*.weight":   nt.cluster(k=16, sparsity=0.9),   # shared centroids, pruned
        "conv*.weight": nt.quantize(step=0.02),           # straight-through estimation
        "*.bias":       nt.quantize(step=0.01),
    })
    cm.finetune(train_loader, torch.nn.functional.cross_entropy, epochs=5, lr=1e-3)
    cm.encode("model.nnc")                                # or an open nncodec.Writer

Rules (what a plan maps a parameter name, or a shell glob of names, to):

* :func:`prune` -- a pruning mask: the weights pruned stay exactly zero
  (the forward pass multiplies by the mask, so their gradient is zero too);
  stored losslessly.
* :func:`cluster` -- shared centroids as in Deep Compression: each weight is
  tied to one of ``k`` centroids by a fixed assignment (pruned weights to a
  constant zero); the centroids are the trained parameters and the gradient of
  a centroid is the sum of the gradients of its members. Stored as ``kmeans``
  levels plus the smallest of ``ans``, ``zerorun`` and ``planes`` (Huffman).
* :func:`quantize` -- straight-through estimation: the forward pass uses
  ``step * round(w / step)`` of a float shadow weight ``w`` (masked if
  pruned), the backward pass hands the gradient to ``w`` unchanged. Stored as
  ``scalar`` levels with that step plus the smaller of ``ans`` and ``zerorun``.
* :func:`bloomier` -- a Weightless-style Bloomier filter. The layer is encoded
  when the rule is applied and the *decoded* weights, false positives
  included, are what the model uses from then on: frozen by default (the
  paper's recipe: freeze each encoded layer, fine-tune the later ones), or,
  with ``tune=True``, with its centroids trained (every position that reads a
  centroid back, false positives included, adds its gradient to it) and the
  filter's table kept as built.
* :func:`lossless` -- train freely, store exactly (also what happens to every
  parameter no rule names).

Every rule but :func:`lossless` takes ``freeze=True`` to hold that tensor fixed.
Parameters no rule matches are trained freely and stored losslessly, as are
buffers (e.g. BatchNorm statistics).

Rules can be applied in stages, which is how Deep Compression and Weightless
work: prune and retrain, then cluster (or encode with a Bloomier filter) and
retrain; :meth:`CompressedModel.apply` replaces a tensor's rule, starting from
its current (effective) weights.

The structure is kept with ``torch.nn.utils.parametrize``: ``model`` is
changed in place, stays an ordinary ``nn.Module`` and trains with any loop and
optimizer -- but create the optimizer *after* :func:`compress_model` (or
:meth:`~CompressedModel.apply`), since the trained tensors are new
parameters (``<module>.parametrizations.<name>.original``).
:meth:`CompressedModel.finetune` is a small Adam loop for the common case.
:meth:`CompressedModel.strip` removes the parametrizations, leaving plain
parameters with the effective values.

torch is imported by this module only; the rest of nncodec never needs it.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import io
import math

import numpy as np

try:
    import torch
    from torch import nn
    from torch.nn.utils import parametrize
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "nncodec.torch needs PyTorch: pip install torch==2.13.0 (the CPU build), "
        "or install nncodec with its [torch] extra"
    ) from e

from . import dtypes
from .errors import UsageError

__all__ = [
    "Rule",
    "prune",
    "cluster",
    "quantize",
    "bloomier",
    "lossless",
    "compress_model",
    "CompressedModel",
    "state_dict_to_numpy",
    "load_numpy_state_dict",
    "to_numpy",
]

_CODERS = ("auto", "ans", "zerorun", "huffman")


# ------------------------------------------------------------------ rules


@dataclasses.dataclass(frozen=True)
class Rule:
    """What to do with one tensor; build one with :func:`prune`, :func:`cluster`,
    :func:`quantize`, :func:`bloomier` or :func:`lossless`."""

    kind: str
    sparsity: float | None = None
    threshold: float | None = None
    k: int = 16
    step: float | None = None
    r: int = 4
    t: int = 8
    zstd: int | None = None
    tune: bool = False
    freeze: bool = False
    coder: str = "auto"
    centroid_digits: int | None = None
    iterations: int = 30


def _check_prune_args(sparsity, threshold):
    if sparsity is not None and threshold is not None:
        raise UsageError("give at most one of sparsity and threshold")
    if sparsity is not None and not (isinstance(sparsity, (int, float)) and 0.0 <= float(sparsity) <= 1.0):
        raise UsageError(f"sparsity must be a number in [0, 1], found {sparsity!r}")
    if threshold is not None and not (isinstance(threshold, (int, float)) and math.isfinite(threshold)
                                      and threshold >= 0):
        raise UsageError(f"threshold must be a finite number >= 0, found {threshold!r}")


def _check_coder(coder):
    if coder not in _CODERS:
        raise UsageError(f"coder must be one of {list(_CODERS)}, found {coder!r}")


def prune(sparsity: float | None = None, *, threshold: float | None = None, freeze: bool = False) -> Rule:
    """Magnitude pruning with a fixed mask.

    ``sparsity=s`` prunes the ``floor(s * size)`` smallest magnitudes of the
    tensor; ``threshold=t`` prunes every ``|w| < t`` (one threshold for a whole
    model: :func:`nncodec.codecs.quantize.global_threshold`). With neither, the
    weights that are zero now are the ones kept at zero.
    """
    _check_prune_args(sparsity, threshold)
    return Rule("prune", sparsity=sparsity, threshold=threshold, freeze=bool(freeze))


def cluster(k: int = 16, *, sparsity: float | None = None, threshold: float | None = None,
            centroid_digits: int | None = None, coder: str = "auto", iterations: int = 30,
            freeze: bool = False) -> Rule:
    """Weight sharing (Deep Compression): ``k`` trained centroids plus a constant zero.

    The tensor is first pruned as by :func:`prune` (``sparsity``/``threshold``;
    with neither, its current zeros stay zero), then the remaining weights are
    clustered by 1-D k-means (linear initialization, ``iterations`` Lloyd
    steps) and each is tied to its nearest centroid for good.
    ``centroid_digits=d`` rounds the initial centroids to ``d`` significant
    decimal digits and keeps them so when encoding: the centroids are stored as
    text in the tensor's record, and short numbers make it smaller (worth it
    for small models; fine-tuning makes up for the rounding). ``coder``:
    "ans", "zerorun", "huffman" (the ``planes`` codec) or "auto" (smallest).
    """
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 65535:
        raise UsageError(f"cluster: k must be an integer in [1, 65535], found {k!r}")
    if centroid_digits is not None and (not isinstance(centroid_digits, int) or not 1 <= centroid_digits <= 17):
        raise UsageError(f"cluster: centroid_digits must be None or an integer in [1, 17], found {centroid_digits!r}")
    _check_prune_args(sparsity, threshold)
    _check_coder(coder)
    return Rule("cluster", sparsity=sparsity, threshold=threshold, k=k, centroid_digits=centroid_digits,
                coder=coder, iterations=int(iterations), freeze=bool(freeze))


def quantize(step: float, *, sparsity: float | None = None, threshold: float | None = None,
             coder: str = "auto", freeze: bool = False) -> Rule:
    """Uniform quantization with ``step``, trained by straight-through estimation.

    A float shadow weight is kept and trained; the model sees
    ``step * round(shadow / step)``. With ``sparsity``/``threshold`` the
    tensor is also pruned by a fixed mask (pruned weights stay zero).
    """
    if not (isinstance(step, (int, float)) and math.isfinite(step) and step > 0):
        raise UsageError(f"quantize: step must be a finite number > 0, found {step!r}")
    _check_prune_args(sparsity, threshold)
    _check_coder(coder)
    return Rule("quantize", step=float(step), sparsity=sparsity, threshold=threshold, coder=coder,
                freeze=bool(freeze))


def bloomier(r: int = 4, t: int = 8, *, sparsity: float | None = None, threshold: float | None = None,
             zstd: int | None = None, tune: bool = False, iterations: int = 30) -> Rule:
    """Encode the tensor with a Bloomier filter now; the model then uses the decoded weights.

    ``r``, ``t``, ``zstd``: as :class:`nncodec.codecs.bloomier.Bloomier` (at
    most ``2**r - 1`` centroids; a pruned weight reads back a centroid with
    probability about ``c / 2**t``). The tensor is pruned first as by
    :func:`prune`. ``tune=False`` (default) freezes the decoded weights;
    ``tune=True`` trains the centroids with the table fixed (the false
    positives read the centroids too, and so follow them).
    """
    from .codecs.bloomier import Bloomier

    Bloomier(r=r, t=t, zstd=zstd, iterations=iterations)  # validates
    _check_prune_args(sparsity, threshold)
    return Rule("bloomier", r=int(r), t=int(t), zstd=zstd, sparsity=sparsity, threshold=threshold,
                tune=bool(tune), freeze=not tune, iterations=int(iterations))


def lossless(*, freeze: bool = False) -> Rule:
    """No structure: trained freely (unless ``freeze``) and stored exactly."""
    return Rule("lossless", freeze=bool(freeze))


# ------------------------------------------------------------------ parametrizations


class _Masked(nn.Module):
    """w * mask."""

    def __init__(self, mask):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, w):
        return w * self.mask


class _STE(nn.Module):
    """step * round(w * mask / step) forward, identity (times the mask) backward."""

    def __init__(self, mask, step: float):
        super().__init__()
        self.register_buffer("mask", mask)
        self.step = float(step)

    def forward(self, w):
        wm = w * self.mask
        # levels and reconstruction in float64, rounded once to the dtype: as the scalar codec decodes
        q = (torch.round(wm.detach().double() / self.step) * self.step).to(w.dtype)
        return q + (wm - wm.detach())  # the value is exactly q; the gradient goes to w


class _Tied(nn.Module):
    """cat([0], centroids)[idx]: the trained tensor is the centroids; idx 0 is a constant zero."""

    def __init__(self, idx, centroids):
        super().__init__()
        self.register_buffer("idx", idx)
        self._init = centroids

    def forward(self, c):
        return torch.cat([c.new_zeros(1), c])[self.idx]

    def right_inverse(self, w):
        init = self._init
        if init is not None:
            self._init = None
            return init.to(device=w.device, dtype=w.dtype)
        # assigning a whole tensor: each centroid becomes the mean of its members
        k = int(self.idx.max().item()) if self.idx.numel() else 0
        flat = self.idx.reshape(-1)
        sums = torch.zeros(k + 1, dtype=w.dtype, device=w.device).index_add_(0, flat, w.detach().reshape(-1))
        cnt = torch.zeros(k + 1, dtype=w.dtype, device=w.device).index_add_(0, flat, torch.ones_like(sums[flat]))
        return (sums / cnt.clamp_min(1))[1:]


# ------------------------------------------------------------------ helpers


def to_numpy(t) -> np.ndarray:
    """A detached CPU copy of tensor ``t`` as a NumPy array (bfloat16 and float8 via ml_dtypes)."""
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(dtypes.to_numpy("bfloat16")).copy()
    for tdt, name in ((getattr(torch, "float8_e4m3fn", None), "float8_e4m3fn"),
                      (getattr(torch, "float8_e5m2", None), "float8_e5m2")):
        if tdt is not None and t.dtype == tdt:
            return t.view(torch.uint8).numpy().view(dtypes.to_numpy(name)).copy()
    return t.numpy().copy()


def _from_numpy(a: np.ndarray, like=None):
    a = np.asarray(a)
    name = dtypes.from_numpy(a.dtype)
    if name == "bfloat16":
        t = torch.from_numpy(np.ascontiguousarray(a).view(np.int16).copy()).view(torch.bfloat16)
    elif name.startswith("float8"):
        t = torch.from_numpy(np.ascontiguousarray(a).view(np.uint8).copy()).view(getattr(torch, name))
    else:
        t = torch.from_numpy(np.array(a, copy=True))
    if like is not None:
        t = t.to(device=like.device, dtype=like.dtype)
    return t


def _effective(model: nn.Module) -> dict:
    """Name -> tensor of every parametrized attribute, under its plain name."""
    out = {}
    for mname, m in model.named_modules():
        if parametrize.is_parametrized(m):
            for pname in m.parametrizations:
                out[f"{mname}.{pname}" if mname else pname] = getattr(m, pname)
    return out


def state_dict_to_numpy(model_or_state_dict) -> dict:
    """Name -> NumPy array of a model's state dict (or of a state dict).

    For a model with parametrizations (e.g. after :func:`compress_model`), the
    parametrized tensors appear under their plain names (``fc.weight``) with
    their effective values, and the parametrizations' internals are left out.
    """
    if isinstance(model_or_state_dict, nn.Module):
        model = model_or_state_dict
        eff = _effective(model)
        out = {}
        for k, v in model.state_dict().items():
            if ".parametrizations." in f".{k}":
                continue
            out[k] = to_numpy(v)
        for k, v in eff.items():
            out[k] = to_numpy(v)
        return out
    return {k: to_numpy(v) if isinstance(v, torch.Tensor) else np.asarray(v)
            for k, v in model_or_state_dict.items()}


def _resolve(model: nn.Module, name: str):
    mname, _, attr = name.rpartition(".")
    mod = model.get_submodule(mname) if mname else model
    return mod, attr


def load_numpy_state_dict(model: nn.Module, arrays: dict, *, strict: bool = True) -> nn.Module:
    """Copy NumPy arrays (e.g. ``nncodec.decode_bytes(...)``) into ``model``'s parameters and buffers.

    Names are those of :func:`state_dict_to_numpy`. Values are cast to each
    tensor's dtype and device. Assigning to a parametrized tensor goes through
    its parametrization (a clustered tensor takes the mean of each cluster).
    ``strict``: raise on names missing from ``arrays`` or not in the model.
    """
    want = list(state_dict_to_numpy_names(model))
    missing = [k for k in want if k not in arrays]
    unexpected = [k for k in arrays if k not in want]
    if strict and (missing or unexpected):
        raise UsageError(f"load_numpy_state_dict: missing {missing}, unexpected {unexpected}")
    with torch.no_grad():
        for name, a in arrays.items():
            if name not in want:
                continue
            mod, attr = _resolve(model, name)
            cur = getattr(mod, attr)
            if tuple(cur.shape) != tuple(np.shape(a)):
                raise UsageError(f"load_numpy_state_dict: {name!r} has shape {tuple(np.shape(a))}, "
                                 f"the model {tuple(cur.shape)}")
            t = _from_numpy(a, like=cur)
            if parametrize.is_parametrized(mod, attr):
                setattr(mod, attr, t)
            else:
                cur.copy_(t)
    return model


def state_dict_to_numpy_names(model: nn.Module):
    """The names :func:`state_dict_to_numpy` gives for ``model``, in order."""
    eff = _effective(model)
    for k in model.state_dict():
        if ".parametrizations." not in f".{k}":
            yield k
    yield from eff


def _mask_of(w: np.ndarray, rule: Rule) -> np.ndarray:
    """Bool mask of the weights kept (True) by the rule's pruning."""
    from .codecs.quantize import sparsity_threshold

    a = np.abs(w.astype(np.float64)).reshape(-1)
    if rule.sparsity is not None:
        thr = sparsity_threshold(a, rule.sparsity)
    elif rule.threshold is not None:
        thr = rule.threshold
    else:
        return (a != 0).reshape(w.shape)
    return (a >= thr).reshape(w.shape) & (a != 0).reshape(w.shape)


def _round_digits(c: np.ndarray, digits: int | None) -> np.ndarray:
    if digits is None:
        return c
    out = np.array([float(f"{v:.{digits - 1}e}") for v in c], dtype=np.float64)
    return out


def _kmeans(values: np.ndarray, k: int, iterations: int) -> np.ndarray:
    from .codecs.quantize import KMeans

    return KMeans(k=min(k, max(1, np.unique(values).size)), iterations=iterations).fit(values.astype(np.float32))


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
        return names + [n for n in _effective(self.model) if n not in names]

    def apply(self, plan: dict) -> "CompressedModel":
        """Apply ``plan`` (parameter name or shell glob -> :class:`Rule`; the first
        match wins); a tensor that already has a rule gets the new one, starting
        from its current effective weights. Returns ``self``."""
        if not isinstance(plan, dict):
            raise UsageError("plan must be a dict: parameter name or glob -> rule")
        for pat, rule in plan.items():
            if not isinstance(rule, Rule):
                raise UsageError(f"plan[{pat!r}] is {rule!r}; build rules with nncodec.torch.prune, cluster, "
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
        mod, attr = _resolve(self.model, name)
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
            mask = _mask_of(w, rule)
            parametrize.register_parametrization(mod, attr, _Masked(torch.from_numpy(mask).to(dev, dt)))
        elif rule.kind == "quantize":
            mask = _mask_of(w, rule) if (rule.sparsity is not None or rule.threshold is not None) \
                else np.ones(w.shape, dtype=bool)
            parametrize.register_parametrization(mod, attr, _STE(torch.from_numpy(mask).to(dev, dt), rule.step))
        elif rule.kind == "cluster":
            mask = _mask_of(w, rule)
            x = w.astype(np.float64)
            vals = x[mask]
            if vals.size:
                c = _round_digits(_kmeans(vals, rule.k, rule.iterations), rule.centroid_digits)
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
                mod, attr, _Tied(torch.from_numpy(idx).to(dev), torch.from_numpy(c).to(dev, dt)))
        elif rule.kind == "bloomier":
            idx, c, st.payload, st.stats = self._bloomier(name, w, rule)
            parametrize.register_parametrization(
                mod, attr, _Tied(torch.from_numpy(idx).to(dev), torch.from_numpy(c).to(dev, dt)))
        else:  # pragma: no cover - Rule is built by the functions above
            raise UsageError(f"unknown rule kind {rule.kind!r}")
        if rule.kind != "lossless":
            getattr(mod.parametrizations, attr).original.requires_grad_(not rule.freeze)
        self._states[name] = st

    def _bloomier(self, name, w, rule):
        from .codecs import ArraySpec, Context
        from .codecs import bloomier as B

        mask = _mask_of(w, rule)
        x = np.where(mask, w, 0).astype(w.dtype)
        dname = dtypes.from_numpy(x.dtype)
        codec = B.Bloomier(r=rule.r, t=rule.t, zstd=rule.zstd, iterations=rule.iterations)
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
            mod, attr = _resolve(self.model, name)
            if parametrize.is_parametrized(mod, attr):
                parametrize.remove_parametrizations(mod, attr, leave_parametrized=True)
            getattr(mod, attr).requires_grad_(True)
        self._states.clear()
        return self.model

    def _tied_parts(self, name: str):
        mod, attr = _resolve(self.model, name)
        plist = getattr(mod.parametrizations, attr)
        tied = plist[0]
        idx = tied.idx.detach().cpu().numpy()
        c = plist.original.detach().cpu().numpy().astype(np.float64)
        return idx, c

    def _pipeline(self, name: str, arr: np.ndarray, st: _State, ctx):
        """(pipeline, payload) of one tensor under its rule."""
        from .codecs.ans import Ans, ZeroRun
        from .codecs.planes import Planes
        from .codecs.quantize import KMeans, Scalar
        from .pipeline import Pipeline

        rule = st.rule
        if rule.kind == "bloomier":
            return self._bloomier_payload(name, st)
        if rule.kind == "cluster":
            from .codecs.quantize import to_dtype

            dname = dtypes.from_numpy(arr.dtype)
            if rule.centroid_digits is not None:
                # trained centroids are rounded to the digits asked for; the model is updated to match
                idx, c = self._tied_parts(name)
                short = _round_digits(c, rule.centroid_digits)
                if not np.array_equal(to_dtype(short, dname).astype(np.float64), c):
                    mod, attr = _resolve(self.model, name)
                    orig = getattr(mod.parametrizations, attr).original
                    with torch.no_grad():
                        orig.copy_(torch.from_numpy(short).to(orig))
                    arr = to_numpy(getattr(mod, attr))
            idx, c = self._tied_parts(name)
            used = np.unique(idx)
            vals = np.concatenate([[0.0], c])[used]
            # the stored centroids: the values as the model holds them (exact in the dtype)
            table = np.unique(to_dtype(vals, dname).astype(np.float64))
            if rule.centroid_digits is not None:  # short text where it gives the same values
                short = _round_digits(table, rule.centroid_digits)
                same = to_dtype(short, dname).astype(np.float64) == table
                table = np.where(same, short, table)
            q = KMeans(centroids=table)
            coders = {"ans": Ans, "zerorun": ZeroRun, "huffman": lambda: Planes(transform="none")}
        elif rule.kind == "quantize":
            q = Scalar(rule.step)
            coders = {"ans": Ans, "zerorun": ZeroRun}
            if rule.coder == "huffman":
                coders["huffman"] = lambda: Planes(transform="zigzag")
        else:
            return None
        levels = q.encode(arr, ctx)
        names = list(coders) if rule.coder == "auto" else [rule.coder]
        best = None
        for cid in names:
            coder = coders[cid]()
            data = coder.encode(levels, ctx)
            if best is None or len(data) < len(best[1]):
                best = (Pipeline([q, coder]), data)
        return best

    def _bloomier_payload(self, name: str, st: _State):
        from .codecs import bloomier as B
        from .pipeline import Pipeline

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
                        mod, attr = _resolve(self.model, name)
                        orig = getattr(mod.parametrizations, attr).original
                        orig.copy_(torch.from_numpy(c32.astype(np.float64)).to(orig))
        return Pipeline([B.Bloomier(r=rule.r, t=rule.t, zstd=rule.zstd)]), payload

    def encode(self, file, *, metadata: dict | None = None) -> list:
        """Write every tensor of the state dict (effective values, plain names) to ``file``.

        ``file``: a path or binary file object (a new .nnc file is written and
        closed) or an open :class:`nncodec.Writer` (tensors are added to it; you
        close it). Tensors with a rule are stored with its pipeline; the rest
        (and buffers) losslessly. Returns the :class:`nncodec.api.TensorInfo`
        of each tensor written.
        """
        from .api import Writer
        from .codecs import Context

        arrays = self.weights()
        own = not isinstance(file, Writer)
        w = Writer(file, metadata=metadata) if own else file
        infos = []
        try:
            for name, arr in arrays.items():
                st = self._states.get(name)
                enc = self._pipeline(name, arr, st, Context(name=name)) if st is not None else None
                if enc is None:
                    infos.append(w.add(name, arr))
                else:
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
