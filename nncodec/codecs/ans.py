"""``ans`` and ``zerorun``: static rANS coding of integer arrays (spec/codecs/ans.md, zerorun.md).

Both codecs code integer tensors (quantization levels) losslessly, close to
their first-order empirical entropy.

* ``ans`` maps each element to an unsigned *z-value* (zigzag for signed dtypes,
  the value itself for unsigned ones) and codes the z-values as one **stream**.
* ``zerorun`` codes the nonzero elements only: one stream of the zero-run
  lengths before each of them and one stream of their values.

A stream codes ``count`` z-values. Values below the alphabet size ``A`` are
literal symbols; larger ones are the escape symbol ``A`` followed by ``z - A``
in a side stream of LEB128 numbers. The encoder picks ``A`` to minimise the
estimated size. Symbol frequencies are normalised to ``2**precision`` by an
integer algorithm (:func:`normalize_freqs`), stored as Exp-Golomb codes of
their differences, and the symbols are coded with ``states`` interleaved
32-bit rANS states renormalised 16 bits at a time.

The model (alphabet choice, frequency normalisation, table coding) lives here
apart from the coder; the compiled kernels are in :mod:`nncodec.kernels.ans`
and are imported on first use. Every length, count and table in a payload is
checked here before a kernel runs, so damaged or hostile data raises
:class:`~nncodec.errors.CorruptError` naming the tensor and the field.
"""

from __future__ import annotations

import heapq

import numpy as np

from .. import dtypes
from ..errors import CorruptError, UsageError
from .base import ArraySpec, ArrayToBytesCodec, Context, cfg_choice, cfg_int, cfg_only

MIN_PRECISION = 10
MAX_PRECISION = 16
STATE_CHOICES = (1, 2, 4, 8, 16, 32)
DEFAULT_PRECISION = 14
DEFAULT_STATES = 8
MAX_EG_ORDER = 20  #: largest Exp-Golomb order of a frequency table
MODE_CONSTANT = 0
MODE_RANS = 1
RANS_L = 1 << 16
TABLE_BITS_PER_SYMBOL = 6  #: the encoder's estimate of a table entry's cost, in bits

_kernels = None


def kernels():
    """The compiled kernels module (imported, and so compiled, on first use)."""
    global _kernels
    if _kernels is None:
        from ..kernels import ans as k

        _kernels = k
    return _kernels


# ---------------------------------------------------------------------- helpers


def empirical_entropy_bits(levels) -> float:
    """First-order empirical entropy of ``levels`` in bits per element (0 for an empty array)."""
    a = np.asarray(levels).reshape(-1)
    n = a.size
    if n == 0:
        return 0.0
    if a.dtype.kind == "b":
        a = a.view(np.uint8)
    counts = None
    if a.dtype.kind in "iu":
        lo, hi = a.min(), a.max()
        if int(hi) - int(lo) < (1 << 22):
            d = (a - lo) if a.dtype == np.uint64 else a.astype(np.int64) - int(lo)
            counts = np.bincount(d.astype(np.int64))
    if counts is None:
        counts = np.unique(a, return_counts=True)[1]
    p = counts[counts > 0].astype(np.float64) / n
    return max(0.0, float(-np.dot(p, np.log2(p))))


# the writer is shared with the Huffman coder; readers differ (their byte limits are spec'd per codec)
from .huffman import put_varint  # noqa: E402


def get_varint(buf, pos: int, end: int, what: str, field: str) -> tuple[int, int]:
    """Read a minimal LEB128 number below 2**64 from ``buf[pos:end]``; return (value, new pos)."""
    v = 0
    shift = 0
    start = pos
    while True:
        if pos >= end:
            raise CorruptError(f"{what}: payload ends inside {field} at byte {start} (truncated)")
        b = int(buf[pos])
        pos += 1
        v |= (b & 0x7F) << shift
        if not b & 0x80:
            if b == 0 and pos - start > 1:
                raise CorruptError(f"{what}: {field} at byte {start} is not minimally encoded")
            if v >> 64:
                raise CorruptError(f"{what}: {field} at byte {start} is 2**64 or more")
            return v, pos
        shift += 7
        if pos - start >= 10:
            raise CorruptError(f"{what}: {field} at byte {start} is longer than 10 bytes")


