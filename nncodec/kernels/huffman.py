"""The kernels of the ``planes`` codec and its Huffman coder, compiled only when that pays.

Every function here has the name, arguments, results and assumptions of the
compiled kernel of the same name in :mod:`nncodec.kernels.huffman_jit` (read
that module's docstring: the callers validate every argument first). A call
runs in NumPy and plain Python, bit for bit the same, while the work this
process has done is small; the first large call (or the first that brings the
work done past a budget) imports the compiled module, and from then on every
call goes there. So encoding or decoding a small file never compiles a kernel
(compiling one costs about a second, loading Numba itself about as much), and a
large file pays for compilation once, when it is cheap against the work.

``NNCODEC_JIT=always`` sends every call to the compiled kernels (the bounds-checked
CI pass does), ``NNCODEC_JIT=never`` none.
"""

from __future__ import annotations

import os
import threading

import numpy as np

MAX_LEN = 12  #: longest code length; a decode table has 1 << MAX_LEN entries
NONE, ROTL1, ZIGZAG = 0, 1, 2  # bit transforms

# Work is counted in units of about half a microsecond here: a symbol decoded (a
# Python loop), two symbols encoded, 16 bytes split, merged or counted (NumPy),
# and 4096 units for a package_merge call.
#: a call of at least this many units goes to the compiled kernels
JIT_MIN = 1 << 15
#: units this process may spend here (about 65 ms) before every call goes to the compiled kernels
JIT_BUDGET = 1 << 17
_PM_COST = 1 << 12

_PEEK = 64 - MAX_LEN
_M64 = (1 << 64) - 1
_lock = threading.Lock()
_state = {"jit": None, "work": 0}


def _mode() -> str:
    mode = os.environ.get("NNCODEC_JIT", "auto").strip().lower() or "auto"
    if mode not in ("auto", "always", "never"):
        from ..errors import UsageError

        raise UsageError(f"environment variable NNCODEC_JIT={mode!r}: set it to auto, always or never, or unset it")
    return mode


def jit_module():
    """The compiled kernels (:mod:`nncodec.kernels.huffman_jit`), imported on first use."""
    k = _state["jit"]
    if k is None:
        from . import huffman_jit as k

        _state["jit"] = k
    return k


def _jit(n: int):
    """The compiled module if a call of ``n`` units of work should use it, else None."""
    mode = _mode()
    if mode == "never":
        return None
    k = _state["jit"]
    if k is not None:
        return k
    with _lock:
        if mode == "always" or n >= JIT_MIN or _state["work"] + n > JIT_BUDGET:
            return jit_module()
        _state["work"] += n
    return None


def _ro(*arrays):
    """Read-only views of the input arrays: one compiled specialization whether or not a caller's were writable."""
    out = []
    for a in arrays:
        if isinstance(a, np.ndarray) and a.flags.writeable:
            a = a.view()
            a.flags.writeable = False
        out.append(a)
    return out


# ----------------------------------------------------------------- byte planes

_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _to_planes(x, transform, out):
    w = x.dtype.itemsize
    u = _UINT[w]
    v = np.asarray(x, u)
    top = u(8 * w - 1)
    if transform == ROTL1:
        v = (v << u(1)) | (v >> top)
    elif transform == ZIGZAG:
        v = (v << u(1)) ^ (u(0) - (v >> top))
    n = v.shape[0]
    out[:w, :n] = v.astype(f">u{w}").view(np.uint8).reshape(n, w).T


def _from_planes(planes, transform, out):
    w = len(planes)
    u = _UINT[w]
    n = out.shape[0]
    v = np.zeros(n, u)
    for p, plane in enumerate(planes):
        v |= np.asarray(plane[:n], u) << u(8 * (w - 1 - p))
    top = u(8 * w - 1)
    if transform == ROTL1:
        v = (v >> u(1)) | (v << top)
    elif transform == ZIGZAG:
        v = (v >> u(1)) ^ (u(0) - (v & u(1)))
    out[:] = v


def split1(x, transform, out):
    k = _jit(x.shape[0] >> 4)
    return k.split1(*_ro(x), transform, out) if k else _to_planes(x, transform, out)


def split2(x, transform, out):
    k = _jit(x.shape[0] >> 4)
    return k.split2(*_ro(x), transform, out) if k else _to_planes(x, transform, out)


