"""Kernels of the ``huffman`` level coder (spec/codecs/huffman.md). Numba only."""

from __future__ import annotations

import numpy as np
from numba import njit

from . import configure

configure()  # the cache folder, before the first @njit below

OK = 0
ERR_SHORT = 1  # the escape stream ends inside a value
ERR_VARINT = 2  # a varint is longer than 10 bytes, over 64 bits, or not minimal
ERR_RANGE = 3  # a value is above the dtype's largest z-value
ERR_EXTRA = 4  # bytes are left in the escape stream after the last escape


@njit(cache=True, nogil=True)
def resolve(sym, buf, pos, end, zmax, out):
    """z-values from symbols (255 = escape, value 255 + the next varint of ``buf[pos:end]``).

    The wrapper guarantees ``0 <= pos <= end <= len(buf)`` and ``len(out) == len(sym)``.
    Returns (error code, index of the failing element or -1).
    """
    m = np.uint64(0x7F)
    base = np.uint64(255)
    for i in range(sym.shape[0]):
        s = sym[i]
        if s != 255:
            out[i] = np.uint64(s)
            continue
        v = np.uint64(0)
        shift = np.uint64(0)
        start = pos
        while True:
            if pos >= end:
                return ERR_SHORT, i
            b = np.uint64(buf[pos])
            pos += 1
            if shift == np.uint64(63) and b > np.uint64(1):
                return ERR_VARINT, i
            v |= (b & m) << shift
            if b < np.uint64(0x80):
                if b == np.uint64(0) and pos - start > 1:
                    return ERR_VARINT, i
                break
            shift += np.uint64(7)
            if shift > np.uint64(63):
                return ERR_VARINT, i
        if zmax < base or v > zmax - base:
            return ERR_RANGE, i
        out[i] = v + base
    if pos != end:
        return ERR_EXTRA, -1
    return OK, -1


@njit(cache=True, nogil=True)
def split(z, sym, esc):
    """Symbols (z capped at 255) and the escaped remainders z - 255; returns the escape count."""
    k = 0
    top = np.uint64(255)
    for i in range(z.shape[0]):
        v = z[i]
        if v >= top:
            sym[i] = 255
            esc[k] = v - top
            k += 1
        else:
            sym[i] = np.uint8(v)
    return k
