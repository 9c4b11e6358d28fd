"""``bloomier``: a pruned, clustered tensor as a Bloomier filter (spec/codecs/bloomier.md).

After Weightless (Reagen et al., ICML 2018). The input is a float tensor whose
pruned weights are zero. The non-zero weights are clustered into at most
2**r - 1 centroids; a Bloomier filter then maps the flat position of every
non-zero weight to its cluster index (1 ... c) without storing the positions.
The table has m = 3 s cells of t bits, with m about 1.23 n + 32 for n non-zero
weights, so the payload is about 1.23 n t bits plus a 32-byte header and the
centroids.

The filter is lossy in one way only: a pruned position reads back a centroid
instead of zero with probability c / 2**t (a false positive). Every stored
position reads back its centroid exactly. ``t`` is the size/accuracy knob:
each extra bit per cell halves the false-positive rate.

Decoding costs time and memory proportional to the tensor's size: every
position is looked up. The wrapper checks every header field against the
payload length and the declared tensor before a kernel runs.
"""

from __future__ import annotations

import struct

import numpy as np

from .. import dtypes
from ..dtypes import FLOAT_DTYPES, round_float
from ..entropy import zstdframe
from ..errors import CorruptError, TruncatedError, UnsupportedError, UsageError
from .base import ArraySpec, ArrayToBytesCodec, Context, cfg_int, cfg_only

__all__ = [
    "Bloomier",
    "PeelingError",
    "segment_length",
    "table_cells",
    "cluster",
    "build_table",
    "pack_table",
    "unpack_table",
    "lookup",
    "inspect",
    "expected_false_positive_rate",
    "measured_false_positive_rate",
    "HEADER",
]

#: n, m, t, r, flags, reserved, c, seed
HEADER = struct.Struct("<QQBBBBIQ")
HEADER_SIZE = HEADER.size  # 32
MAX_R = 16
MIN_T, MAX_T = 2, 32
FLAG_ZSTD = 1
U64_MAX = (1 << 64) - 1
#: keys (flat positions) must be below this
MAX_KEY = 1 << 62
DEFAULT_MAX_ATTEMPTS = 64
ZSTD_LEVELS = (-131072, 22)


class PeelingError(UsageError):
    """The filter could not be built within the allowed number of seeds."""


