"""Compressed model updates for federated and distributed learning (spec/UPDATES.md).

* :func:`encode_update` / :func:`decode_update` / :func:`apply_update` -- the
  difference between a model and a base both sides hold, as .nnc bytes that
  name the base by its SHA-256 (decoding against another base raises
  :class:`~nncodec.errors.BaseMismatchError`). Lossless by default; lossy with
  dithered or stochastic scalar quantization, top-k/threshold sparsification
  or 3LC, and :class:`ErrorFeedback` between rounds.
* :func:`diff_files` / :func:`patch_files` -- the same for checkpoint files
  (``nncodec diff`` / ``nncodec patch``).
* :mod:`nncodec.federated.flower` -- a Flower client mod and strategy wrapper
  (needs ``flwr``); :mod:`nncodec.federated.ddp` -- a PyTorch DDP
  communication hook (needs ``torch``).
"""

from __future__ import annotations

from .._lazy import lazy_getattr

_LAZY = {
    "UpdateOptions": "update", "ErrorFeedback": "update", "base_sha256": "update", "encode_update": "update",
    "write_update": "update", "decode_update": "update", "read_update": "update", "apply_update": "update",
    "stochastic_round": "update", "diff_files": "files", "patch_files": "files",
}
__all__ = sorted(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
