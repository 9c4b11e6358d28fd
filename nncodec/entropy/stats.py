"""The empirical-entropy estimate: the size an ideal static coder would reach.

One formula for every caller (the planes coder's mode choice, the context-table
choice of the block-Huffman library, rate allocation, ``nncodec info``): for
symbol counts ``c`` summing to ``n``, ``-sum(c * log2(c / n))`` bits. The
summation order is fixed here, so a choice made on these numbers is
reproducible bit for bit.
"""

from __future__ import annotations

import numpy as np


def symbol_counts(levels) -> np.ndarray:
    """The counts of the distinct values of ``levels`` (all > 0, in increasing value order)."""
    a = np.asarray(levels).reshape(-1)
    if a.size == 0:
        return np.zeros(0, np.int64)
    if a.dtype.kind == "b":
        a = a.view(np.uint8)
    if a.dtype.kind in "iu":
        lo, hi = a.min(), a.max()
        if int(hi) - int(lo) < (1 << 22):  # a histogram: much faster than sorting
            d = (a - lo) if a.dtype == np.uint64 else a.astype(np.int64) - int(lo)
            counts = np.bincount(d.astype(np.int64))
            return counts[counts > 0]
    return np.unique(a, return_counts=True)[1]


def entropy_bits(counts) -> np.ndarray | float:
    """Ideal code size in bits, ``-sum(c * log2(c / total))``, along the last axis of ``counts``.

    A 1-D ``counts`` gives a float, a 2-D one a float per row; zero counts
    (and rows of zeros) cost nothing.
    """
    counts = np.asarray(counts).astype(np.float64)
    tot = counts.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        lg = np.where(counts > 0, np.log2(np.where(counts > 0, counts, 1) / np.where(tot > 0, tot, 1)), 0.0)
    bits = -(counts * lg).sum(axis=-1)
    return float(bits) if bits.ndim == 0 else bits


def empirical_entropy_bits(levels) -> float:
    """First-order empirical entropy of ``levels`` in bits per element (0 for an empty array)."""
    n = np.size(levels)
    if n == 0:
        return 0.0
    return max(0.0, entropy_bits(symbol_counts(levels)) / n)
