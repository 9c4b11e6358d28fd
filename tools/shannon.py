"""Shannon lower bounds for lossy weight coding, and the weight SNR.

For a tensor whose weights are modelled as independent draws of a random
variable W with differential entropy h(W) (in bits), any code reaching mean
squared error D per weight needs at least

    R(D) >= h(W) - 1/2 * log2(2*pi*e*D)     bits per weight

(the Shannon lower bound; it is tight for a Gaussian W, and at high rate for
any smooth density). Uniform scalar quantization with ideal entropy coding sits
about 0.254 bit/weight (1.53 dB) above it at high rate. The bound is per
tensor and for a memoryless source: it says nothing of what a coder could gain
from dependencies between weights.

    python tools/shannon.py FILE [DECODED]     # h(W) per tensor; with DECODED, bound at its MSE

Estimator of h(W): the m-spacing estimator (Vasicek 1976) with the digamma
bias correction of Learned-Miller & Fisher (2003, "ICA using spacings
estimates of entropy", JMLR 4). Sort the n weights x_(1) <= ... <= x_(n),
take m = max(1, round(n^(1/4))) and

    h = 1/(n-m) * sum_i ln(x_(i+m) - x_(i)) + psi(n+1) - psi(m)     (nats; / ln 2 -> bits)

Why this one: each spacing x_(i+m) - x_(i) holds m/(n+1) of the probability
mass on average, so ln(spacing) estimates ln(m / ((n+1) f(x))); the digamma
terms remove the bias of the log of a Beta(m, n+1-m) spacing exactly, which
leaves only a bias from the density's curvature across a spacing. There is no
bin width to choose (a histogram's plug-in estimate depends on one and is
biased low in sparse tails, which trained weights have) and it costs one sort.
Choice of m: the curvature bias grows with m, the variance falls with it.
The customary m = sqrt(n) is biased by -0.05 bit at n = 10^4 for a Gaussian;
m = n^(1/4) is within 0.01 bit there and within a few thousandths at 10^5 for
Gaussian, Laplacian, Student-t(3) and uniform samples, and keeps m >= 10 from
n = 10^4 on, so that float32 rounding (equal neighbouring values in a very
large tensor) rarely gives a zero spacing. Tensors of a few hundred weights
get estimates good to about +-0.1 bit. tests/test_shannon.py checks it;
scipy.stats.differential_entropy is an independent cross-check.

Atoms: a tensor in which more than m weights share one value (exact zeros
after pruning, an already-quantized tensor) has no differential entropy; its
h is minus infinity and R(D) >= 0 is all the bound says. Here a zero spacing
is floored at one float32 ulp of the value, which yields a very low, finite h;
``has_atoms`` tells such tensors apart so a report can list them separately.
"""

from __future__ import annotations

import math
import sys

import numpy as np

LOG2E = 1.0 / math.log(2.0)


def _digamma(x: float) -> float:
    """psi(x) for x >= 1 (recurrence up to 6, then the asymptotic series)."""
    acc = 0.0
    while x < 6.0:
        acc -= 1.0 / x
        x += 1.0
    inv2 = 1.0 / (x * x)
    return acc + math.log(x) - 0.5 / x - inv2 * (1.0 / 12 - inv2 * (1.0 / 120 - inv2 / 252))


def _sorted_values(w) -> np.ndarray:
    x = np.asarray(w)
    if x.dtype.kind not in "fiu" and x.dtype.name != "bfloat16":
        raise TypeError(f"weights must be numeric, got dtype {x.dtype}")
    x = np.sort(x.astype(np.float64, copy=False).ravel())
    if x.size and not np.isfinite(x[[0, -1]]).all():
        raise ValueError("weights contain inf or nan: differential entropy undefined")
    return x


def _spacing_m(n: int) -> int:
    return max(1, int(round(n ** 0.25)))


def has_atoms(w) -> bool:
    """True when some value occurs more than m = round(n^(1/4)) times (h(W) is then minus infinity)."""
    x = _sorted_values(w)
    n = x.size
    if n < 2:
        return False
    m = _spacing_m(n)
    return bool(m < n and np.any(x[m:] == x[:-m]))


def differential_entropy(w) -> float:
    """m-spacing estimate of h(W) in bits for the weights of ``w`` (any shape, n >= 2)."""
    x = _sorted_values(w)
    n = x.size
    if n < 2:
        raise ValueError(f"need at least 2 weights to estimate an entropy, got {n}")
    m = _spacing_m(n)
    if m >= n:
        m = n - 1
    d = x[m:] - x[:-m]
    zero = d <= 0
    if zero.any():  # an atom: floor at one float32 ulp at that value (see the module notes)
        ulp = np.spacing(np.abs(x[m:]).astype(np.float32)).astype(np.float64)
        d = np.where(zero, ulp, d)
    nats = float(np.mean(np.log(d))) + _digamma(n + 1.0) - _digamma(float(m))
    return nats * LOG2E