def split4(x, transform, out):
    k = _jit(x.shape[0] >> 4)
    return k.split4(*_ro(x), transform, out) if k else _to_planes(x, transform, out)


def split8(x, transform, out):
    k = _jit(x.shape[0] >> 4)
    return k.split8(*_ro(x), transform, out) if k else _to_planes(x, transform, out)


def merge1(p0, transform, out):
    k = _jit(out.shape[0] >> 4)
    return k.merge1(*_ro(p0), transform, out) if k else _from_planes((p0,), transform, out)


def merge2(p0, p1, transform, out):
    k = _jit(out.shape[0] >> 4)
    return k.merge2(*_ro(p0, p1), transform, out) if k else _from_planes((p0, p1), transform, out)


def merge4(p0, p1, p2, p3, transform, out):
    k = _jit(out.shape[0] >> 4)
    return k.merge4(*_ro(p0, p1, p2, p3), transform, out) if k else _from_planes((p0, p1, p2, p3), transform, out)


def merge8(p0, p1, p2, p3, p4, p5, p6, p7, transform, out):
    k = _jit(out.shape[0] >> 4)
    if k:
        return k.merge8(*_ro(p0, p1, p2, p3, p4, p5, p6, p7), transform, out)
    return _from_planes((p0, p1, p2, p3, p4, p5, p6, p7), transform, out)


# ------------------------------------------------------------------ histograms


def histogram4(data, bounds):
    """Byte counts of the 4 segments ``data[bounds[k]:bounds[k+1]]``: shape (4, 256)."""
    k = _jit(int(bounds[4] - bounds[0]) >> 4)
    if k:
        return k.histogram4(*_ro(data, bounds))
    h = np.zeros((4, 256), np.int64)
    for s in range(4):
        h[s] = np.bincount(data[bounds[s]:bounds[s + 1]], minlength=256)
    return h


def context_histogram4(data, ctx, bounds):
    """Counts per segment, context byte and symbol: shape (4, 256, 256), index [k, ctx, sym]."""
    k = _jit(int(bounds[4] - bounds[0]) >> 4)
    if k:
        return k.context_histogram4(*_ro(data, ctx, bounds))
    h = np.zeros((4, 256, 256), np.int64)
    for s in range(4):
        lo, hi = bounds[s], bounds[s + 1]
        key = ctx[lo:hi].astype(np.int64) << 8 | data[lo:hi]
        h[s] = np.bincount(key, minlength=1 << 16).reshape(256, 256)
    return h


# ---------------------------------------------------------------- code lengths


def package_merge(counts, max_len):
    """Optimal code lengths of at most ``max_len`` bits for ``counts`` (int64[256]); see huffman_jit."""
    k = _jit(_PM_COST)
    if k:
        return k.package_merge(*_ro(counts), max_len)
    max_len = int(max_len)
    if max_len < 1:
        raise ValueError(f"max_len {max_len} must be at least 1")
    c = [int(v) for v in counts[:256]]
    lens = np.zeros(256, np.uint8)
    syms = [s for s in range(256) if c[s] > 0]
    nsym = len(syms)
    if nsym == 0:
        return lens
    if nsym == 1:
        lens[syms[0]] = 1
        return lens
    leaves = sorted(syms, key=lambda s: (c[s], s))  # by count, ties by symbol
    leaf_w = [c[s] for s in leaves]
    items = [list(leaves)]  # per level: a leaf symbol, or -1 for a package
    weights = [list(leaf_w)]
    for d in range(1, max_len):
        pw, npk = weights[d - 1], len(weights[d - 1]) // 2
        item, weight = [], []
        a = b = 0
        while a < nsym or b < npk:
            if b < npk:
                pkw = pw[2 * b] + pw[2 * b + 1]
            if b >= npk or (a < nsym and leaf_w[a] <= pkw):
                item.append(leaves[a])
                weight.append(leaf_w[a])
                a += 1
            else:
                item.append(-1)
                weight.append(pkw)
                b += 1
        items.append(item)
        weights.append(weight)
    m = 2 * nsym - 2
    counted = [0] * 256
    for d in range(max_len - 1, -1, -1):
        pk = 0
        row = items[d][:m]
        for s in row + [-1] * (m - len(row)):  # as the kernel reads its -1 padding
            if s >= 0:
                counted[s] += 1
            else:
                pk += 1
        m = 2 * pk
    lens[:] = np.array(counted, np.int64).astype(np.uint8)
    return lens