def zmax_of(dtype_name: str) -> int:
    """The largest z-value a dtype has: ``2**bits - 1`` (zigzag is a bijection onto [0, 2**bits))."""
    return (1 << (8 * dtypes.itemsize(dtype_name))) - 1


def to_z(arr: np.ndarray) -> np.ndarray:
    """The z-values (uint64, C order) of an integer array: zigzag if signed, the value if unsigned."""
    a = np.ascontiguousarray(arr.reshape(-1))
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    out = np.empty(a.shape[0], np.uint64)
    kernels().to_z(a, a.dtype.kind == "i", out)
    return out


def z_to_values(z: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Invert :func:`to_z` for z-values already known to fit ``dtype``."""
    z = np.asarray(z, np.uint64)
    if dtype.kind == "i":
        z = (z >> np.uint64(1)) ^ (np.uint64(0) - (z & np.uint64(1)))
        return z.view(np.int64).astype(dtype)
    return z.astype(dtype)


def _check_int_dtype(dtype_name: str, what: str, cls=CorruptError) -> None:
    if dtypes.kind(dtype_name) not in "iu":
        raise cls(f"{what}: codes integer tensors only (int8..int64, uint8..uint64), found {dtype_name}")


# ------------------------------------------------------------------------ model


def choose_alphabet(z: np.ndarray, precision: int) -> tuple[int, np.ndarray]:
    """Pick the literal alphabet size ``A`` minimising the estimated stream size.

    Returns ``(A, counts)`` with ``counts`` the ``A + 1`` symbol counts (the escape
    symbol last). The estimate is ``sum(c * log2(n / c))`` over the symbols, plus 8
    bits per LEB128 byte of ``z`` for escaped values, plus
    :data:`TABLE_BITS_PER_SYMBOL` bits per table entry; ties go to the smallest ``A``.
    """
    n = z.shape[0]
    cap = (1 << precision) - 1
    k = kernels()
    hist = k.histogram_capped(z, cap)  # hist[cap] counts z >= cap
    c = hist[:cap].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(c > 0, c * np.log2(n / np.where(c > 0, c, 1.0)), 0.0)
    lit = np.concatenate(([0.0], np.cumsum(term)))  # lit[A]: literal symbols 0..A-1
    below = np.concatenate(([0], np.cumsum(hist[:cap])))  # elements with z < A
    esc_n = (n - below).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        esc_sym = np.where(esc_n > 0, esc_n * np.log2(n / np.where(esc_n > 0, esc_n, 1.0)), 0.0)
    s = np.arange(cap, dtype=np.int64)
    vlen = np.ones(cap, np.int64)
    for t in (7, 14):
        vlen += s >= (1 << t)
    eb = (hist[:cap] * 8 * vlen).astype(np.float64)
    tail = float(k.escape_bits(z, cap))
    esc_bits = np.concatenate((np.cumsum(eb[::-1])[::-1], [0.0])) + tail  # esc_bits[A]: z >= A
    table = TABLE_BITS_PER_SYMBOL * (np.arange(cap + 1) + 1.0)
    total = lit + esc_sym + esc_bits + table
    a = int(np.argmin(total))
    counts = np.empty(a + 1, np.int64)
    counts[:a] = hist[:a]
    counts[a] = n - int(below[a])
    return a, counts


def normalize_freqs(counts, precision: int) -> np.ndarray:
    """Frequencies summing to ``2**precision``, each used symbol >= 1 (spec/codecs/ans.md §3).

    1. ``f = floor(c * M / n)``, raised to 1 for a used symbol that rounds to 0;
    2. if ``M - sum(f) = d > 0``: add 1 to the ``d`` symbols not raised in step 1 with
       the largest remainders ``c * M mod n`` (ties: lowest symbol first);
    3. if ``d < 0``: ``-d`` times, subtract 1 from the largest frequency (ties: lowest
       symbol first).
    """
    c = np.asarray(counts, dtype=np.int64)
    m = 1 << precision
    n = int(c.sum())
    used = c > 0
    if int(used.sum()) > m:
        raise ValueError(f"{int(used.sum())} used symbols do not fit precision {precision}")
    if n < (1 << 46):
        prod = c * m
        q, r = prod // n, prod % n
    else:  # exact arithmetic for sizes whose products would overflow int64
        q = np.array([int(x) * m // n for x in c], np.int64)
        r = np.array([int(x) * m % n for x in c], np.int64)
    f = q.copy()
    raised = used & (q == 0)
    f[raised] = 1
    d = m - int(f.sum())
    if d > 0:
        cand = np.flatnonzero(used & ~raised)
        order = cand[np.lexsort((cand, -r[cand]))]
        f[order[:d]] += 1
    elif d < 0:
        heap = [(-int(f[i]), int(i)) for i in np.flatnonzero(f > 1)]
        heapq.heapify(heap)
        for _ in range(-d):
            nf, i = heapq.heappop(heap)
            f[i] -= 1
            if f[i] > 1:
                heapq.heappush(heap, (nf + 1, i))
    return f


def _zigzag_deltas(freqs: np.ndarray) -> np.ndarray:
    d = np.diff(np.asarray(freqs, np.int64), prepend=0)
    return np.where(d >= 0, 2 * d, -2 * d - 1)


def encode_table(freqs: np.ndarray) -> tuple[int, bytes]:
    """The frequency table: order ``k`` and bit string of Exp-Golomb codes of zigzag deltas."""
    v = _zigzag_deltas(freqs)
    best = None
    for k in range(MAX_EG_ORDER + 1):
        w = v + (1 << k)
        bits = int(np.sum(2 * _bitlen(w) - 1 - k))
        if best is None or bits < best[0]:
            best = (bits, k)
    k = best[1]
    w = (v + (1 << k)).astype(np.uint64)
    width = 2 * _bitlen(w.astype(np.int64)) - 1 - k
    mat = np.unpackbits(w.astype(">u8").view(np.uint8).reshape(-1, 8), axis=1)
    keep = np.arange(64)[None, :] >= (64 - width)[:, None]
    return k, np.packbits(mat[keep]).tobytes()


def _bitlen(w: np.ndarray) -> np.ndarray:
    """Bit lengths of positive integers below 2**53."""
    return np.frexp(np.asarray(w, np.float64))[1].astype(np.int64)


# ----------------------------------------------------------------------- stream


def encode_stream(z: np.ndarray, precision: int, nstates: int) -> bytes:
    """Code the z-values ``z`` (uint64) as one stream (spec/codecs/ans.md §2)."""
    n = z.shape[0]
    if n == 0:
        return b""
    z = np.ascontiguousarray(z, np.uint64)
    lo, hi = z.min(), z.max()
    if lo == hi:
        return bytes((MODE_CONSTANT,)) + put_varint(int(lo))
    k = kernels()
    a, counts = choose_alphabet(z, precision)
    freqs = normalize_freqs(counts, precision)
    cum = np.concatenate(([0], np.cumsum(freqs)[:-1])).astype(np.int64)
    esc_count = int(counts[a])
    sym = np.empty(n, np.int32)
    esc = np.empty(10 * esc_count, np.uint8)
    esc_len = k.symbols_and_escapes(z, a, sym, esc)
    words = np.empty(n, np.uint16)
    states = np.empty(nstates, np.uint32)
    pos = k.rans_encode(sym, freqs, cum, precision, nstates, words, states)
    eg_k, table = encode_table(freqs)
    nwords = n - pos
    return b"".join((
        bytes((MODE_RANS,)),
        put_varint(a),
        bytes((eg_k,)),
        put_varint(len(table)),
        table,
        put_varint(nwords),
        put_varint(esc_len),
        states.astype("<u4").tobytes(),
        words[pos:].astype("<u2").tobytes(),
        esc[:esc_len].tobytes(),
    ))


def decode_stream(buf: np.ndarray, pos: int, end: int, out: np.ndarray, precision: int, nstates: int,
                  zoff: int, zmax: int, signed: bool, what: str) -> None:
    """Decode the stream ``buf[pos:end]`` into ``out`` (1-D), which it must fill exactly.

    Element values are ``z + zoff`` for z-values ``z``, unzigzagged when ``signed``;
    every ``z + zoff`` must be at most ``zmax``.
    """
    n = out.shape[0]
    k = kernels()
    if n == 0:
        if end != pos:
            raise CorruptError(f"{what}: an empty stream must have no bytes, found {end - pos}")
        return
    if pos >= end:
        raise CorruptError(f"{what}: payload ends before the stream mode byte (truncated)")
    mode = int(buf[pos])
    pos += 1
    if mode == MODE_CONSTANT:
        z, pos = get_varint(buf, pos, end, what, "the constant value")
        if pos != end:
            raise CorruptError(f"{what}: {end - pos} bytes follow the constant value")
        if z + zoff > zmax:
            raise CorruptError(f"{what}: constant value {z} is outside the range of {out.dtype}")
        zz = np.array([z + zoff], np.uint64)
        out[:] = (z_to_values(zz, out.dtype) if signed else zz.astype(out.dtype))[0]
        return
    if mode != MODE_RANS:
        raise CorruptError(f"{what}: stream mode byte is {mode}, must be 0 (constant) or 1 (rANS)")
    m = 1 << precision
    a, pos = get_varint(buf, pos, end, what, "the alphabet size")
    if a > m - 1:
        raise CorruptError(f"{what}: alphabet size {a} is over {m - 1} (2**precision - 1)")
    if a >= 1 and a - 1 + zoff > zmax:
        raise CorruptError(f"{what}: alphabet size {a} holds values outside the range of {out.dtype}")
    if pos >= end:
        raise CorruptError(f"{what}: payload ends before the table order byte (truncated)")
    eg_k = int(buf[pos])
    pos += 1
    if eg_k > MAX_EG_ORDER:
        raise CorruptError(f"{what}: frequency table order {eg_k} is over {MAX_EG_ORDER}")
    tlen, pos = get_varint(buf, pos, end, what, "the frequency table length")
    if tlen > end - pos:
        raise CorruptError(f"{what}: frequency table length {tlen} runs past the payload end (truncated)")
    vals = np.empty(a + 1, np.int64)
    err = k.expgolomb_decode(buf, pos, pos + tlen, eg_k, vals)
    if err:
        _raise(err, what)
    pos += tlen
    deltas = np.where(vals & 1, -((vals + 1) >> 1), vals >> 1)
    freqs = np.cumsum(deltas)
    if freqs.min() < 0 or freqs.max() > m or int(freqs.sum()) != m:
        raise CorruptError(f"{what}: frequency table does not hold {a + 1} frequencies in [0, {m}] summing to {m}")
    nwords, pos = get_varint(buf, pos, end, what, "the word count")
    esc_len, pos = get_varint(buf, pos, end, what, "the escape stream length")
    need = 4 * nstates + 2 * nwords + esc_len
    if need != end - pos:
        raise CorruptError(
            f"{what}: states, {nwords} words and {esc_len} escape bytes need {need} bytes, "
            f"the payload has {end - pos} left"
        )
    if nwords > n:
        raise CorruptError(f"{what}: word count {nwords} is over the symbol count {n}")
    states = np.frombuffer(buf, "<u4", count=nstates, offset=pos).astype(np.uint32)
    if states.min() < RANS_L:
        raise CorruptError(f"{what}: an initial rANS state is below 65536 (damaged data)")
    wpos = pos + 4 * nstates
    epos = wpos + 2 * nwords
    # decode tables
    syms = np.repeat(np.arange(a + 1, dtype=np.int64), freqs)
    cum = np.concatenate(([0], np.cumsum(freqs)[:-1]))
    table = ((syms << 32) | ((freqs[syms] - 1) << 16) | (np.arange(m) - cum[syms])).astype(np.uint64)
    zl = np.arange(a + 1, dtype=np.uint64) + np.uint64(zoff)
    zl[a] = 0
    symval = z_to_values(zl, out.dtype) if signed else zl.astype(out.dtype)
    err = k.rans_decode(buf, wpos, epos, epos, end, states, precision, table, symval,
                        a, zoff, np.uint64(zmax), signed, out)
    if err:
        _raise(err, what)


def _raise(err: int, what: str):
    field, msg = kernels().ERRORS.get(err, ("stream", f"error {err}"))
    raise CorruptError(f"{what}: {field} {msg}")


# ----------------------------------------------------------------------- codecs


class _RansCodec(ArrayToBytesCodec):
    def __init__(self, precision: int = DEFAULT_PRECISION, states: int = DEFAULT_STATES):
        if not MIN_PRECISION <= precision <= MAX_PRECISION or states not in STATE_CHOICES:
            raise UsageError(
                f"codec {self.codec_id!r}: precision must be in [{MIN_PRECISION}, {MAX_PRECISION}] "
                f"and states one of {list(STATE_CHOICES)}, got precision={precision!r}, states={states!r}"
            )
        self.precision = precision
        self.states = states

    def get_config(self) -> dict:
        return {"precision": self.precision, "states": self.states}

    @classmethod
    def from_config(cls, config: dict):
        cfg_only(config, cls.codec_id, {"precision", "states"})
        return cls(
            cfg_int(config, "precision", cls.codec_id, MIN_PRECISION, MAX_PRECISION),
            cfg_choice(config, "states", cls.codec_id, STATE_CHOICES),
        )

    def _prepare(self, arr, ctx):
        arr, name = dtypes.as_stored(np.asarray(arr))
        _check_int_dtype(name, f"tensor {ctx.name!r}, codec {self.codec_id!r}", UsageError)
        return arr, name

    def _what(self, ctx: Context) -> str:
        return f"tensor {ctx.name!r}, codec {self.codec_id!r}"


class Ans(_RansCodec):
    """Static interleaved rANS over the z-values of an integer tensor (spec/codecs/ans.md)."""

    codec_id = "ans"

    def encode(self, arr: np.ndarray, ctx: Context) -> bytes:
        arr, _ = self._prepare(arr, ctx)
        return encode_stream(to_z(arr), self.precision, self.states)

    def decode(self, data, spec: ArraySpec, ctx: Context) -> np.ndarray:
        what = self._what(ctx)
        _check_int_dtype(spec.dtype, what)
        buf = np.frombuffer(data, np.uint8)
        dt = dtypes.to_numpy(spec.dtype)
        out = np.empty(spec.size, dt)
        decode_stream(buf, 0, buf.shape[0], out, self.precision, self.states, 0, zmax_of(spec.dtype),
                      dt.kind == "i", what)
        return out.reshape(spec.shape)


class ZeroRun(_RansCodec):
    """Zero-run lengths and nonzero values as two rANS streams (spec/codecs/zerorun.md)."""

    codec_id = "zerorun"

    def encode(self, arr: np.ndarray, ctx: Context) -> bytes:
        arr, _ = self._prepare(arr, ctx)
        flat = arr.reshape(-1)
        n = flat.shape[0]
        if n == 0:
            return b""
        nz = np.flatnonzero(flat)
        m = nz.shape[0]
        if m == 0:
            return put_varint(0)
        runs = np.diff(nz, prepend=-1) - 1
        rs = encode_stream(runs.astype(np.uint64), self.precision, self.states)
        vz = to_z(flat[nz]) - np.uint64(1)
        vs = encode_stream(vz, self.precision, self.states)
        return b"".join((put_varint(m), put_varint(len(rs)), rs, vs))

    def decode(self, data, spec: ArraySpec, ctx: Context) -> np.ndarray:
        what = self._what(ctx)
        _check_int_dtype(spec.dtype, what)
        buf = np.frombuffer(data, np.uint8)
        end = buf.shape[0]
        dt = dtypes.to_numpy(spec.dtype)
        n = spec.size
        out = np.zeros(n, dt)
        if n == 0:
            if end:
                raise CorruptError(f"{what}: an empty tensor must have an empty payload, found {end} bytes")
            return out.reshape(spec.shape)
        m, pos = get_varint(buf, 0, end, what, "the nonzero count")
        if m > n:
            raise CorruptError(f"{what}: nonzero count {m} is over the element count {n}")
        if m == 0:
            if pos != end:
                raise CorruptError(f"{what}: {end - pos} bytes follow a zero nonzero count")
            return out.reshape(spec.shape)
        rlen, pos = get_varint(buf, pos, end, what, "the run stream length")
        if rlen > end - pos:
            raise CorruptError(f"{what}: run stream length {rlen} runs past the payload end (truncated)")
        runs = np.empty(m, np.int64)
        decode_stream(buf, pos, pos + rlen, runs, self.precision, self.states, 0, n - m, False,
                      what + ", run stream")
        values = np.empty(m, dt)
        decode_stream(buf, pos + rlen, end, values, self.precision, self.states, 1, zmax_of(spec.dtype),
                      dt.kind == "i", what + ", value stream")
        err = kernels().zerorun_scatter(runs, values, out)
        if err:
            _raise(err, what)
        return out.reshape(spec.shape)


def for_levels(levels, ctx: Context | None = None) -> ArrayToBytesCodec:
    """``zerorun`` when more than 70% of ``levels`` are zero, else ``ans`` (default settings)."""
    a = np.asarray(levels)
    if a.size and np.count_nonzero(a) < 0.3 * a.size:
        return ZeroRun()
    return Ans()
