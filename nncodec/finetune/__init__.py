"""Fine-tuning a PyTorch model under a fixed compressed structure, then writing it to .nnc.

Compression that prunes, clusters or quantizes weights loses accuracy; a few
epochs of training *with the structure held fixed* win most of it back (Deep
Compression, Weightless). This module holds the structure fixed while you train
with your own data loader and loss, and then encodes exactly the weights you
trained::

    import nncodec.finetune as nt

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

from .layers import load_numpy_state_dict, state_dict_to_numpy, to_numpy  # noqa: F401  (imports torch)
from .model import CompressedModel, compress_model  # noqa: F401
from .rules import Rule, bloomier, cluster, lossless, prune, quantize  # noqa: F401

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