# --------------------------------------------------------------------- encoding


def _pack(t: np.ndarray) -> bytes:
    """The codes of encode-table entries ``t`` (code << 8 | length), MSB-first, zero-padded to a byte."""
    if t.size == 0:
        return b""
    lens = (t & np.uint64(255)).astype(np.int64)
    codes = t >> np.uint64(8)
    j = np.arange(MAX_LEN, dtype=np.int64)
    shift = lens[:, None] - 1 - j[None, :]
    keep = shift >= 0
    bits = (codes[:, None] >> np.maximum(shift, 0).astype(np.uint64)) & np.uint64(1)
    return np.packbits(bits[keep].astype(np.uint8)).tobytes()


def _write_streams(keys, bounds, table, out, obounds):
    ends = np.empty(4, np.int64)
    for s in range(4):
        body = _pack(table[keys[bounds[s]:bounds[s + 1]]])
        o = int(obounds[s])
        out[o:o + len(body)] = np.frombuffer(body, np.uint8)
        ends[s] = o + len(body)
    return ends


def encode4(data, bounds, table, out, obounds):
    """Encode segment k of ``data`` as stream k at ``out[obounds[k]:]``; see huffman_jit."""
    k = _jit(int(bounds[4] - bounds[0]) >> 1)
    if k:
        return k.encode4(*_ro(data, bounds, table), out, *_ro(obounds))
    return _write_streams(data, bounds, table, out, obounds)


def encode4_context(data, ctx, cmap, bounds, table, out, obounds):
    """Like :func:`encode4`; symbol i uses ``table[cmap[ctx[i]] << 8 | data[i]]``; see huffman_jit."""
    k = _jit(int(bounds[4] - bounds[0]) >> 1)
    if k:
        return k.encode4_context(*_ro(data, ctx, cmap, bounds, table), out, *_ro(obounds))
    keys = cmap[ctx].astype(np.int64) << 8 | data
    return _write_streams(keys, bounds, table, out, obounds)


# --------------------------------------------------------------------- decoding
#
# Ports of the compiled decoders, step for step: the same 64-bit loads, the same
# checks at the same points, the same status and bit positions on any input.


def _decode(buf, sb, bounds, bitpos, step1, step4):
    """The control flow of huffman_jit.decode4 and decode4_context, with per-symbol steps."""
    b = [int(sb[k]) * 8 for k in range(4)]
    e = [int(sb[k + 1]) * 8 for k in range(4)]
    lo = [int(bounds[k]) for k in range(4)]
    m = min(int(bounds[k + 1]) - lo[k] for k in range(4))
    g = m >> 2
    i = 0
    while i < g:
        if b[0] > e[0] or b[1] > e[1] or b[2] > e[2] or b[3] > e[3]:
            break
        j = i << 2
        for k in range(4):
            b[k] = step4(b[k], lo[k] + j)
        i += 1
    j = i << 2
    for k in range(4):
        bk, ek = b[k], e[k]
        for o in range(lo[k] + j, int(bounds[k + 1])):
            if bk > ek:
                return k
            bk = step1(bk, o)
        bitpos[k] = bk
    return -1


def _loader(buf):
    data = bytes(np.asarray(buf, np.uint8))

    def load(b):
        p = b >> 3
        return (int.from_bytes(data[p:p + 8], "big") << (b & 7)) & _M64

    return load


def decode4(buf, sb, table, out, bounds, bitpos):
    """Decode 4 streams into the 4 segments of ``out`` with a single-symbol table; see huffman_jit."""
    k = _jit(int(bounds[4] - bounds[0]))
    if k:
        return k.decode4(*_ro(buf, sb, table), out, *_ro(bounds), bitpos)
    load, t = _loader(buf), table.tolist()
    res = bytearray(out.shape[0])

    def step1(b, o):
        e = t[load(b) >> _PEEK]
        res[o] = e >> 4
        return b + (e & 15)

    def step4(b, o):
        x = load(b)
        used = 0
        for q in range(4):
            e = t[(x << used & _M64) >> _PEEK]
            res[o + q] = e >> 4
            used += e & 15
        return b + used

    status = _decode(buf, sb, bounds, bitpos, step1, step4)
    out[:] = np.frombuffer(res, np.uint8)
    return status


