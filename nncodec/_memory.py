"""Giving back the pages of a read-only file mapping once they have been used.

Reading a multi-gigabyte checkpoint through a memory map leaves every page it touched
resident (and counted in the process's RSS) until the map is closed. For a read-only
mapping of a regular file, ``MADV_DONTNEED`` drops the pages: a later access reads them
from the file again, so this changes memory use, never results.
"""

from __future__ import annotations

import mmap

import numpy as np

_PAGE = mmap.PAGESIZE
_ADVICE = getattr(mmap, "MADV_DONTNEED", None)


def release(mm, start: int, length: int) -> None:
    """Drop the whole pages of ``mm[start:start + length]`` from memory (best effort)."""
    if _ADVICE is None or mm is None or length <= 0:
        return
    lo = -(-start // _PAGE) * _PAGE  # pages wholly inside the range: neighbours keep theirs
    hi = ((start + length) // _PAGE) * _PAGE
    if hi > lo:
        try:
            mm.madvise(_ADVICE, lo, hi - lo)
        except (OSError, ValueError):
            pass


def release_array(arr) -> None:
    """If ``arr`` is a view into a read-only ``mmap.mmap``, drop the pages under it."""
    if _ADVICE is None or not isinstance(arr, np.ndarray) or not arr.nbytes:
        return
    base = arr
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    if not isinstance(base, mmap.mmap):
        return
    try:
        origin = np.frombuffer(base, np.uint8, count=1).__array_interface__["data"][0]
    except (ValueError, TypeError):
        return
    start = arr.__array_interface__["data"][0] - origin
    if 0 <= start and start + arr.nbytes <= len(base):
        release(base, start, arr.nbytes)
