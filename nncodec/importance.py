"""Importance weights for rate allocation: which weights matter to the network's function.

An importance map sends tensor names to a **scalar** (the tensor's error counts that many
times) or a **1-D vector of per-input-column weights**: for a matrix ``y = W x`` (``W`` of
shape ``(out, in, ...)``, the input axis being axis 1 as in ``nn.Linear`` and ``nn.Conv*``
weights), entry ``j`` is the mean of ``x_j**2`` over data, so that ``sum_ij e_ij**2 c_j``
is the layer's output error ``E||(W - W^) x||**2`` when the errors are uncorrelated. The
rate allocator (:mod:`nncodec.encode.rate`, spec/RATE.md section 4) weighs each tensor's
measured distortion by it; the quantizer and the file format are unchanged (every step is
in the file already), so importance only changes which step each tensor gets.

Three sources:

* ``"auto"`` (:func:`auto`): data-free, from the LayerNorm/RMSNorm weights that feed each
  matrix where the names show it (the rule is in :func:`auto`);
* a file (:func:`load`): ``.npz`` or ``.safetensors``, name -> scalar or vector, e.g. written
  by :func:`collect`;
* a dict of the same.

:func:`collect` measures the per-column means with forward hooks on a torch model over a
few batches (the only function here that imports torch).
"""

from __future__ import annotations

import os
import re
import warnings

import numpy as np

from .errors import UsageError

AUTO = "auto"

# ------------------------------------------------------------------ the data-free rule

#: the last module name of a matrix that reads the attention sublayer's input
ATTN_IN = {"q_proj", "k_proj", "v_proj", "qkv_proj", "query", "key", "value", "wq", "wk", "wv", "wqkv",
           "qkv", "c_attn", "in_proj", "query_key_value", "to_q", "to_k", "to_v", "Wqkv"}
#: ... the feed-forward sublayer's input (``intermediate.dense`` too)
MLP_IN = {"gate_proj", "up_proj", "gate_up_proj", "fc1", "c_fc", "w1", "w3", "dense_h_to_4h", "lin1",
          "wi", "wi_0", "wi_1"}
#: ... the output head (fed by the final norm)
HEAD = {"lm_head"}
#: norms before the attention sublayer of a pre-norm block
PRE_ATTN_NORMS = {"input_layernorm", "ln_1", "ln1", "norm1", "attention_norm", "attn_norm",
                  "pre_attention_layernorm", "layernorm_before", "ln_attn"}
#: norms before the feed-forward sublayer of a pre-norm block
PRE_MLP_NORMS = {"post_attention_layernorm", "ln_2", "ln2", "norm2", "ffn_norm", "pre_feedforward_layernorm",
                 "layernorm_after", "ln_mlp", "mlp_norm"}
#: norms at the end of a stack (before the head)
FINAL_NORMS = {"norm", "ln_f", "final_layernorm", "final_layer_norm", "final_norm"}
_NORM_LEAF = re.compile(r"(?i).*(norm|^ln(_?\w*)?$)")
_BLOCK = re.compile(r"^(.*?\.)(\d+)\.(.*)$")


def _module(name: str):
    """``(module path, parameter)`` of a parameter name: ``a.b.weight`` -> ``("a.b", "weight")``."""
    mod, _, leaf = name.rpartition(".")
    return mod, leaf


def _norm_columns(tensors: dict, mod: str):
    """``gamma**2 + beta**2`` of the norm module ``mod`` (its ``.weight`` and ``.bias`` if any),
    or None when it has no 1-D float weight."""
    g = tensors.get(mod + ".weight")
    if g is None or np.ndim(g) != 1:
        return None
    g = np.asarray(g, dtype=np.float64)
    c = g * g
    b = tensors.get(mod + ".bias")
    if b is not None and np.shape(b) == g.shape:
        c = c + np.square(np.asarray(b, dtype=np.float64))
    return c if np.all(np.isfinite(c)) else None