def decode4_context(buf, sb, tables, cmap, ctx, out, bounds, bitpos):
    """Like :func:`decode4`; symbol i uses table ``cmap[ctx[i]]``; see huffman_jit."""
    k = _jit(int(bounds[4] - bounds[0]))
    if k:
        return k.decode4_context(*_ro(buf, sb, tables, cmap, ctx), out, *_ro(bounds), bitpos)
    load, t = _loader(buf), tables.tolist()
    base = (np.asarray(cmap, np.int64)[ctx] << MAX_LEN).tolist()
    res = bytearray(out.shape[0])

    def step1(b, o):
        e = t[base[o] | load(b) >> _PEEK]
        res[o] = e >> 4
        return b + (e & 15)

    def step4(b, o):
        x = load(b)
        used = 0
        for q in range(4):
            e = t[base[o + q] | (x << used & _M64) >> _PEEK]
            res[o + q] = e >> 4
            used += e & 15
        return b + used

    status = _decode(buf, sb, bounds, bitpos, step1, step4)
    out[:] = np.frombuffer(res, np.uint8)
    return status


def decode4_multi(buf, sb, table, mtable, out, bounds, bitpos):
    """Like :func:`decode4`, up to 4 symbols per lookup in ``mtable``; see huffman_jit."""
    k = _jit(int(bounds[4] - bounds[0]))
    if k:
        return k.decode4_multi(*_ro(buf, sb, table, mtable), out, *_ro(bounds), bitpos)
    load, t, mt = _loader(buf), table.tolist(), mtable.tolist()
    res = bytearray(out.shape[0] + 16)  # a lookup writes 4 bytes and keeps ``count`` of them

    def m4(b, o):
        x = load(b)
        used = 0
        for _ in range(4):
            e = mt[(x << used & _M64) >> _PEEK]
            res[o:o + 4] = (e & 0xFFFFFFFF).to_bytes(4, "little")
            used += (e >> 32) & 255
            o += e >> 40
        return b + used, o

    b = [int(sb[k]) * 8 for k in range(4)]
    e = [int(sb[k + 1]) * 8 for k in range(4)]
    o = [int(bounds[k]) for k in range(4)]
    lim = [int(bounds[k + 1]) for k in range(4)]
    s = 16  # a group writes at most 16 symbols
    while all(b[k] <= e[k] and o[k] + s <= lim[k] for k in range(4)):
        for k in range(4):
            b[k], o[k] = m4(b[k], o[k])
    status = -1
    for k in range(4):
        bk, ok, ek = b[k], o[k], e[k]
        while bk <= ek and ok + s <= lim[k]:
            bk, ok = m4(bk, ok)
        while ok < lim[k]:
            if bk > ek:
                status = k
                break
            ent = t[load(bk) >> _PEEK]
            res[ok] = ent >> 4
            bk += ent & 15
            ok += 1
        if status >= 0:
            break
        bitpos[k] = bk
    out[:] = np.frombuffer(res, np.uint8)[:out.shape[0]]
    return status


def multi_table(single):
    """The multi-symbol table of :func:`decode4_multi` and the mean count; see huffman_jit."""
    size = single.shape[0]
    k = _jit(size >> 4)
    if k:
        return k.multi_table(*_ro(single))
    mask = size - 1
    j = np.arange(size, dtype=np.int64)
    used = np.zeros(size, np.int64)
    cnt = np.zeros(size, np.int64)
    ent = np.zeros(size, np.uint64)
    going = np.ones(size, bool)
    for c in range(4):
        e = single[(j << used) & mask]
        ln = (e & 15).astype(np.int64)
        going &= used + ln <= MAX_LEN
        ent[going] |= (e[going] >> 4).astype(np.uint64) << np.uint64(8 * c)
        used[going] += ln[going]
        cnt[going] += 1
    out = ent | (used.astype(np.uint64) << np.uint64(32)) | (cnt.astype(np.uint64) << np.uint64(40))
    return out, int(cnt.sum()) / size
