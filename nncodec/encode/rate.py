"""Rate allocation: a step per lossy tensor, at equal rate-distortion slope.

A rate budget (bits for the lossy tensors' payloads) and ``snr`` (overall weight
SNR in dB over the lossy tensors) allocate a step per tensor at equal slope: for a
slope λ each tensor takes the step that minimises D + λ·R on its own measured
curve (D = sum of squared errors, R = bits from the empirical entropy of the
levels on a sample of the tensor), and λ is searched so that the target is met.
``step`` gives every tensor the same step; ``max_error`` E gives step 2E, so no
weight moves by more than E.

The whole-file targets (``bits``, ``size``, ``ratio``) are met by the planner
(:mod:`nncodec.encode.planner`): it counts the container and the other tensors,
gives the rest to :func:`choose` as the lossy budget, then corrects each curve by
the rate the real coder spent (:func:`rate_at`, a calibration factor per tensor)
and scales all steps by one continuous factor until the file has the target size.
"""

from __future__ import annotations

import math

import numpy as np

from ..codecs import Context, codec_class
from .options import EncodeOptions

SAMPLE = 1 << 16  # elements per tensor used to measure its rate-distortion curve
_GRID = np.arange(-12, 64) / 4.0  # steps: rms * 2**(-g)


# ------------------------------------------------------------ measurement


def _sample_index(size: int):
    """The flat indices of the sample of a tensor of ``size`` elements (None: all of them)."""
    if size <= SAMPLE:
        return None
    stride = size / SAMPLE
    return (np.arange(SAMPLE) * stride).astype(np.int64)


def _sample(w: np.ndarray) -> np.ndarray:
    """A deterministic sample of at most SAMPLE elements (a strided pick), as float64."""
    flat = np.asarray(w, dtype=np.float64).reshape(-1)
    idx = _sample_index(flat.size)
    return flat if idx is None else flat[idx]