def auto(tensors: dict) -> dict:
    """Data-free per-input-column importance: name -> vector (mean 1) for the matrices whose
    input is the output of a norm layer, identified by the names alone.

    The input of a norm layer with gain ``g`` and bias ``b`` (none for RMSNorm) is
    ``x_j = g_j n_j + b_j`` with ``n`` normalised, so ``E[x_j**2] ~ g_j**2 + b_j**2``; that
    vector, scaled to mean 1, is the importance of the columns of each matrix the norm
    feeds. A matrix ``P.M.weight`` (2-D or more, ``shape[1]`` equal to the norm's length) is
    fed by, in order:

    1. inside a numbered block ``S.<i>.`` (``model.layers.3.``): a pre-norm block's
       ``PRE_ATTN_NORMS`` feeds its ``ATTN_IN`` matrices and ``PRE_MLP_NORMS`` its
       ``MLP_IN`` matrices (and ``intermediate.dense``);
    2. a post-norm block (BERT: no pre-attention norm): ``attention.output.LayerNorm`` (any
       ``attention...norm`` module) feeds the block's ``MLP_IN`` matrices; the previous
       block's ``output.LayerNorm`` (a norm module under ``output``, not under attention)
       feeds ``ATTN_IN``; block 0's ``ATTN_IN`` is fed by the norm under an ``embeddings``
       module outside the blocks, if the model has exactly one;
    3. outside the blocks: a ``FINAL_NORMS`` module feeds ``HEAD`` matrices.

    Every other matrix gets no entry (importance 1). Only names, shapes and the norm
    tensors are read, so the result is deterministic.
    """
    mods = {}
    for n, a in tensors.items():
        mod, leaf = _module(n)
        if leaf == "weight":
            mods[mod] = a
    norms = {m for m, a in mods.items() if np.ndim(a) == 1 and _NORM_LEAF.match(m.rpartition(".")[2] or m)}
    blocks: dict = {}  # (stack, index) -> {relative module: full module}
    for m in mods:
        b = _BLOCK.match(m + ".")
        if b:
            blocks.setdefault((b.group(1), int(b.group(2))), {})[b.group(3).rstrip(".")] = m

    def leaf_of(rel):
        return rel.rpartition(".")[2]

    def role(rel):
        leaf = leaf_of(rel)
        if leaf in ATTN_IN:
            return "attn"
        if leaf in MLP_IN or rel.endswith("intermediate.dense"):
            return "mlp"
        return None

    def find(block, pred):
        hits = sorted(full for rel, full in block.items() if full in norms and pred(rel))
        return hits[0] if len(hits) == 1 else None

    feeds = {}  # matrix module -> norm module
    for (stack, i), block in blocks.items():
        pre_attn = find(block, lambda r: leaf_of(r) in PRE_ATTN_NORMS)
        pre_mlp = find(block, lambda r: leaf_of(r) in PRE_MLP_NORMS)
        if pre_attn is None:  # post-norm
            pre_mlp = pre_mlp or find(block, lambda r: "attention" in r.split(".")[:-1])
            prev = blocks.get((stack, i - 1))
            if prev is not None:
                pre_attn = find(prev, lambda r: "output" in r.split(".")[:-1] and "attention" not in r)
            elif i == 0:
                emb = sorted(m for m in norms if "embeddings" in m.split(".")[:-1] and not _BLOCK.match(m + "."))
                pre_attn = emb[0] if len(emb) == 1 else None
        for rel, full in block.items():
            r = role(rel)
            src = pre_attn if r == "attn" else pre_mlp if r == "mlp" else None
            if src is not None:
                feeds[full] = src
    finals = [m for m in norms if m.rpartition(".")[2] in FINAL_NORMS and not _BLOCK.match(m + ".")]
    if len(finals) == 1:
        for m in mods:
            if m.rpartition(".")[2] in HEAD:
                feeds[m] = finals[0]

    out = {}
    for m in sorted(feeds):
        w = mods[m]
        c = _norm_columns(tensors, feeds[m])
        if c is None or np.ndim(w) < 2 or np.shape(w)[1] != c.size or not c.sum() > 0:
            continue
        out[m + ".weight"] = c / c.mean()
    return out


# ------------------------------------------------------------------ files and validation


