"""The parametrizations that hold a tensor to its structure, and torch <-> NumPy helpers."""

from __future__ import annotations

import importlib

import numpy as np

try:
    import torch
    from torch import nn
    from torch.nn.utils import parametrize
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "nncodec.finetune needs PyTorch: pip install torch==2.13.0 (the CPU build), "
        "or install nncodec with its [torch] extra"
    ) from e

from .. import dtypes
from ..errors import UsageError
from .rules import Rule


def codec_module(codec_id: str):
    """The module of a codec id's class (for its public helpers, e.g. ``inspect``), via the registry."""
    from ..codecs import codec_class

    return importlib.import_module(codec_class(codec_id).__module__)


# ------------------------------------------------------------------ parametrizations


class Masked(nn.Module):
    """w * mask."""

    def __init__(self, mask):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, w):
        return w * self.mask


class STE(nn.Module):
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


class Tied(nn.Module):
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


def effective_tensors(model: nn.Module) -> dict:
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
        eff = effective_tensors(model)
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


def resolve(model: nn.Module, name: str):
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
            mod, attr = resolve(model, name)
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
    eff = effective_tensors(model)
    for k in model.state_dict():
        if ".parametrizations." not in f".{k}":
            yield k
    yield from eff


def mask_of(w: np.ndarray, rule: Rule) -> np.ndarray:
    """Bool mask of the weights kept (True) by the rule's pruning."""
    a = np.abs(w.astype(np.float64)).reshape(-1)
    if rule.sparsity is not None:
        thr = codec_module("prune").sparsity_threshold(a, rule.sparsity)
    elif rule.threshold is not None:
        thr = rule.threshold
    else:
        return (a != 0).reshape(w.shape)
    return (a >= thr).reshape(w.shape) & (a != 0).reshape(w.shape)


def round_digits(c: np.ndarray, digits: int | None) -> np.ndarray:
    if digits is None:
        return c
    out = np.array([float(f"{v:.{digits - 1}e}") for v in c], dtype=np.float64)
    return out


def kmeans_centroids(values: np.ndarray, k: int, iterations: int) -> np.ndarray:
    from ..codecs import codec_class

    return codec_class("kmeans")(k=min(k, max(1, np.unique(values).size)), iterations=iterations).fit(values.astype(np.float32)).centroids
