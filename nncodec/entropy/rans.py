"""Static rANS streams: the model and the coder shared by ``ans`` and ``zerorun``.

A stream codes ``count`` z-values (spec/codecs/ans.md §2). Values below the
alphabet size ``A`` are literal symbols; larger ones are the escape symbol
``A`` followed by ``z - A`` in a side stream of LEB128 numbers. The encoder
picks ``A`` to minimise the estimated size (:func:`choose_alphabet`). Symbol
frequencies are normalised to ``2**precision`` by an integer algorithm
(:func:`normalize_freqs`), stored as Exp-Golomb codes of their differences
(:func:`encode_table`), and the symbols are coded with ``states`` interleaved
32-bit rANS states renormalised 16 bits at a time.

The model (alphabet choice, frequency normalisation, table coding) is kept
apart from the coder (:func:`encode_stream`, :func:`decode_stream`); the
compiled kernels are in :mod:`nncodec.kernels.ans`, imported on first use.
Every length, count and table is checked here before a kernel runs, so damaged
or hostile data raises :class:`~nncodec.errors.CorruptError` naming the tensor
and the field.
"""

from __future__ import annotations

import heapq

import numpy as np

from ..errors import CorruptError
from .varint import read_varint, write_varint
from .zvalues import z_to_values

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


def kernels():
    """The compiled kernels module (imported, and so compiled, on first use)."""
    from ..kernels import ans

    return ans


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
        return bytes((MODE_CONSTANT,)) + write_varint(int(lo))
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
        write_varint(a),
        bytes((eg_k,)),
        write_varint(len(table)),
        table,
        write_varint(nwords),
        write_varint(esc_len),
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
        z, pos = read_varint(buf, pos, end, what, "the constant value")
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
    a, pos = read_varint(buf, pos, end, what, "the alphabet size")
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
    tlen, pos = read_varint(buf, pos, end, what, "the frequency table length")
    if tlen > end - pos:
        raise CorruptError(f"{what}: frequency table length {tlen} runs past the payload end (truncated)")
    vals = np.empty(a + 1, np.int64)
    err = k.expgolomb_decode(buf, pos, pos + tlen, eg_k, vals)
    if err:
        raise_kernel_error(err, what)
    pos += tlen
    deltas = np.where(vals & 1, -((vals + 1) >> 1), vals >> 1)
    freqs = np.cumsum(deltas)
    if freqs.min() < 0 or freqs.max() > m or int(freqs.sum()) != m:
        raise CorruptError(f"{what}: frequency table does not hold {a + 1} frequencies in [0, {m}] summing to {m}")
    nwords, pos = read_varint(buf, pos, end, what, "the word count")
    esc_len, pos = read_varint(buf, pos, end, what, "the escape stream length")
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
        raise_kernel_error(err, what)


def raise_kernel_error(err: int, what: str):
    """Raise the CorruptError for a nonzero status of an ``ans`` kernel."""
    field, msg = kernels().ERRORS.get(err, ("stream", f"error {err}"))
    raise CorruptError(f"{what}: {field} {msg}")


