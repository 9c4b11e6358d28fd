"""Numba kernels of the ``bloomier`` stage (spec/codecs/bloomier.md).

Only compiled kernels live here; :mod:`nncodec.codecs.bloomier` checks every
argument before calling one, and the kernels trust their arguments completely:

* ``keys`` are distinct uint64 values below 2**62; ``vals`` are uint32 below
  2**t; ``seg`` (the segment length s) is in [1, 2**42];
* ``table`` has ``3 * seg`` uint32 cells, each below 2**t;
* ``packed`` holds exactly ceil(3 * seg * t / 8) bytes;
* ``cent`` has at least ``c`` entries.

All integer arithmetic is unsigned 64-bit, modulo 2**64. Scalar arguments
are cast to uint64 on entry: Numba types a Python int below 2**63 as int64,
and int64 mixed with uint64 would silently become float64.
tests/reference/bloomier.py does the same in plain Python and
the tests require identical results.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import configure

configure()  # the cache folder, before the first @njit below

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_SEED_SALT = np.uint64(0x243F6A8885A308D3)
_LO32 = np.uint64(0xFFFFFFFF)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S32 = np.uint64(32)
_U0 = np.uint64(0)
_U1 = np.uint64(1)
_U2 = np.uint64(2)
_U3 = np.uint64(3)
_U4 = np.uint64(4)
_U8 = np.uint64(8)


# Deliberate copy of kernels.quant._mix64 (the SplitMix64 finalizer): each kernel module compiles
# on its own, so bloomier never imports, and compiles, the quantizer kernels.
@njit(cache=True, nogil=True, inline="always")
def _mix64(z):
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@njit(cache=True, nogil=True, inline="always")
def _mulhi(a, b):
    """floor(a * b / 2**64) for uint64 a, b."""
    a_lo = a & _LO32
    a_hi = a >> _S32
    b_lo = b & _LO32
    b_hi = b >> _S32
    p0 = a_lo * b_lo
    p1 = a_lo * b_hi
    p2 = a_hi * b_lo
    p3 = a_hi * b_hi
    mid = (p0 >> _S32) + (p1 & _LO32) + (p2 & _LO32)
    return p3 + (p1 >> _S32) + (p2 >> _S32) + (mid >> _S32)


@njit(cache=True, nogil=True)
def seed_key(seed):
    """K = mix64(seed xor 0x243F6A8885A308D3)."""
    return _mix64(np.uint64(seed) ^ _SEED_SALT)


@njit(cache=True, nogil=True, inline="always")
def _g(k, key, i):
    return _mix64(k + (_U4 * key + i + _U1) * _GAMMA)


@njit(cache=True, nogil=True)
def hash_keys(keys, k, seg, tmask, cells, masks):
    """``cells[i, j] = h_j(keys[i])`` (int64) and ``masks[i] = H_M(keys[i])`` (uint32)."""
    k = np.uint64(k)
    tmask = np.uint64(tmask)
    s = np.uint64(seg)
    for i in range(keys.shape[0]):
        key = keys[i]
        cells[i, 0] = np.int64(_mulhi(_g(k, key, _U0), s))
        cells[i, 1] = np.int64(s + _mulhi(_g(k, key, _U1), s))
        cells[i, 2] = np.int64(_U2 * s + _mulhi(_g(k, key, _U2), s))
        masks[i] = np.uint32(_g(k, key, _U3) & tmask)


@njit(cache=True, nogil=True)
def peel(cells, m, order_key, order_cell):
    """Peel the 3-hypergraph; return how many keys were peeled (all of them on success).

    ``order_key[q]``, ``order_cell[q]`` receive the q-th peeled key and the cell it owns.
    The queue is first-in first-out, seeded with the cells of count 1 in
    ascending order.
    """
    n = cells.shape[0]
    count = np.zeros(m, dtype=np.int32)
    xkey = np.zeros(m, dtype=np.int64)
    for i in range(n):
        for j in range(3):
            c = cells[i, j]
            count[c] += 1
            xkey[c] ^= i
    queue = np.empty(m, dtype=np.int64)
    tail = 0
    for c in range(m):
        if count[c] == 1:
            queue[tail] = c
            tail += 1
    head = 0
    done = 0
    while head < tail:
        c = queue[head]
        head += 1
        if count[c] != 1:
            continue
        i = xkey[c]
        order_key[done] = i
        order_cell[done] = c
        done += 1
        for j in range(3):
            cc = cells[i, j]
            count[cc] -= 1
            xkey[cc] ^= i
            if count[cc] == 1:
                queue[tail] = cc
                tail += 1
    return done


@njit(cache=True, nogil=True)
def assign(cells, masks, vals, order_key, order_cell, table):
    """Set the owned cells in reverse peeling order so every key looks up its value."""
    for q in range(order_key.shape[0] - 1, -1, -1):
        i = order_key[q]
        c = order_cell[q]
        x = np.uint32(vals[i]) ^ masks[i]
        x ^= table[cells[i, 0]] ^ table[cells[i, 1]] ^ table[cells[i, 2]]  # table[c] is still 0
        table[c] = x


@njit(cache=True, nogil=True)
def pack(table, t, out):
    """Write ``t`` bits per cell, least significant bit first, into zeroed bytes ``out``."""
    for i in range(table.shape[0]):
        v = np.uint64(table[i])
        pos = i * t
        for b in range(t):
            if (v >> np.uint64(b)) & _U1:
                p = pos + b
                out[p >> 3] |= np.uint8(1 << (p & 7))


@njit(cache=True, nogil=True)
def unpack(data, t, m, out):
    """Read ``m`` cells of ``t`` bits; return the OR of the bits after the last cell (must be 0)."""
    tmask = (_U1 << np.uint64(t)) - _U1
    nbytes = data.shape[0]
    for i in range(m):
        pos = i * t
        byte = pos >> 3
        acc = _U0
        for b in range(5):
            if byte + b < nbytes:
                acc |= np.uint64(data[byte + b]) << np.uint64(8 * b)
        out[i] = np.uint32((acc >> np.uint64(pos & 7)) & tmask)
    used = m * t
    rest = 0
    if used & 7:
        rest = np.int64(data[used >> 3]) >> (used & 7)
    return rest


# Deliberately inlines the probe of _g (three hashed cells per key) in the dense lookup loop.
@njit(cache=True, nogil=True)
def lookup(table, k, seg, tmask, c, cent, out):
    """``out[p]`` = the decoded value of position p, for p in [0, len(out))."""
    k = np.uint64(k)
    tmask = np.uint64(tmask)
    s = np.uint64(seg)
    cu = np.uint64(c)
    for p in range(out.shape[0]):
        key = np.uint64(p)
        h0 = _mulhi(_g(k, key, _U0), s)
        h1 = s + _mulhi(_g(k, key, _U1), s)
        h2 = _U2 * s + _mulhi(_g(k, key, _U2), s)
        x = (_g(k, key, _U3) & tmask) ^ np.uint64(table[h0] ^ table[h1] ^ table[h2])
        if x >= _U1 and x <= cu:
            out[p] = cent[x - _U1]
        else:
            out[p] = 0.0


# Deliberately specialised variant of lookup for a given list of keys (the fine-tuning layers'
# masks); same probe sequence as _g, kept inline for speed.
@njit(cache=True, nogil=True)
def lookup_keys(table, k, seg, tmask, keys, out):
    """``out[i]`` = the raw t-bit value x of ``keys[i]`` (for tests and inspection)."""
    k = np.uint64(k)
    tmask = np.uint64(tmask)
    s = np.uint64(seg)
    for i in range(keys.shape[0]):
        key = keys[i]
        h0 = _mulhi(_g(k, key, _U0), s)
        h1 = s + _mulhi(_g(k, key, _U1), s)
        h2 = _U2 * s + _mulhi(_g(k, key, _U2), s)
        out[i] = np.uint32((_g(k, key, _U3) & tmask) ^ np.uint64(table[h0] ^ table[h1] ^ table[h2]))
