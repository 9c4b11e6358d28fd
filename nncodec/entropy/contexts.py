"""The context model of ``cabac`` levels, kept apart from the coder.

Both the ``cabac`` coder (spec/codecs/cabac.md) and the ``tcq`` encoder's rate
estimate use it: a level's contexts depend on its trellis state (recomputed
from the levels with the state table for 1, 4 or 8 states), the previous two
levels and the level one row above (rows = axis 0, :func:`row_width`).
:func:`rate_model` turns bin counts into static bit costs per context;
:func:`model_bits` is the size of levels under the model fitted to them.
"""

from __future__ import annotations

import numpy as np

DEFAULT_GT = 16  #: greater-than bins before the Exp-Golomb remainder


def kernels():
    """The compiled kernels module (imported, and so compiled, on first use)."""
    from ..kernels import cabac

    return cabac


def row_width(shape) -> int:
    """Elements per row: ``prod(shape[1:])`` for 2 or more dimensions, else the element count (>= 1)."""
    shape = tuple(int(d) for d in shape)
    n = 1
    for d in shape:
        n *= d
    if len(shape) >= 2 and shape[0] > 0:
        return max(1, n // shape[0])
    return max(1, n)


def state_table(states: int):
    """(next-state table, quantizer of each state) for 1, 4 or 8 states."""
    return kernels().STATE_TABLES[states]


def cost_from_counts(counts: np.ndarray) -> np.ndarray:
    """Bits per bin value and context from bin counts: -log2((N[c,b] + 1/2) / (N[c,0] + N[c,1] + 1))."""
    c = np.asarray(counts, np.float64)
    tot = c.sum(axis=1, keepdims=True)
    return -np.log2((c + 0.5) / (tot + 1.0))


def rate_model(levels, shape, states: int = 8, gt: int = DEFAULT_GT) -> np.ndarray:
    """Static bit costs ``cost[context, bin]`` fitted to ``levels`` (see :func:`cost_from_counts`)."""
    k = kernels()
    table, quant = state_table(states)
    lv = np.ascontiguousarray(np.asarray(levels).reshape(-1), np.int32)
    counts = np.zeros((k.n_contexts(gt), 2), np.int64)
    k.count_bins(lv, row_width(shape), table, quant, gt, counts)
    return cost_from_counts(counts)


def model_bits(levels, shape, states: int = 8, gt: int = DEFAULT_GT) -> float:
    """Bits of ``levels`` under the static model fitted to them (close to the coded size)."""
    k = kernels()
    table, quant = state_table(states)
    lv = np.ascontiguousarray(np.asarray(levels).reshape(-1), np.int32)
    cost = rate_model(lv, shape, states, gt)
    return float(k.path_bits(lv, row_width(shape), table, quant, gt, cost))