def gaussian_entropy(sigma2: float) -> float:
    """h of a Gaussian of variance sigma2, bits: 1/2 log2(2 pi e sigma2)."""
    return 0.5 * math.log2(2.0 * math.pi * math.e * sigma2)


def rate_lower_bound(w, D: float, *, h: float | None = None) -> float:
    """Shannon lower bound in bits per weight for MSE ``D`` per weight: max(0, h(W) - 1/2 log2(2 pi e D)).

    ``h`` may be passed to reuse an estimate. The unclamped bound can go
    negative at large D; a rate cannot, hence the max with 0.
    """
    if not D > 0:
        raise ValueError(f"distortion D must be > 0, got {D} (a lossless code has no finite MSE bound)")
    if h is None:
        h = differential_entropy(w)
    return max(0.0, h - gaussian_entropy(D))


def mse(w, w_hat) -> float:
    a = np.asarray(w, dtype=np.float64)
    b = np.asarray(w_hat, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    return float(np.mean(np.square(a - b)))


def _as_list(x):
    if isinstance(x, dict):
        return list(x.values()), list(x)
    if isinstance(x, (list, tuple)):
        return list(x), None
    return [x], None


def weight_snr_db(w, w_hat) -> float:
    """10 log10(sum w^2 / sum (w - w_hat)^2) over one tensor, a list of tensors, or a dict (matched by name)."""
    if isinstance(w, dict):
        missing = [k for k in w if k not in w_hat]
        if missing:
            raise KeyError(f"reconstruction lacks tensors {missing}")
        pairs = [(w[k], w_hat[k]) for k in w]
    else:
        ws, _ = _as_list(w)
        hs, _ = _as_list(w_hat)
        if len(ws) != len(hs):
            raise ValueError(f"{len(ws)} tensors vs {len(hs)} reconstructions")
        pairs = list(zip(ws, hs))
    sig = err = 0.0
    for a, b in pairs:
        a = np.asarray(a, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        if a.shape != b.shape:
            raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
        sig += float(np.sum(a * a))
        err += float(np.sum(np.square(a - b)))
    if err == 0.0:
        return math.inf
    if sig == 0.0:
        return -math.inf
    return 10.0 * math.log10(sig / err)


def lower_bound_bits(tensors: dict, decoded: dict) -> dict:
    """Per tensor and in total: the Shannon lower bound at the MSE each tensor was decoded with.

    Returns {"tensors": {name: {n, h, mse, bound_bpw, bound_bits, atoms}}, "total_bits": ...}.
    A tensor decoded exactly (MSE 0) or with fewer than 2 values is left out of the total.
    """
    out, total = {}, 0.0
    for name, w in tensors.items():
        w = np.asarray(w)
        rec = {"n": int(w.size)}
        if name not in decoded or w.size < 2:
            out[name] = rec
            continue
        D = mse(w, decoded[name])
        h = differential_entropy(w)
        rec.update(h=h, mse=D, atoms=has_atoms(w))
        if D > 0:
            bpw = rate_lower_bound(w, D, h=h)
            rec.update(bound_bpw=bpw, bound_bits=bpw * w.size)
            total += bpw * w.size
        out[name] = rec
    return {"tensors": out, "total_bits": total}


def _read(path):
    import os

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from nncodec.io import detect_format, read_checkpoint

    if detect_format(path) == "nnc":
        import nncodec

        with nncodec.open(path) as f:
            return f.to_dict()
    return dict(read_checkpoint(path).tensors)


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Differential entropy per tensor and the Shannon lower bound")
    ap.add_argument("file", help="checkpoint: safetensors, .npz, .pt or .nnc")
    ap.add_argument("decoded", nargs="?", help="a lossy reconstruction of FILE: bound at its MSE, and its SNR")
    args = ap.parse_args(argv)
    tensors = _read(args.file)
    decoded = _read(args.decoded) if args.decoded else None
    print(f"{'tensor':40s} {'n':>9s} {'h bits':>8s} {'gauss h':>8s}"
          + (f" {'mse':>10s} {'SLB bpw':>8s}" if decoded else ""))
    total_bits = 0.0
    for name, w in tensors.items():
        w = np.asarray(w)
        if w.size < 2 or w.dtype.kind != "f" and w.dtype.name != "bfloat16":
            continue
        h = differential_entropy(w)
        var = float(np.var(w.astype(np.float64)))
        line = f"{name:40s} {w.size:9d} {h:8.3f} {gaussian_entropy(var) if var > 0 else -math.inf:8.3f}"
        if decoded is not None and name in decoded:
            D = mse(w, decoded[name])
            if D > 0:
                b = rate_lower_bound(w, D, h=h)
                total_bits += b * w.size
                line += f" {D:10.3e} {b:8.3f}"
            else:
                line += f" {0.0:10.3e} {'exact':>8s}"
        if has_atoms(w):
            line += "  (atoms: h is not finite)"
        print(line)
    if decoded is not None:
        print(f"weight SNR {weight_snr_db({k: tensors[k] for k in decoded if k in tensors}, decoded):.2f} dB; "
              f"Shannon lower bound {total_bits / 8:.0f} bytes for the lossily coded tensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
