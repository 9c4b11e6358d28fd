"""The rules a fine-tuning plan maps parameter names to (see :mod:`nncodec.finetune`)."""

from __future__ import annotations

import dataclasses
import math

from ..errors import UsageError

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
    model: ``global_threshold`` of the ``prune`` codec's module). With neither, the
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
    from ..codecs import codec_class

    codec_class("bloomier")(r=r, t=t, zstd=zstd, iterations=iterations)  # validates
    _check_prune_args(sparsity, threshold)
    return Rule("bloomier", r=int(r), t=int(t), zstd=zstd, sparsity=sparsity, threshold=threshold,
                tune=bool(tune), freeze=not tune, iterations=int(iterations))


def lossless(*, freeze: bool = False) -> Rule:
    """No structure: trained freely (unless ``freeze``) and stored exactly."""
    return Rule("lossless", freeze=bool(freeze))
