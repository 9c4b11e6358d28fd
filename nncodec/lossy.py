"""Lossy coding: which tensors, which pipeline, and rate control across tensors.

The rule for which tensors are coded lossily (documented in README.md):

* a tensor is lossy when its dtype is a float (float64/32/16, bfloat16), it has at
  least two dimensions and at least :data:`MIN_LOSSY_ELEMENTS` elements;
* everything else stays lossless: 1-D tensors (biases, norm parameters), tiny
  tensors, integer and bool buffers, float8;
* ``keep`` patterns (shell globs on names) force lossless, ``lossy`` patterns force
  lossy for float tensors of any shape; ``keep`` wins over ``lossy``;
* a per-tensor ``overrides`` mapping gives one tensor its own settings.

Rate control: ``bits`` (average bits per weight over the lossy tensors) and ``snr``
(overall weight SNR in dB over the lossy tensors) allocate a step per tensor at equal
rate-distortion slope: for a slope λ each tensor takes the step that minimises
D + λ·R on its own measured curve (distortion D = sum of squared errors, rate R =
bits from the empirical entropy of the levels on a sample of the tensor), and λ is
searched so that the target is met. ``step`` gives every tensor the same step;
``max_error`` E gives step 2E, so no weight moves by more than E.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math

import numpy as np

from . import dtypes
from .codecs import Context, codec_class
from .errors import UsageError
from .pipeline import Pipeline

#: tensors with fewer elements stay lossless by default
MIN_LOSSY_ELEMENTS = 1024
LOSSY_DTYPES = ("float64", "float32", "float16", "bfloat16")
PRESETS = {
    #  preset: default bits when no rate is given, entropy coders tried
    "fast": {"bits": 6.0, "coders": ("huffman",)},
    "balanced": {"bits": 4.0, "coders": ("ans", "zerorun", "huffman")},
    "small": {"bits": 3.0, "coders": ("cabac",)},  # with trellis-coded quantization
}
SAMPLE = 1 << 16  # elements per tensor used to measure its rate-distortion curve
_GRID = np.arange(-12, 64) / 4.0  # steps: rms * 2**(-g)


@dataclasses.dataclass
class LossyOptions:
    """Settings for lossy encoding (see ``nncodec encode --help``)."""

    bits: float | None = None
    snr: float | None = None
    step: float | None = None
    max_error: float | None = None
    preset: str = "balanced"
    keep: tuple = ()
    lossy: tuple = ()
    quantizer: str = "scalar"  #: scalar, lattice-d4, lattice-e8
    objective: str = "relative"  #: relative (each tensor's error relative to its power) or mse
    dither: bool = False
    seed: int = 0
    overrides: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        given = [k for k in ("bits", "snr", "step", "max_error") if getattr(self, k) is not None]
        if len(given) > 1:
            raise UsageError(f"choose one of bits, snr, step, max_error (got {', '.join(given)})")
        if self.preset not in PRESETS:
            raise UsageError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if not given:
            self.bits = PRESETS[self.preset]["bits"]
        if self.bits is not None and not (0 < self.bits <= 32):
            raise UsageError(f"bits = {self.bits}: must be in (0, 32] bits per weight")
        if self.snr is not None and not (0 < self.snr < 200):
            raise UsageError(f"snr = {self.snr}: must be in (0, 200) dB")
        for k in ("step", "max_error"):
            v = getattr(self, k)
            if v is not None and not (v > 0 and math.isfinite(v)):
                raise UsageError(f"{k} = {v}: must be a positive number")
        if self.quantizer not in ("scalar", "lattice-d4", "lattice-e8"):
            raise UsageError(f"unknown quantizer {self.quantizer!r}; choose scalar, lattice-d4 or lattice-e8")
        if self.max_error is not None and self.quantizer != "scalar":
            raise UsageError("max_error needs the scalar quantizer (a lattice bounds the error vector, not each weight)")
        if self.objective not in ("relative", "mse"):
            raise UsageError(f"unknown objective {self.objective!r}; choose relative or mse")
        self.keep = tuple(self.keep)
        self.lossy = tuple(self.lossy)


def is_lossy(name: str, arr: np.ndarray, opts: LossyOptions) -> bool:
    """The documented rule (module docstring)."""
    if name in opts.overrides:
        return opts.overrides[name] != "lossless"
    try:
        dt = dtypes.from_numpy(arr.dtype)
    except Exception:
        return False
    if dt not in LOSSY_DTYPES:
        return False
    if any(fnmatch.fnmatchcase(name, p) for p in opts.keep):
        return False
    if any(fnmatch.fnmatchcase(name, p) for p in opts.lossy):
        return True
    return arr.ndim >= 2 and arr.size >= MIN_LOSSY_ELEMENTS


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
    if levels.size == 0:
        return 0.0, 0
    lo, hi = levels.min(), levels.max()
    if hi - lo < (1 << 22):  # a histogram: much faster than sorting
        counts = np.bincount((levels - lo).astype(np.int64))
        counts = counts[counts > 0]
    else:
        _, counts = np.unique(levels, return_counts=True)
    p = counts / levels.size
    return float(-(counts * np.log2(p)).sum()), len(counts)


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
    from .codecs import ArraySpec

    q = codec_class("lattice")({"lattice-d4": "D4", "lattice-e8": "E8"}[quantizer], step)
    ctx = Context(name="rate estimate")
    levels = q.encode(x, ctx)
    back = q.decode(levels, ArraySpec("float64", x.shape), ctx)
    return levels.reshape(-1), x - back


def allocate(tensors: dict, opts: LossyOptions) -> dict:
    """Step per lossy tensor name, at equal rate-distortion slope (or as fixed)."""
    if opts.step is not None:
        return {n: float(opts.step) for n in tensors}
    if opts.max_error is not None:
        return {n: 2.0 * float(opts.max_error) for n in tensors}
    if not tensors:
        return {}
    curves = {}
    for n, w in tensors.items():
        steps, R, D = rd_curve(w, opts.quantizer)
        power = float(np.mean(np.square(np.asarray(w, dtype=np.float64)))) if w.size else 0.0
        # the objective: relative weighs each tensor's error by 1/power (its SNR counts, not
        # its scale); mse weighs all errors alike (the overall weight SNR counts)
        wt = 1.0 / power if opts.objective == "relative" and power > 0 else 1.0
        curves[n] = (steps, R, D, w.size, wt)
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
    if opts.bits is not None:
        budget = opts.bits * total_n
        ok = lambda rate, dist: rate <= budget
    else:
        signal = sum(float(np.sum(np.square(np.asarray(w, dtype=np.float64)))) for w in tensors.values())
        budget = signal / 10 ** (opts.snr / 10.0)
        ok = lambda rate, dist: dist <= budget
    best = None
    for _ in range(60):
        mid = (lo + hi) / 2
        choice, rate, dist = pick(2.0 ** mid)
        if ok(rate, dist):
            best = choice
            if opts.bits is not None:
                hi = mid  # meets the rate: try finer (smaller λ)
            else:
                lo = mid  # meets the distortion: try coarser (larger λ)
        else:
            if opts.bits is not None:
                lo = mid
            else:
                hi = mid
    if best is None:
        best = pick(2.0 ** (40.0 if opts.bits is not None else -80.0))[0]
    if opts.bits is not None:
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


# ------------------------------------------------------------ pipelines


def quantizer_for(name: str, step: float, opts: LossyOptions):
    from .dither import stream_for_name

    if opts.quantizer == "scalar":
        kw = {"dither": opts.dither}
        if opts.dither:
            kw.update(seed=opts.seed, stream=stream_for_name(name))
        return codec_class("scalar")(step, **kw)
    lat = {"lattice-d4": "D4", "lattice-e8": "E8"}[opts.quantizer]
    kw = {"dither": opts.dither}
    if opts.dither:
        kw.update(seed=opts.seed, stream=stream_for_name(name))
    return codec_class("lattice")(lat, step, **kw)


def uses_trellis(opts: LossyOptions) -> bool:
    """``small`` codes with trellis-coded quantization + the context-adaptive coder, unless
    the user asked for what it cannot give: a per-weight error bound, dither, a lattice."""
    return (opts.preset == "small" and opts.quantizer == "scalar" and not opts.dither
            and opts.max_error is None and opts.step is None)


def encode_lossy(name: str, arr: np.ndarray, step: float, opts: LossyOptions, ctx: Context) -> tuple:
    """Quantize with ``step`` and keep the smallest of the preset's entropy coders."""
    arr, _ = dtypes.as_stored(arr)
    if uses_trellis(opts):
        from .codecs.tcq import encode_tcq, step_for_scalar

        # at half the scalar step the trellis spends about the same rate, for ~1 dB more SNR
        return encode_tcq(arr, step_for_scalar(step), ctx)
    q = quantizer_for(name, step, opts)
    levels = q.encode(arr, ctx)
    best = None
    for cid in PRESETS[opts.preset]["coders"]:
        coder = codec_class(cid)()
        data = coder.encode(levels, ctx)
        if best is None or len(data) < len(best[1]):
            best = (Pipeline([q, coder]), data)
    return best