def load(path) -> dict:
    """name -> float64 array (0-d or 1-d) from a ``.npz`` or ``.safetensors`` file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UsageError(f"importance file {path}: no such file")
    with open(path, "rb") as f:
        head = f.read(4)
    try:
        if head[:2] == b"PK":
            with np.load(path, allow_pickle=False) as z:
                return {k: np.asarray(z[k], dtype=np.float64) for k in z.files}
        from safetensors.numpy import load_file

        return {k: np.asarray(v, dtype=np.float64) for k, v in load_file(path).items()}
    except UsageError:
        raise
    except Exception as e:
        raise UsageError(f"importance file {path}: not a readable .npz or .safetensors file ({e})") from None


def save(importance: dict, path) -> None:
    """Write name -> scalar or vector as ``.npz`` (any other extension: ``.safetensors``), float32."""
    path = os.fspath(path)
    arrays = {k: np.array(v, dtype=np.float32, order="C") for k, v in importance.items()}
    if path.endswith(".npz"):
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    else:
        from safetensors.numpy import save_file

        save_file(arrays, path, metadata={"content": "nncodec importance: mean x^2 per input column"})


def resolve(spec, tensors: dict) -> dict:
    """name -> ``(scale, columns or None)`` for the tensors of ``tensors`` that an importance
    spec (None, ``"auto"``, a path or a dict) names; raises UsageError naming a tensor whose
    entry is not a finite, non-negative scalar or a vector of its ``shape[1]`` entries, and
    warns of names the model does not hold."""
    if spec is None:
        return {}
    if isinstance(spec, str) and spec == AUTO:
        raw, what = auto(tensors), "auto importance"
    elif isinstance(spec, (str, os.PathLike)):
        raw, what = load(spec), f"importance file {os.fspath(spec)}"
    elif isinstance(spec, dict):
        raw, what = spec, "importance"
    else:
        raise UsageError(f"importance = {spec!r}: give 'auto', a .npz/.safetensors path or a dict")
    out = {}
    unknown = []
    for name, v in raw.items():
        if name not in tensors:
            unknown.append(name)
            continue
        try:
            a = np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v, dtype=np.float64)
        except (TypeError, ValueError):
            raise UsageError(f"{what}: the entry for tensor {name!r} is not numeric") from None
        shape = tuple(np.shape(tensors[name]))
        if a.size == 1 and a.ndim and not (a.ndim == 1 and len(shape) >= 2 and shape[1] == 1):
            a = a.reshape(())
        if not np.all(np.isfinite(a)) or np.any(a < 0):
            raise UsageError(f"{what}: the entry for tensor {name!r} must be finite and non-negative")
        if a.ndim == 0:
            out[name] = (float(a), None)
            continue
        if a.ndim != 1:
            raise UsageError(f"{what}: the entry for tensor {name!r} has shape {a.shape}; give a scalar or a "
                             f"1-D vector of one weight per input column")
        if len(shape) < 2:
            raise UsageError(f"{what}: tensor {name!r} has shape {shape}, so it has no input columns; give a "
                             f"scalar for it")
        if a.size != shape[1]:
            raise UsageError(f"{what}: the vector for tensor {name!r} has {a.size} entries; its shape {shape} "
                             f"has {shape[1]} input columns (axis 1)")
        if not a.sum() > 0:
            raise UsageError(f"{what}: the vector for tensor {name!r} is all zeros")
        out[name] = (1.0, a)
    if unknown:
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        warnings.warn(f"{what}: no tensor named {', '.join(repr(n) for n in unknown[:5])}{more} in the model; "
                      f"ignored", stacklevel=3)
    return out


# ------------------------------------------------------------------ collection (torch)


def collect(model, batches, *, out=None) -> dict:
    """Mean ``x_j**2`` per input column of every ``nn.Linear`` and ``nn.Conv1d/2d/3d`` of a torch
    ``model`` over ``batches``: name (``<module>.weight``) -> float64 vector.

    Each batch is passed as ``model(**b)`` for a dict, ``model(*b)`` for a tuple or list, else
    ``model(b)``, under ``torch.no_grad()`` (the model's train/eval mode is left as it is). A
    Linear's input is averaged over every leading dimension; a convolution's over the batch and
    every spatial position of its (unpadded) input, per input channel; with ``groups > 1`` the
    channels of the groups are averaged into the ``in_channels / groups`` columns the weight
    has. A module called several times counts every call. ``out`` (a ``.npz`` or
    ``.safetensors`` path) also saves the result, ready for ``--importance``.
    """
    import torch
    from torch import nn

    sums: dict = {}
    counts: dict = {}
    hooks = []

    def hook_for(name, mod):
        def hook(_m, inputs, _output):
            if not inputs or not torch.is_tensor(inputs[0]):
                return
            x = inputs[0].detach()
            x = x.to(torch.float64)
            if isinstance(mod, nn.Linear):
                x2 = x.reshape(-1, x.shape[-1]).square()
                s, n = x2.sum(0), x2.shape[0]
            else:
                nd = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}[type(mod)]
                if x.dim() == nd + 1:  # unbatched
                    x = x.unsqueeze(0)
                x2 = x.square().transpose(0, 1).reshape(x.shape[1], -1)
                s, n = x2.sum(1), x2.shape[1]
                if mod.groups > 1:
                    s = s.reshape(mod.groups, -1).sum(0)
                    n = n * mod.groups
            s = s.cpu().numpy()
            sums[name] = sums.get(name, 0.0) + s
            counts[name] = counts.get(name, 0) + n
        return hook

    for name, mod in model.named_modules():
        if type(mod) in (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d):
            hooks.append(mod.register_forward_hook(hook_for(name + ".weight" if name else "weight", mod)))
    try:
        with torch.no_grad():
            for b in batches:
                if isinstance(b, dict):
                    model(**b)
                elif isinstance(b, (tuple, list)):
                    model(*b)
                else:
                    model(b)
    finally:
        for h in hooks:
            h.remove()
    result = {k: np.asarray(sums[k] / counts[k], dtype=np.float64) for k in sums if counts[k]}
    if out is not None:
        save(result, out)
    return result