def segment_length(n: int) -> int:
    """Cells per segment for n keys: s = ceil((ceil(1.23 n) + 32) / 3)."""
    return (-(-123 * n // 100) + 32 + 2) // 3


def table_cells(n: int) -> int:
    """m = 3 s, the number of cells of the table for n keys."""
    return 3 * segment_length(n)


def expected_false_positive_rate(t: int, c: int) -> float:
    """The probability that a pruned position reads back non-zero: c / 2**t."""
    return c / float(1 << t)


def measured_false_positive_rate(original, decoded) -> float:
    """The fraction of zero positions of ``original`` that ``decoded`` holds as non-zero.

    Compare with :func:`expected_false_positive_rate` (``c`` from :func:`inspect`);
    a false positive whose centroid is exactly zero is not counted (it is harmless).
    """
    a = np.asarray(original).astype(np.float64).reshape(-1)
    b = np.asarray(decoded).astype(np.float64).reshape(-1)
    if a.shape != b.shape:
        raise UsageError(f"bloomier: original has {a.size} elements, decoded {b.size}")
    pruned = a == 0
    k = int(np.count_nonzero(pruned))
    return float(np.count_nonzero(pruned & (b != 0))) / k if k else 0.0


# ------------------------------------------------------------------ clustering


def _round_centroids(c: np.ndarray, name: str) -> np.ndarray:
    """Centroids rounded as stored: RNE to float32, then (float16, bfloat16) RNE to the dtype."""
    return round_float(c, name if name in ("float16", "bfloat16") else "float32").astype(np.float64)


def cluster(values, r: int, dtype: str = "float32", iterations: int = 30):
    """1-D k-means of the non-zero ``values``: ``(centroids, labels)``.

    At most ``2**r - 1`` clusters, linear initialization over [min, max],
    at most ``iterations`` Lloyd steps (deterministic). The centroids come back
    rounded as the payload stores them (float32, and representable in
    ``dtype``), strictly increasing, each used by at least one value; ``labels``
    (uint32) are 1-based: value i is stored as ``centroids[labels[i] - 1]``,
    its nearest centroid (ties to the lower one).
    """
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size == 0:
        return np.zeros(0), np.zeros(0, dtype=np.uint32)
    if not np.isfinite(x).all():
        raise UsageError("bloomier: values to cluster must be finite")
    xs = np.sort(x)
    distinct = int(np.count_nonzero(np.diff(xs))) + 1
    k = min((1 << r) - 1, distinct)
    lo, hi = float(xs[0]), float(xs[-1])
    if k == 1:
        c = np.array([lo])
    else:
        c = lo + (hi - lo) * (np.arange(k, dtype=np.float64) / (k - 1))
        c[-1] = hi
    prefix = np.concatenate([[0.0], np.cumsum(xs)])
    for _ in range(iterations):
        mids = 0.5 * c[:-1] + 0.5 * c[1:]
        b = np.concatenate([[0], np.searchsorted(xs, mids, side="right"), [xs.size]])
        cnt = np.diff(b)
        full = cnt > 0
        new = c.copy()
        new[full] = (prefix[b[1:]][full] - prefix[b[:-1]][full]) / cnt[full]
        new[full] = np.clip(new[full], xs[b[:-1][full]], xs[b[1:][full] - 1])
        new = np.maximum.accumulate(new)  # stays sorted (rounding could break a tie)
        if np.array_equal(new, c):
            break
        c = new
    c = np.unique(_round_centroids(c, dtype))
    if not np.isfinite(c).all():
        raise UsageError(f"bloomier: a centroid is not finite in {dtype}")
    mids = 0.5 * c[:-1] + 0.5 * c[1:]
    lab = np.searchsorted(mids, x, side="left")
    used = np.unique(lab)
    if used.size < c.size:  # drop centroids no value is nearest to
        c = c[used]
        mids = 0.5 * c[:-1] + 0.5 * c[1:]
        lab = np.searchsorted(mids, x, side="left")
    return c, (lab + 1).astype(np.uint32)


# ------------------------------------------------------------------ table


def _kernels():
    from ..kernels import bloomier as kb

    return kb


def _check_t(t) -> int:
    if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not MIN_T <= t <= MAX_T:
        raise UsageError(f"bloomier: t must be an integer in [{MIN_T}, {MAX_T}], found {t!r}")
    return int(t)


def build_table(keys, values, t: int, seed: int = 0, max_attempts: int = DEFAULT_MAX_ATTEMPTS):
    """Build the filter: ``(table, seed used, attempts)``.

    ``keys``: distinct integers in [0, 2**62), strictly increasing; ``values``:
    integers in [0, 2**t). Seeds ``seed, seed + 1, ...`` are tried until peeling
    succeeds, at most ``max_attempts`` of them; then :class:`PeelingError`.
    The table is uint32 of :func:`table_cells` (n) cells, each below 2**t.
    """
    t = _check_t(t)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= U64_MAX:
        raise UsageError(f"bloomier: seed must be an integer in [0, 2**64 - 1], found {seed!r}")
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, (int, np.integer)) \
            or not 1 <= max_attempts <= 1 << 20:
        raise UsageError(f"bloomier: max_attempts must be an integer in [1, 1048576], found {max_attempts!r}")
    k_in = np.asarray(keys)
    v_in = np.asarray(values)
    if k_in.ndim != 1 or v_in.shape != k_in.shape:
        raise UsageError(f"bloomier: keys and values must be 1-D of one length, found {k_in.shape} and {v_in.shape}")
    if k_in.size and (k_in.dtype.kind not in "iu" or v_in.dtype.kind not in "iu"):
        raise UsageError("bloomier: keys and values must be integers")
    n = k_in.size
    if n:
        if int(k_in.min()) < 0 or int(k_in.max()) >= MAX_KEY:
            raise UsageError("bloomier: keys must be in [0, 2**62)")
        if int(v_in.min()) < 0 or int(v_in.max()) >= 1 << t:
            raise UsageError(f"bloomier: values must be in [0, 2**{t})")
    ks = k_in.astype(np.uint64)
    if n > 1:
        d = np.diff(ks.astype(np.int64))
        if not (d > 0).all():
            i = int(np.flatnonzero(d <= 0)[0])
            what = "repeats" if d[i] == 0 else "is out of order"
            raise UsageError(f"bloomier: key {int(ks[i + 1])} at index {i + 1} {what}; keys must be strictly "
                             f"increasing (a filter holds one value per key)")
    vs = v_in.astype(np.uint32)
    kb = _kernels()
    s = segment_length(n)
    m = 3 * s
    tmask = np.uint64((1 << t) - 1)
    cells = np.empty((n, 3), dtype=np.int64)
    masks = np.empty(n, dtype=np.uint32)
    order_key = np.empty(n, dtype=np.int64)
    order_cell = np.empty(n, dtype=np.int64)
    for attempt in range(int(max_attempts)):
        sd = (int(seed) + attempt) & U64_MAX
        kb.hash_keys(ks, np.uint64(kb.seed_key(np.uint64(sd))), s, tmask, cells, masks)
        if kb.peel(cells, m, order_key, order_cell) == n:
            table = np.zeros(m, dtype=np.uint32)
            kb.assign(cells, masks, vs, order_key, order_cell, table)
            return table, sd, attempt + 1
    raise PeelingError(
        f"bloomier: could not build the filter for {n} keys with {max_attempts} seeds starting at {seed} "
        f"(every seed left a cycle of keys sharing cells); raise max_attempts or try another seed"
    )


def pack_table(table, t: int) -> bytes:
    """The cells, ``t`` bits each, least significant bit first (ceil(m t / 8) bytes)."""
    t = _check_t(t)
    table = np.ascontiguousarray(table, dtype=np.uint32)
    if table.size and int(table.max()) >= 1 << t:
        raise UsageError(f"bloomier: a cell does not fit {t} bits")
    out = np.zeros(-(-table.size * t // 8), dtype=np.uint8)
    _kernels().pack(table, t, out)
    return out.tobytes()


def unpack_table(data, t: int, m: int) -> np.ndarray:
    """Inverse of :func:`pack_table`; CorruptError on a wrong length or non-zero padding bits."""
    t = _check_t(t)
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size != -(-m * t // 8):
        raise CorruptError(f"bloomier: table is {buf.size} bytes, {m} cells of {t} bits need {-(-m * t // 8)}")
    out = np.empty(m, dtype=np.uint32)
    if _kernels().unpack(buf, t, m, out) != 0:
        raise CorruptError("bloomier: the padding bits after the last cell are not zero")
    return out


def lookup(table, t: int, seed: int, centroids, size: int, out_dtype=np.float32) -> np.ndarray:
    """Decode ``size`` positions from a table (validated by the caller or built here)."""
    kb = _kernels()
    cent = np.ascontiguousarray(centroids, dtype=out_dtype)
    out = np.empty(size, dtype=out_dtype)
    table = np.ascontiguousarray(table, dtype=np.uint32)
    kb.lookup(table, np.uint64(kb.seed_key(np.uint64(seed))), table.size // 3, np.uint64((1 << t) - 1),
              cent.size, cent, out)
    return out


# ------------------------------------------------------------------ payload


def _parse(data, ctx: Context, cid: str, size: int | None):
    """Check the header and centroids; ``(fields, centroids float32, table bytes view)``."""
    mv = memoryview(data).cast("B") if not isinstance(data, memoryview) else data.cast("B")
    total = mv.nbytes
    if total < HEADER_SIZE:
        raise ctx.error(TruncatedError, cid, f"payload is {total} bytes, shorter than the {HEADER_SIZE}-byte header")
    n, m, t, r, flags, reserved, c, seed = HEADER.unpack_from(mv, 0)
    if not MIN_T <= t <= MAX_T:
        raise ctx.error(CorruptError, cid, f"header t = {t}, must be in [{MIN_T}, {MAX_T}]")
    if not 1 <= r <= min(MAX_R, t - 1):
        raise ctx.error(CorruptError, cid, f"header r = {r} with t = {t}; r must be in [1, min({MAX_R}, t - 1)]")
    if flags & ~FLAG_ZSTD or reserved:
        raise ctx.error(CorruptError, cid, f"header flags = {flags}, reserved = {reserved}; only flag bit 0 is defined")
    if size is not None and n > size:
        raise ctx.error(CorruptError, cid, f"header n = {n} keys, more than the tensor's {size} elements")
    if n >= MAX_KEY:
        raise ctx.error(CorruptError, cid, f"header n = {n} is out of range")
    if m != table_cells(n):
        raise ctx.error(CorruptError, cid, f"header m = {m}, but {n} keys make a table of {table_cells(n)} cells")
    cmax = min((1 << r) - 1, n)
    if (n == 0 and c != 0) or (n > 0 and not 1 <= c <= cmax):
        raise ctx.error(CorruptError, cid, f"header c = {c} centroids, must be in [{min(1, n)}, {cmax}] "
                                           f"for n = {n}, r = {r}")
    end = HEADER_SIZE + 4 * c
    if total < end:
        raise ctx.error(TruncatedError, cid, f"payload is {total} bytes, the header and {c} centroids need {end}")
    cent = np.frombuffer(mv, dtype="<f4", count=c, offset=HEADER_SIZE).astype(np.float32)
    if c and not np.isfinite(cent).all():
        i = int(np.flatnonzero(~np.isfinite(cent))[0])
        raise ctx.error(CorruptError, cid, f"centroid {i} is {float(cent[i])!r}, not finite")
    if c > 1 and not (np.diff(cent.astype(np.float64)) > 0).all():
        raise ctx.error(CorruptError, cid, "centroids are not strictly increasing")
    fields = {"n": n, "m": m, "t": t, "r": r, "flags": flags, "c": c, "seed": seed}
    return fields, cent, mv[end:]


def inspect(data) -> dict:
    """The header of a ``bloomier`` payload as a dict (n, m, t, r, c, seed, zstd, centroids, table_bytes)."""
    f, cent, rest = _parse(data, Context(), "bloomier", None)
    return {"n": f["n"], "m": f["m"], "t": f["t"], "r": f["r"], "c": f["c"], "seed": f["seed"],
            "zstd": bool(f["flags"] & FLAG_ZSTD), "centroids": cent.astype(np.float64).tolist(),
            "table_bytes": rest.nbytes}


def _cfg_zstd(config: dict, cid: str):
    v = config.get("zstd", None)
    if v is None:
        return None
    return cfg_int(config, "zstd", cid, *ZSTD_LEVELS)


class Bloomier(ArrayToBytesCodec):
    """Weightless-style coding of a pruned float tensor (spec/codecs/bloomier.md).

    ``r``: value bits (at most 2**r - 1 centroids, 1 <= r <= 16); ``t``: bits per
    table cell (r < t <= 32; false-positive rate about (2**r - 1) / 2**t);
    ``zstd``: a zstd level to compress the packed table with, or None.
    Encoder choices recorded in the payload, not in the configuration:
    ``seed`` (the first seed tried), ``max_attempts`` (seeds tried before
    :class:`PeelingError`) and ``iterations`` (Lloyd steps).
    """

    codec_id = "bloomier"

    def __init__(self, r: int = 4, t: int = 8, zstd: int | None = None, *, seed: int = 0,
                 max_attempts: int = DEFAULT_MAX_ATTEMPTS, iterations: int = 30):
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or not 1 <= r <= MAX_R:
            raise UsageError(f"bloomier: r must be an integer in [1, {MAX_R}], found {r!r}")
        t = _check_t(t)
        if not r < t:
            raise UsageError(f"bloomier: t = {t} must be larger than r = {r}")
        if zstd is not None and (isinstance(zstd, bool) or not isinstance(zstd, (int, np.integer))
                                 or not ZSTD_LEVELS[0] <= zstd <= ZSTD_LEVELS[1]):
            raise UsageError(f"bloomier: zstd must be None or a zstd level in {list(ZSTD_LEVELS)}, found {zstd!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= U64_MAX:
            raise UsageError(f"bloomier: seed must be an integer in [0, 2**64 - 1], found {seed!r}")
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, (int, np.integer)) \
                or not 1 <= max_attempts <= 1 << 20:
            raise UsageError(f"bloomier: max_attempts must be an integer in [1, 1048576], found {max_attempts!r}")
        if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) \
                or not 0 <= iterations <= 10_000:
            raise UsageError(f"bloomier: iterations must be an integer in [0, 10000], found {iterations!r}")
        self.r, self.t = int(r), t
        self.zstd = None if zstd is None else int(zstd)
        self.seed, self.max_attempts, self.iterations = int(seed), int(max_attempts), int(iterations)

    def get_config(self) -> dict:
        return {"r": self.r, "t": self.t, "zstd": self.zstd}

    @classmethod
    def from_config(cls, config: dict) -> "Bloomier":
        cid = cls.codec_id
        cfg_only(config, cid, ("r", "t", "zstd"))
        r = cfg_int(config, "r", cid, 1, MAX_R)
        t = cfg_int(config, "t", cid, MIN_T, MAX_T)
        if not r < t:
            raise CorruptError(f"codec {cid!r}: configuration t = {t} must be larger than r = {r}")
        return cls(r=r, t=t, zstd=_cfg_zstd(config, cid))

    def encode(self, arr: np.ndarray, ctx: Context) -> bytes:
        cid = self.codec_id
        arr, name = dtypes.as_stored(np.asarray(arr))
        if name not in FLOAT_DTYPES:
            raise ctx.error(UnsupportedError, cid, f"codes {', '.join(FLOAT_DTYPES)} tensors, not {name}")
        x = arr.reshape(-1).astype(np.float64)
        if x.size and not np.isfinite(x).all():
            i = int(np.flatnonzero(~np.isfinite(x))[0])
            raise ctx.error(UsageError, cid, f"element {i} is {x[i]!r}; the filter needs finite values")
        if x.size > MAX_KEY:
            raise ctx.error(UsageError, cid, f"{x.size} elements are more than the filter's 2**62 positions")
        keys = np.flatnonzero(x != 0).astype(np.uint64)
        try:
            cent, labels = cluster(x[keys.astype(np.int64)], self.r, name, self.iterations)
            table, sd, _ = build_table(keys, labels, self.t, self.seed, self.max_attempts)
        except UsageError as e:
            raise ctx.error(type(e), cid, str(e)) from None
        packed = pack_table(table, self.t)
        flags = 0
        if self.zstd is not None:
            packed = zstdframe.compress(packed, self.zstd)
            flags = FLAG_ZSTD
        head = HEADER.pack(keys.size, table.size, self.t, self.r, flags, 0, cent.size, sd)
        return head + cent.astype("<f4").tobytes() + packed

    def decode(self, data, spec: ArraySpec, ctx: Context) -> np.ndarray:
        cid = self.codec_id
        if spec.dtype not in FLOAT_DTYPES:
            raise ctx.error(CorruptError, cid, f"decodes {', '.join(FLOAT_DTYPES)} tensors, not {spec.dtype}")
        f, cent, rest = _parse(data, ctx, cid, spec.size)
        if (f["t"], f["r"]) != (self.t, self.r):
            raise ctx.error(CorruptError, cid, f"payload has t = {f['t']}, r = {f['r']}; the configuration "
                                               f"says t = {self.t}, r = {self.r}")
        if bool(f["flags"] & FLAG_ZSTD) != (self.zstd is not None):
            raise ctx.error(CorruptError, cid, "payload zstd flag disagrees with the configuration")
        m, t = f["m"], f["t"]
        need = -(-m * t // 8)
        if f["flags"] & FLAG_ZSTD:
            packed = zstdframe.decompress(rest, need, f"tensor {ctx.name!r}, codec {cid!r} table", exact=need,
                                          allow_extra=False)
        else:
            if rest.nbytes != need:
                err = TruncatedError if rest.nbytes < need else CorruptError
                raise ctx.error(err, cid, f"table is {rest.nbytes} bytes, {m} cells of {t} bits need {need}")
            packed = rest
        try:
            table = unpack_table(packed, t, m)
        except CorruptError as e:
            raise ctx.error(CorruptError, cid, str(e).removeprefix("bloomier: ")) from None
        if spec.dtype in ("float16", "bfloat16"):
            with np.errstate(over="ignore"):
                c_rounded = cent.astype(dtypes.to_numpy(spec.dtype)).astype(np.float32)
            if not np.isfinite(c_rounded).all():
                raise ctx.error(CorruptError, cid, f"a centroid is not finite in {spec.dtype}")
        work = np.float64 if spec.dtype == "float64" else np.float32
        out = lookup(table, t, f["seed"], cent.astype(work), spec.size, work)
        if spec.dtype in ("float16", "bfloat16"):
            out = out.astype(dtypes.to_numpy(spec.dtype))
        return out.reshape(spec.shape)