def _column_weights(shape: tuple, columns: np.ndarray) -> np.ndarray:
    """The per-input-column weights (axis 1) of each element of a tensor's sample."""
    idx = _sample_index(int(np.prod(shape)))
    if idx is None:
        idx = np.arange(int(np.prod(shape)))
    inner = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return np.asarray(columns, dtype=np.float64)[(idx // inner) % shape[1]]


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


def rd_curve(w: np.ndarray, quantizer: str = "scalar", weights: np.ndarray | None = None) -> tuple:
    """(steps, rate in bits, distortion as sum of squared errors) of the tensor on a grid;
    with ``weights`` (one per element of the sample, :func:`_column_weights`) a fourth array,
    the weighted distortion sum of weight x squared error."""
    x = _sample(w)
    rms = math.sqrt(float(np.mean(x * x))) if x.size else 0.0
    if rms == 0.0 or not math.isfinite(rms):
        rms = 1.0
    steps = rms * np.exp2(-_GRID)
    R = np.empty(len(steps))
    D = np.empty(len(steps))
    Dw = np.empty(len(steps)) if weights is not None else None
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
        if Dw is not None:
            Dw[i] = float(np.mean(e * e * weights)) * n if x.size else 0.0
    return (steps, R, D) if Dw is None else (steps, R, D, Dw)


def _lattice_levels(x: np.ndarray, step: float, quantizer: str):
    from ..codecs import ArraySpec

    q = codec_class("lattice")({"lattice-d4": "D4", "lattice-e8": "E8"}[quantizer], step)
    ctx = Context(name="rate estimate")
    levels = q.encode(x, ctx)
    back = q.decode(levels, ArraySpec("float64", x.shape), ctx)
    return levels.reshape(-1), x - back


def measure(tensors: dict, opts: EncodeOptions, on_tensor=None, importance: dict | None = None) -> dict:
    """name -> (steps, R, D, elements, weight): each tensor's measured curve on the step grid
    (steps from coarse to fine) and the weight of its distortion under ``opts.objective``
    (a number, or an array over the grid: the allocator minimises ``weight * D + λ R``).

    ``importance`` (name -> (scale, per-input-column vector or None), from
    :func:`nncodec.importance.resolve`; by default resolved from ``opts.importance`` over
    ``tensors``) weighs a tensor's distortion by its scale and each element's squared error by
    its column's weight; ``relative`` then divides by the tensor's power weighted alike."""
    if importance is None:
        from ..importance import resolve

        importance = resolve(opts.importance, tensors) if opts.importance is not None else {}
    curves = {}
    for n, w in tensors.items():
        scale, cols = importance.get(n, (1.0, None))
        if cols is not None:
            curves[n] = _weighted_curve(w, opts, scale, cols)
            if on_tensor is not None:
                on_tensor(n)
            continue
        steps, R, D = rd_curve(w, opts.quantizer.kind)
        power = float(np.mean(np.square(np.asarray(w, dtype=np.float64)))) if w.size else 0.0
        # the objective: relative weighs each tensor's error by 1/power (its SNR counts, not
        # its scale); mse weighs all errors alike (the overall weight SNR counts)
        wt = 1.0 / power if opts.objective == "relative" and power > 0 else 1.0
        curves[n] = (steps, R, D, w.size, wt * scale)
        if on_tensor is not None:
            on_tensor(n)
    return curves


def _weighted_curve(w, opts: EncodeOptions, scale: float, cols: np.ndarray) -> tuple:
    """A tensor's curve under per-input-column importance: the weight over the grid is
    ``scale x Dw / D`` (Dw: the column-weighted distortion), over the column-weighted power
    ``mean(w**2 c)`` under ``relative``."""
    a = np.asarray(w, dtype=np.float64)
    steps, R, D, Dw = rd_curve(a, opts.quantizer.kind, _column_weights(a.shape, cols))
    wt = np.divide(Dw, D, out=np.zeros_like(D), where=D > 0) * scale
    if opts.objective == "relative":
        col_power = np.square(a).reshape(a.shape[0], a.shape[1], -1).sum(axis=(0, 2))
        power = float(col_power @ np.asarray(cols, dtype=np.float64)) / max(a.size, 1)
        if power > 0:
            wt = wt / power
    return steps, R, D, a.size, wt


def rate_at(curve: tuple, step: float) -> float:
    """A curve's rate in bits at any step: linear in log2(step) between grid points; finer than
    the grid, one more bit per element for each halving; coarser, the coarsest point's rate."""
    steps, R = curve[0], curve[1]
    x = -np.log2(steps)  # increasing
    t = -math.log2(step)
    if t <= x[0]:
        return float(R[0])
    if t >= x[-1]:
        return float(R[-1]) + curve[3] * (t - x[-1])
    return float(np.interp(t, x, R))


def allocate(tensors: dict, opts: EncodeOptions, on_tensor=None, budget_bits: float | None = None,
             importance: dict | None = None) -> dict:
    """Step per lossy tensor name, at equal rate-distortion slope (or as fixed).

    The budget is ``budget_bits`` for the payloads of these tensors if given; else an ``snr``
    target over them; else ``opts.target.bits`` bits per element of these tensors (a whole-file
    target is the planner's to meet). ``on_tensor(name)`` is called after each tensor's curve
    is measured (progress); ``importance`` as in :func:`measure`."""
    target = opts.target
    if target.step is not None:
        return {n: float(target.step) for n in tensors}
    if target.max_error is not None:
        return {n: 2.0 * float(target.max_error) for n in tensors}
    if not tensors:
        return {}
    curves = measure(tensors, opts, on_tensor, importance)
    if budget_bits is None and target.snr is None:
        n = sum(c[3] for c in curves.values())
        budget_bits = (target.bits * n if target.bits is not None
                       else 8 * target.file_bytes(n, sum(np.asarray(w).nbytes for w in tensors.values())))
    if budget_bits is None:
        signal = sum(float(np.sum(np.square(np.asarray(w, dtype=np.float64)))) for w in tensors.values())
        choice = choose(curves, distortion=signal / 10 ** (target.snr / 10.0))
    else:
        choice = choose(curves, budget_bits)
    return {n: float(curves[n][0][j]) for n, j in choice.items()}


def choose(curves: dict, budget_bits: float | None = None, *, distortion: float | None = None) -> dict:
    """name -> grid index at equal slope: the finest allocation whose rate is at most
    ``budget_bits`` (then refined greedily with what is left), or the coarsest whose
    distortion is at most ``distortion``."""
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
    by_rate = budget_bits is not None
    if by_rate:
        budget = budget_bits
        ok = lambda rate, dist: rate <= budget
    else:
        budget = distortion
        ok = lambda rate, dist: dist <= budget
    best = None
    for _ in range(60):
        mid = (lo + hi) / 2
        choice, rate, dist = pick(2.0 ** mid)
        if ok(rate, dist):
            best = choice
            if by_rate:
                hi = mid  # meets the rate: try finer (smaller λ)
            else:
                lo = mid  # meets the distortion: try coarser (larger λ)
        else:
            if by_rate:
                lo = mid
            else:
                hi = mid
    if best is None:
        best = pick(2.0 ** (40.0 if by_rate else -80.0))[0]
    if by_rate:
        best = _fill(best, curves, budget)
    return best


def _fill(choice: dict, curves: dict, budget: float) -> dict:
    """Spend what the λ search left of a rate budget: refine, best slope first."""
    choice = dict(choice)
    rate = sum(curves[n][1][j] for n, j in choice.items())
    obj = {n: c[4] * c[2] for n, c in curves.items() if np.ndim(c[4])}  # weight x D, weights over the grid
    while True:
        best, best_gain = None, 0.0
        for n, j in choice.items():
            steps, R = curves[n][0], curves[n][1]
            if j + 1 >= len(steps):
                continue
            dr = R[j + 1] - R[j]
            wt = curves[n][4]
            dd = obj[n][j] - obj[n][j + 1] if n in obj else wt * (curves[n][2][j] - curves[n][2][j + 1])
            if dr <= 0 or rate + dr > budget or dd <= 0:
                continue
            if dd / dr > best_gain:
                best, best_gain = n, dd / dr
        if best is None:
            return choice
        j = choice[best]
        rate += curves[best][1][j + 1] - curves[best][1][j]
        choice[best] = j + 1
