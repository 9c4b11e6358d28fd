"""Chunked records (format 1.1) and the thread pool that shares their work.

A large tensor's serialized form is coded as independent pieces ("chunks"): the array the
serializer receives is cut along its first axis into pieces of ``rows`` rows (the last one
shorter), and each piece is coded by the serializer and the bytes->bytes stages on its own.
The record's payload is the pieces' bytes one after the other; its header's ``chunks``
object (spec/FORMAT.md section 6.3) gives ``rows``, each piece's byte length and CRC-32.
Pieces are what threads share, what bounds the buffers a decoder needs, and what lets a
reader decode a row range without the rest of the tensor.

Thread count never changes the bytes: where the pieces are cut depends only on the shape,
and every piece is coded the same way whichever thread codes it.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor

from .errors import CorruptError, UsageError

#: elements per piece the encoder aims at (not part of the format: ``rows`` is stored)
CHUNK_ELEMENTS = 1 << 20

#: serializers whose pieces are coded independently; the others always code whole tensors
CHUNKABLE = frozenset({"raw", "planes", "ans", "zerorun", "huffman", "cabac"})


def rows_per_chunk(shape: tuple, elements: int = CHUNK_ELEMENTS) -> int | None:
    """Rows per piece for an array of ``shape``, or None when it is one piece."""
    if len(shape) == 0 or shape[0] < 2:
        return None
    row = math.prod(shape[1:])
    if row == 0:
        return None
    rows = max(1, elements // row)
    return rows if rows < shape[0] else None


def piece_bounds(n_rows: int, rows: int) -> list:
    """``[(first row, end row)]`` of each piece."""
    return [(r, min(r + rows, n_rows)) for r in range(0, n_rows, rows)]


# ------------------------------------------------------------------ CRC-32 of a concatenation


def _times(mat, vec: int) -> int:
    s, i = 0, 0
    while vec:
        if vec & 1:
            s ^= mat[i]
        vec >>= 1
        i += 1
    return s


def _square(mat):
    return [_times(mat, mat[n]) for n in range(32)]


def _zero_byte_operators(count: int = 64) -> list:
    """The GF(2) operators appending 2**k zero bytes to a CRC-32 (zlib's crc32_combine)."""
    op = [0xEDB88320] + [1 << n for n in range(31)]  # one zero bit
    for _ in range(3):
        op = _square(op)  # 2, 4, 8 zero bits: one zero byte
    ops = []
    for _ in range(count):
        ops.append(op)
        op = _square(op)
    return ops


_OPS: list = []


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC-32 of ``a + b`` from ``crc32(a)``, ``crc32(b)`` and ``len(b)``."""
    if len2 < 0 or len2 >= 1 << 64:
        raise ValueError(f"crc32_combine: length {len2} out of range")
    if not _OPS:
        _OPS.extend(_zero_byte_operators())
    k = 0
    while len2:
        if len2 & 1:
            crc1 = _times(_OPS[k], crc1)
        len2 >>= 1
        k += 1
    return (crc1 ^ crc2) & 0xFFFFFFFF


def crc32(data) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


@dataclasses.dataclass(frozen=True)
class Pieces:
    """The coded pieces of one record, in order, and their CRC-32s (computed where each piece
    was coded, when given)."""

    rows: int
    parts: tuple
    crcs: tuple | None = None

    @property
    def nbytes(self) -> int:
        return sum(len(p) for p in self.parts)

    def piece_crcs(self) -> list:
        return list(self.crcs) if self.crcs is not None else [crc32(p) for p in self.parts]

    def table(self) -> dict:
        """The record header's ``chunks`` object."""
        return {"rows": self.rows, "sizes": [len(p) for p in self.parts], "crc32": self.piece_crcs()}

    def payload_crc(self) -> int:
        """The CRC-32 of the whole payload, combined from the pieces' CRCs."""
        c = 0
        for crc, part in zip(self.piece_crcs(), self.parts):
            c = crc32_combine(c, crc, len(part))
        return c

    def __len__(self) -> int:
        return self.nbytes


@dataclasses.dataclass(frozen=True)
class Table:
    """A validated chunk table: piece ``i`` covers rows ``bounds[i]`` and payload bytes
    ``offsets[i]:offsets[i] + sizes[i]``."""

    rows: int
    bounds: tuple
    offsets: tuple
    sizes: tuple
    crcs: tuple

    def piece(self, payload, i: int):
        return payload[self.offsets[i]:self.offsets[i] + self.sizes[i]]


def parse_table(obj, shape: tuple, payload_len: int, what: str) -> Table:
    """Validate a record's ``chunks`` object against the serializer's input ``shape`` and the
    payload length; CorruptError naming the field otherwise."""
    if not isinstance(obj, dict) or set(obj) != {"rows", "sizes", "crc32"}:
        raise CorruptError(f"{what}: 'chunks' must be an object with exactly 'rows', 'sizes' and 'crc32'")
    rows, sizes, crcs = obj["rows"], obj["sizes"], obj["crc32"]
    if len(shape) == 0 or shape[0] < 2:
        raise CorruptError(f"{what}: 'chunks' on an array of shape {list(shape)}, which has fewer than 2 rows")
    if isinstance(rows, bool) or not isinstance(rows, int) or not 1 <= rows < shape[0]:
        raise CorruptError(f"{what}: chunks 'rows' = {rows!r:.40}, must be an integer in [1, {shape[0] - 1}]")
    bounds = piece_bounds(shape[0], rows)
    for key, lst, hi in (("sizes", sizes, payload_len), ("crc32", crcs, 0xFFFFFFFF)):
        if not isinstance(lst, list) or len(lst) != len(bounds):
            raise CorruptError(f"{what}: chunks {key!r} must list {len(bounds)} integers (one per piece of "
                               f"{rows} rows of {shape[0]})")
        for v in lst:
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= hi:
                raise CorruptError(f"{what}: chunks {key!r} holds {v!r:.40}, not an integer in [0, {hi}]")
    offsets, pos = [], 0
    for s in sizes:
        offsets.append(pos)
        pos += s
    if pos != payload_len:
        raise CorruptError(f"{what}: chunk sizes add up to {pos} bytes, the payload is {payload_len}")
    return Table(rows, tuple(bounds), tuple(offsets), tuple(sizes), tuple(crcs))


def check_piece_crc(data, table: Table, i: int, what: str) -> None:
    if zlib.crc32(data) & 0xFFFFFFFF != table.crcs[i]:
        raise CorruptError(f"{what}: chunk {i} (rows {table.bounds[i][0]}..{table.bounds[i][1] - 1}) "
                           f"checksum mismatch (crc32); the stored bytes are damaged")


# ------------------------------------------------------------------ threads


def resolve_threads(threads) -> int:
    """``threads`` as a positive int; None means every core."""
    if threads is None:
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise UsageError(f"threads must be a positive integer (or None for every core), found {threads!r:.40}")
    return threads


_pools: dict = {}
_pools_lock = threading.Lock()
_local = threading.local()


def _mark_worker():
    _local.worker = True


def in_worker() -> bool:
    """True inside a pool thread: work started there runs inline (no nested waiting)."""
    return getattr(_local, "worker", False)


def pool(threads: int) -> ThreadPoolExecutor:
    """A shared pool of ``threads`` workers (created once per size)."""
    with _pools_lock:
        if _pools.get("pid") != os.getpid():  # a forked child has none of its parent's threads
            _pools.clear()
            _pools["pid"] = os.getpid()
        ex = _pools.get(threads)
        if ex is None:
            ex = _pools[threads] = ThreadPoolExecutor(threads, thread_name_prefix="nncodec",
                                                      initializer=_mark_worker)
        return ex


def ordered(jobs, threads: int, window: int | None = None):
    """Run the callables of the iterable ``jobs`` on ``threads`` threads; yield their results in
    order. At most ``window`` (default 2 x threads) jobs are in flight, so the jobs iterable is
    consumed only as results are taken: memory stays bounded by the window."""
    if threads <= 1 or in_worker():
        for job in jobs:
            yield job()
        return
    ex = pool(threads)
    window = window or 2 * threads
    todo = collections.deque()
    try:
        for job in jobs:
            todo.append(ex.submit(job))
            if len(todo) >= window:
                yield todo.popleft().result()
        while todo:
            yield todo.popleft().result()
    finally:
        for f in todo:
            f.cancel()
        for f in todo:
            if not f.cancelled():
                try:
                    f.result()
                except BaseException:
                    pass


def run_all(jobs: list, threads: int) -> list:
    """Results of every callable in ``jobs`` (in order), on up to ``threads`` threads."""
    return list(ordered(jobs, min(threads, len(jobs)) if jobs else 1, window=len(jobs) or 1))
