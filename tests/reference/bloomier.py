"""Plain-Python reference of the ``bloomier`` kernels (spec/codecs/bloomier.md).

Slow and obvious: Python integers, one key at a time, written from the spec
page. The tests require :mod:`nncodec.kernels.bloomier` to produce the same
hashes, the same peeling order, the same table, the same packed bytes and the
same lookups.
"""

from __future__ import annotations

U64 = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15
SEED_SALT = 0x243F6A8885A308D3


def mix64(z: int) -> int:
    z &= U64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & U64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & U64
    return z ^ (z >> 31)


def segment_length(n: int) -> int:
    """s: each of the three segments has s cells, m = 3 s >= ceil(1.23 n) + 32."""
    return (-(-123 * n // 100) + 32 + 2) // 3


def seed_key(seed: int) -> int:
    return mix64(seed ^ SEED_SALT)


def g(k: int, key: int, i: int) -> int:
    return mix64((k + ((4 * key + i + 1) * GAMMA)) & U64)


def hashes(k: int, key: int, s: int, t: int):
    """``([h0, h1, h2], mask)`` of one key under seed key ``k``."""
    cells = [j * s + ((g(k, key, j) * s) >> 64) for j in range(3)]
    return cells, g(k, key, 3) & ((1 << t) - 1)


def peel(cells, m: int):
    """The peeling order ``[(key index, owned cell), ...]`` over m cells (shorter than n on failure)."""
    count: dict[int, int] = {}
    xkey: dict[int, int] = {}
    for i, row in enumerate(cells):
        for c in row:
            count[c] = count.get(c, 0) + 1
            xkey[c] = xkey.get(c, 0) ^ i
    queue = [c for c in range(m) if count.get(c, 0) == 1]
    order = []
    head = 0
    while head < len(queue):
        c = queue[head]
        head += 1
        if count[c] != 1:
            continue
        i = xkey[c]
        order.append((i, c))
        for cc in cells[i]:
            count[cc] -= 1
            xkey[cc] ^= i
            if count[cc] == 1:
                queue.append(cc)
    return order


def build(keys, vals, t: int, seed: int, max_attempts: int):
    """``(table, seed used, attempts)``; raise ValueError after ``max_attempts`` failed seeds."""
    n = len(keys)
    s = segment_length(n)
    for attempt in range(max_attempts):
        sd = (seed + attempt) & U64
        k = seed_key(sd)
        hs = [hashes(k, key, s, t) for key in keys]
        cells = [h[0] for h in hs]
        order = peel(cells, 3 * s)
        if len(order) < n:
            continue
        table = [0] * (3 * s)
        for i, c in reversed(order):
            x = vals[i] ^ hs[i][1]
            for cc in cells[i]:
                x ^= table[cc]
            table[c] = x
        return table, sd, attempt + 1
    raise ValueError(f"peeling failed for {max_attempts} seeds")


def pack(table, t: int) -> bytes:
    bits = 0
    for i, v in enumerate(table):
        bits |= v << (i * t)
    return bits.to_bytes(-(-len(table) * t // 8), "little")


def unpack(data: bytes, t: int, m: int):
    bits = int.from_bytes(data, "little")
    return [(bits >> (i * t)) & ((1 << t) - 1) for i in range(m)]


def lookup_raw(table, t: int, seed: int, key: int) -> int:
    s = len(table) // 3
    cells, x = hashes(seed_key(seed), key, s, t)
    for c in cells:
        x ^= table[c]
    return x


def lookup(table, t: int, seed: int, centroids, size: int):
    """The decoded tensor (a list of ``size`` values; 0.0 where x is not in [1, c])."""
    out = []
    c = len(centroids)
    for p in range(size):
        x = lookup_raw(table, t, seed, p)
        out.append(centroids[x - 1] if 1 <= x <= c else 0.0)
    return out
