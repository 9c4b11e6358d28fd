"""Rate allocation: a step per lossy tensor, at equal rate-distortion slope.

``bits`` (average bits per weight over the lossy tensors) and ``snr`` (overall
weight SNR in dB over them) allocate a step per tensor at equal slope: for a
slope λ each tensor takes the step that minimises D + λ·R on its own measured
curve (D = sum of squared errors, R = bits from the empirical entropy of the
levels on a sample of the tensor), and λ is searched so that the target is met.
``step`` gives every tensor the same step; ``max_error`` E gives step 2E, so no
weight moves by more than E.
"""

from __future__ import annotations

import math

import numpy as np

from ..codecs import Context, codec_class
from .options import EncodeOptions

SAMPLE = 1 << 16  # elements per tensor used to measure its rate-distortion curve
_GRID = np.arange(-12, 64) / 4.0  # steps: rms * 2**(-g)


# ------------------------------------------------------------ measurement


def _sample(w: np.ndarray) -> np.ndarray:
    """A deterministic sample of at most SAMPLE elements (a strided pick), as float64."""
    flat = np.asarray(w, dtype=np.float64).reshape(-1)
    if flat.size <= SAMPLE:
        return flat
    stride = flat.size / SAMPLE
    idx = (np.arange(SAMPLE) * stride).astype(np.int64)
    return flat[idx]


#: bits a coded tensor pays besides its symbols: the coder's header and a per-symbol table
HEADER_BITS = 160
TABLE_BITS_PER_SYMBOL = 8


def _entropy_bits(levels: np.ndarray) -> tuple:
    """(total bits of an ideal static coder for these levels, number of distinct levels)."""
    from ..entropy.stats import entropy_bits, symbol_counts

    if levels.size == 0:
        return 0.0, 0
    counts = symbol_counts(levels)
    return float(entropy_bits(counts)), len(counts)


def rd_curve(w: np.ndarray, quantizer: str = "scalar") -> tuple:
    """(steps, rate in bits, distortion as sum of squared errors) of the tensor on a grid."""
    x = _sample(w)
    rms = math.sqrt(float(np.mean(x * x))) if x.size else 0.0
    if rms == 0.0 or not math.isfinite(rms):
        rms = 1.0
    steps = rms * np.exp2(-_GRID)
    R = np.empty(len(steps))
    D = np.empty(len(steps))
    n = w.size
    for i, d in enumerate(steps):
        if quantizer == "scalar":
            q = np.rint(x / d)
            e = x - q * d
        else:
            q, e = _lattice_levels(x, d, quantizer)
        bits, symbols = _entropy_bits(q)
        R[i] = bits / max(x.size, 1) * n + HEADER_BITS + TABLE_BITS_PER_SYMBOL * symbols
        D[i] = float(np.mean(e * e)) * n if x.size else 0.0
    return steps, R, D


def _lattice_levels(x: np.ndarray, step: float, quantizer: str):
    from ..codecs import ArraySpec

    q = codec_class("lattice")({"lattice-d4": "D4", "lattice-e8": "E8"}[quantizer], step)
    ctx = Context(name="rate estimate")
    levels = q.encode(x, ctx)
    back = q.decode(levels, ArraySpec("float64", x.shape), ctx)
    return levels.reshape(-1), x - back


def allocate(tensors: dict, opts: EncodeOptions, on_tensor=None) -> dict:
    """Step per lossy tensor name, at equal rate-distortion slope (or as fixed).
    ``on_tensor(name)`` is called after each tensor's curve is measured (progress)."""
    target = opts.target
    if target.step is not None:
        return {n: float(target.step) for n in tensors}
    if target.max_error is not None:
        return {n: 2.0 * float(target.max_error) for n in tensors}
    if not tensors:
        return {}
    curves = {}
    for n, w in tensors.items():
        steps, R, D = rd_curve(w, opts.quantizer.kind)
        power = float(np.mean(np.square(np.asarray(w, dtype=np.float64)))) if w.size else 0.0
        # the objective: relative weighs each tensor's error by 1/power (its SNR counts, not
        # its scale); mse weighs all errors alike (the overall weight SNR counts)
        wt = 1.0 / power if opts.objective == "relative" and power > 0 else 1.0
        curves[n] = (steps, R, D, w.size, wt)
        if on_tensor is not None:
            on_tensor(n)
    total_n = sum(c[3] for c in curves.values())

    def pick(lam: float):
        choice, rate, dist = {}, 0.0, 0.0
        for n, (steps, R, D, _, wt) in curves.items():
            j = int(np.argmin(wt * D + lam * R))
            choice[n] = j
            rate += R[j]
            dist += D[j]
        return choice, rate, dist

    # λ large -> coarse steps (low rate); search in log space
    lo, hi = -80.0, 40.0  # log2 λ
    if target.bits is not None:
        budget = target.bits * total_n
        ok = lambda rate, dist: rate <= budget
    else:
        signal = sum(float(np.sum(np.square(np.asarray(w, dtype=np.float64)))) for w in tensors.values())
        budget = signal / 10 ** (target.snr / 10.0)
        ok = lambda rate, dist: dist <= budget
    best = None
    for _ in range(60):
        mid = (lo + hi) / 2
        choice, rate, dist = pick(2.0 ** mid)
        if ok(rate, dist):
            best = choice
            if target.bits is not None:
                hi = mid  # meets the rate: try finer (smaller λ)
            else:
                lo = mid  # meets the distortion: try coarser (larger λ)
        else:
            if target.bits is not None:
                lo = mid
            else:
                hi = mid
    if best is None:
        best = pick(2.0 ** (40.0 if target.bits is not None else -80.0))[0]
    if target.bits is not None:
        best = _fill(best, curves, budget)
    return {n: float(curves[n][0][j]) for n, j in best.items()}


def _fill(choice: dict, curves: dict, budget: float) -> dict:
    """Spend what the λ search left of a rate budget: refine, best slope first."""
    choice = dict(choice)
    rate = sum(curves[n][1][j] for n, j in choice.items())
    while True:
        best, best_gain = None, 0.0
        for n, j in choice.items():
            steps, R, D, _, wt = curves[n]
            if j + 1 >= len(steps):
                continue
            dr = R[j + 1] - R[j]
            dd = wt * (D[j] - D[j + 1])
            if dr <= 0 or rate + dr > budget or dd <= 0:
                continue
            if dd / dr > best_gain:
                best, best_gain = n, dd / dr
        if best is None:
            return choice
        j = choice[best]
        rate += curves[best][1][j + 1] - curves[best][1][j]
        choice[best] = j + 1
