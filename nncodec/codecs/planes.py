"""``planes``: lossless coding of a tensor as byte planes (spec/codecs/planes.md).

The elements are viewed as unsigned words of the dtype's width, optionally
bit-transformed (``rotl1`` moves a float's sign bit to the bottom so the top
byte is the exponent; ``zigzag`` folds signed integers), and split into byte
planes, most significant first. Each plane is stored raw, as one repeated
byte, as a canonical Huffman block (spec/codecs/planes-huffman.md, :mod:`nncodec.entropy.blockhuffman`), as a context block
(a Huffman table per value of the plane above) or as a zstd frame, whichever
is smallest. A tensor no plane coding shrinks is stored as its raw bytes
behind a one-byte header.

Importing this module compiles nothing; the kernels compile on first use.
"""

from __future__ import annotations

import threading

import numpy as np

from .. import dtypes
from ..errors import CorruptError, LimitError, UsageError
from ..entropy import blockhuffman as hf
from ..entropy import zstdframe
from ..entropy.stats import entropy_bits
from ..entropy.varint import read_varint, write_varint
from .base import ArraySpec, ArrayToBytesCodec, Context, cfg_choice, cfg_int, cfg_only

TRANSFORMS = ("none", "rotl1", "zigzag")
_TCODE = {"none": 0, "rotl1": 1, "zigzag": 2}

LAYOUT_STORED = 0  #: the tensor's little-endian bytes follow
LAYOUT_PLANES = 1  #: w coded planes follow

MODE_RAW = 0
MODE_CONST = 1
MODE_HUFFMAN = 2
MODE_CONTEXT = 3
MODE_ZSTD = 4
MODE_NAMES = {MODE_RAW: "raw", MODE_CONST: "const", MODE_HUFFMAN: "huffman", MODE_CONTEXT: "context", MODE_ZSTD: "zstd"}

# Encoder tuning (not part of the format; spec/codecs/planes.md "Encoder").
#: a plane of at least this many bytes is first sampled; a sample entropy over
#: DENSE_BITS bits per byte marks it incompressible by Huffman coding
SAMPLE_MIN = 1 << 16
SAMPLE_SIZE = 1 << 14
DENSE_BITS = 7.95
#: a coded mode must save more than n >> SHIFT bytes over raw (huffman, zstd) or
#: over raw and huffman (context), since it decodes slower than a copy
PENALTY_SHIFT = {MODE_RAW: None, MODE_CONST: None, MODE_HUFFMAN: 7, MODE_CONTEXT: 7, MODE_ZSTD: 7}
#: a context block is tried for planes of at least CONTEXT_MIN_N bytes whose plane
#: above coded to at most CONTEXT_ABOVE of its raw size
CONTEXT_MIN_N = 4096
CONTEXT_ABOVE = 0.9
#: zstd is tried for planes of at least ZSTD_MIN_N bytes, first on a sample of ZSTD_SAMPLE bytes (4 chunks)
ZSTD_MIN_N = 64
ZSTD_SAMPLE = 1 << 16
#: room a plane coder may write past the end of its part
_SLACK = 64

LEVEL_MIN, LEVEL_MAX = -131072, 22

_SPLIT = {1: lambda k: k.split1, 2: lambda k: k.split2, 4: lambda k: k.split4, 8: lambda k: k.split8}
_MERGE = {1: lambda k: k.merge1, 2: lambda k: k.merge2, 4: lambda k: k.merge4, 8: lambda k: k.merge8}


class Planes(ArrayToBytesCodec):
    codec_id = "planes"

    def __init__(self, transform: str = "rotl1", level: int = 3):
        if transform not in TRANSFORMS:
            raise UsageError(f"planes: transform {transform!r} must be one of {list(TRANSFORMS)}")
        if isinstance(level, bool) or not isinstance(level, int) or not LEVEL_MIN <= level <= LEVEL_MAX:
            raise UsageError(f"planes: level {level!r} must be an integer in [{LEVEL_MIN}, {LEVEL_MAX}]")
        self.transform = transform
        self.level = level

    @classmethod
    def for_dtype(cls, dtype_name: str, level: int = 3) -> "Planes":
        """The default configuration for a dtype: rotl1 for floats, zigzag for signed ints, none otherwise."""
        k = dtypes.kind(dtype_name)
        transform = {"f": "rotl1", "i": "zigzag"}.get(k, "none")
        return cls(transform, level)

    def get_config(self) -> dict:
        return {"transform": self.transform, "level": self.level}

    @classmethod
    def from_config(cls, config: dict) -> "Planes":
        cfg_only(config, cls.codec_id, {"transform", "level"})
        transform = cfg_choice(config, "transform", cls.codec_id, TRANSFORMS)
        level = cfg_int(config, "level", cls.codec_id, LEVEL_MIN, LEVEL_MAX)
        return cls(transform, level)

    # ---------------------------------------------------------------- encode

    def encode(self, arr: np.ndarray, ctx: Context) -> bytes:
        arr, name = dtypes.as_stored(arr)
        n = arr.size
        if n == 0:
            return b""
        w = dtypes.itemsize(name)
        flat = arr.reshape(-1)
        stored = 1 + n * w
        out = _scratch("out", stored + _SLACK)
        if n > 2:  # at most 2 elements: planes take at least 1 + 2w bytes, never fewer than stored
            k = hf.kernels()
            planes = _scratch("split", w * n).reshape(w, n)
            _SPLIT[w](k)(flat.view(dtypes.uint_view(name)), _TCODE[self.transform], planes)
            out[0] = LAYOUT_PLANES
            pos = 1
            ratios = []
            for p in range(w):
                pos = self._encode_plane(planes, p, out, pos, stored, ratios)
                if pos is None:
                    break
            else:
                if pos < stored:
                    return out[:pos].tobytes()
        out[0] = LAYOUT_STORED
        out[1:stored] = flat.view(np.uint8)
        return out[:stored].tobytes()

    def _encode_plane(self, planes: np.ndarray, p: int, out: np.ndarray, pos: int, limit: int, ratios: list):
        """Write the best coding of plane p at ``out[pos:]``; None if it would reach ``limit``."""
        data = planes[p]
        n = len(data)
        dense = False
        if n >= SAMPLE_MIN:
            sample = data[::n // SAMPLE_SIZE]
            dense = entropy_bits(np.bincount(sample, minlength=256)) > DENSE_BITS * len(sample)
        cands = [(1 + n, MODE_RAW, None)]  # (size, mode, plan or body)
        if not dense:
            hist4 = hf.kernels().histogram4(data, hf.segment_bounds(n))
            hist = hist4.sum(axis=0)
            used = np.nonzero(hist)[0]
            # a Huffman block costs at least the Shannon bound plus 4 bits per used symbol;
            # when that cannot beat raw by the required margin, skip building it
            floor_bits = entropy_bits(hist) + 4 * len(used)
            dense = len(used) > 1 and floor_bits >= 8 * (n - (n >> PENALTY_SHIFT[MODE_HUFFMAN]))
        if not dense:
            if len(used) == 1:
                if pos + 2 >= limit:
                    return None
                out[pos] = MODE_CONST
                out[pos + 1] = used[0]
                ratios.append(0.0)
                return pos + 2
            plan = hf.plan_block(data, hist4)
            cands.append((_part_size(plan.size), MODE_HUFFMAN, plan))
        # a plane that looks incompressible on its own can still be predictable from the
        # plane above it (the top mantissa bits given the exponent): try the context mode
        if (p >= 1 and n >= CONTEXT_MIN_N and ratios[p - 1] <= CONTEXT_ABOVE and (p == 1 or not dense)
                and _context_may_pay(data, planes[p - 1])):
            cplan = hf.plan_context(data, planes[p - 1])
            cands.append((_part_size(cplan.size), MODE_CONTEXT, cplan))
        # float mantissa planes near 8 bits of entropy have nothing for zstd to find
        if n >= ZSTD_MIN_N and not (dense and self.transform == "rotl1"):
            best = min(size for size, _, _ in cands)
            body = self._try_zstd(data, best)
            if body is not None:
                cands.append((_part_size(len(body)), MODE_ZSTD, body))
        size, mode, obj = min(cands, key=lambda c: c[0] + _penalty(c[1], n))
        ratios.append(size / n)
        if pos + size >= limit:
            return None
        out[pos] = mode
        if mode == MODE_RAW:
            out[pos + 1:pos + 1 + n] = data
            return pos + 1 + n
        body_len = obj.size if mode in (MODE_HUFFMAN, MODE_CONTEXT) else len(obj)
        head = write_varint(body_len)
        q = pos + 1
        out[q:q + len(head)] = np.frombuffer(head, np.uint8)
        q += len(head)
        if mode == MODE_HUFFMAN:
            end = hf.write_block(data, obj, out, q)
        elif mode == MODE_CONTEXT:
            end = hf.write_context_block(data, planes[p - 1], obj, out, q)
        else:
            out[q:q + body_len] = np.frombuffer(obj, np.uint8)
            end = q + body_len
        if end != pos + size:
            raise AssertionError("plane coder wrote a size other than planned")
        return end

    def _try_zstd(self, data: np.ndarray, best_size: int):
        """A zstd frame of the plane if a sample suggests it beats ``best_size`` bytes, else None."""
        compress = zstdframe.compress
        n = len(data)
        if n > ZSTD_SAMPLE:
            chunk = ZSTD_SAMPLE // 4
            sample = np.concatenate([data[s:s + chunk] for s in ((n - chunk) * i // 3 for i in range(4))])
            if len(compress(sample, self.level)) >= 0.9 * best_size * len(sample) / n:
                return None
        return compress(data, self.level)

    # ---------------------------------------------------------------- decode

    def decode(self, data, spec: ArraySpec, ctx: Context) -> np.ndarray:
        return self._decode(data, spec, ctx, None)

    def decode_into(self, data, spec: ArraySpec, ctx: Context, out: np.ndarray) -> None:
        self._decode(data, spec, ctx, out)

    def _decode(self, data, spec: ArraySpec, ctx: Context, into) -> np.ndarray:
        name = spec.dtype
        w = dtypes.itemsize(name)
        n = spec.size
        # into given: no NumPy dtype needed (bfloat16 and float8 would import ml_dtypes)
        dt = dtypes.to_numpy(name) if into is None else into.dtype
        if n > ctx.limits.max_elements:
            raise ctx.error(LimitError, self.codec_id,
                            f"{n} elements, over the limit max_elements={ctx.limits.max_elements}")
        buf = hf.as_u8(data).view()
        buf.flags.writeable = False
        size = len(buf)
        if n == 0:
            if size:
                raise ctx.error(CorruptError, self.codec_id,
                                f"payload of an empty tensor must be empty, found {size} bytes")
            return np.empty(spec.shape, dt) if into is None else into
        if size == 0:
            raise ctx.error(CorruptError, self.codec_id, "payload is empty, the layout byte is missing")
        layout = int(buf[0])
        if layout == LAYOUT_STORED:
            if size != 1 + n * w:
                raise ctx.error(CorruptError, self.codec_id,
                                f"stored layout: payload is {size} bytes, {name}{list(spec.shape)} needs 1 + {n * w}")
            if into is None:
                out = buf[1:].copy().view(dt)
            else:
                out = into.reshape(-1)
                out.view(np.uint8)[:] = buf[1:]
        elif layout == LAYOUT_PLANES:
            srcs = []
            pos = 1
            for p in range(w):
                src, pos = self._decode_plane(buf, pos, n, p, srcs, ctx)
                src.flags.writeable = False  # one merge kernel specialization
                srcs.append(src)
            if pos != size:
                raise ctx.error(CorruptError, self.codec_id, f"{size - pos} bytes after the last plane")
            if into is None:
                words = np.empty(n, dtypes.uint_view(name))
            else:
                words = into.reshape(-1).view(dtypes.uint_view(name))
            _MERGE[w](hf.kernels())(*srcs, _TCODE[self.transform], words)
            out = words.view(dt)
        else:
            raise ctx.error(CorruptError, self.codec_id, f"layout byte is {layout}, must be 0 (stored) or 1 (planes)")
        if name == "bool" and n and int(out.view(np.uint8).max()) > 1:
            raise ctx.error(CorruptError, self.codec_id, "a bool element decodes to a byte other than 0 or 1")
        return out.reshape(spec.shape) if into is None else into

    def _decode_plane(self, buf: np.ndarray, pos: int, n: int, p: int, srcs: list, ctx: Context):
        """Decode plane p at ``buf[pos:]``; return (plane bytes, position after it)."""
        size = len(buf)
        if pos >= size:
            raise ctx.error(CorruptError, self.codec_id, f"payload ends before plane {p}")
        mode = int(buf[pos])
        pos += 1
        if mode not in MODE_NAMES:
            raise ctx.error(CorruptError, self.codec_id, f"plane {p}: unknown mode {mode}")
        what = f"tensor {ctx.name!r}, codec 'planes', plane {p} ({MODE_NAMES[mode]})"
        if mode == MODE_RAW:
            if size - pos < n:
                raise CorruptError(f"{what}: needs {n} bytes, {size - pos} left")
            return buf[pos:pos + n], pos + n
        if mode == MODE_CONST:
            if size - pos < 1:
                raise CorruptError(f"{what}: payload ends before the plane's byte")
            plane = _scratch(p, n)
            plane[:] = buf[pos]
            return plane, pos + 1
        blen, pos = read_varint(buf, pos, size, what, max_len=hf.VARINT_MAX_LEN)
        if blen > size - pos:
            raise CorruptError(f"{what}: body length {blen} exceeds the {size - pos} bytes left")
        body = buf[pos:pos + blen]
        if mode == MODE_HUFFMAN:
            plane = hf.decode_block(body, n, what, out=_scratch(p, n))
        elif mode == MODE_CONTEXT:
            if p == 0:
                raise CorruptError(f"{what}: the first plane has no plane above it to use as context")
            plane = hf.decode_context_block(body, srcs[p - 1], what, out=_scratch(p, n))
        else:
            plane = _zstd_exact(body, n, what)
        return plane, pos + blen


def _context_may_pay(data: np.ndarray, above: np.ndarray) -> bool:
    """Whether a context block could beat a Huffman block by its penalty, judged on a
    strided sample of a long plane with plan_context's own rule (a context value gets a
    table when its saving over the pooled code exceeds the table's cost), each saving
    corrected for the table being fitted to the sample (Miller-Madow) and scaled to the
    plane. An encoder choice only: a plane it skips is coded as before, minus the trial."""
    n = len(data)
    if n < SAMPLE_MIN:
        return True
    step = n // SAMPLE_SIZE
    d = data[::step].astype(np.int64)
    c = above[::step].astype(np.int64)
    joint = np.bincount(c * 256 + d, minlength=65536).reshape(256, 256).astype(np.float64)
    marg = joint.sum(axis=0)
    with np.errstate(divide="ignore"):
        cost = -np.log2(np.where(marg > 0, marg, 1) / len(d))
    nz = joint > 0
    used = nz.any(axis=1)
    cross = (joint * cost).sum(axis=1)
    own = entropy_bits(joint) + (nz.sum(axis=1) - 1).clip(0) / (2 * np.log(2))
    lo = nz.argmax(axis=1)
    hi = 255 - nz[:, ::-1].argmax(axis=1)
    table = 8 * (2 + (hi - lo + 2) // 2) + 32
    saving = np.where(used, (cross - own) * (n / len(d)) - table, 0.0)
    return float(saving.clip(0).sum()) >= 8 * (n >> PENALTY_SHIFT[MODE_CONTEXT])


_local = threading.local()


def _scratch(key, n: int) -> np.ndarray:
    """This thread's reusable byte buffer ``key`` of ``n`` bytes (its contents are garbage).
    Pieces of a tensor are of one size: the same pages serve every piece, so a big file
    costs no first-touch page faults per piece. Every caller is done with the buffer
    before it returns (planes are merged into the output; encode copies its bytes out)."""
    bufs = getattr(_local, "bufs", None)
    if bufs is None:
        bufs = _local.bufs = {}
    b = bufs.get(key)
    if b is None or len(b) < n:
        b = bufs[key] = np.empty(max(n, 1 << 16), np.uint8)
    return b[:n]


def _part_size(body: int) -> int:
    """Bytes of a plane part: mode byte, body length, body."""
    return 1 + len(write_varint(body)) + body


def _penalty(mode: int, n: int) -> int:
    shift = PENALTY_SHIFT[mode]
    return 0 if shift is None else n >> shift


def _zstd_exact(body: np.ndarray, n: int, what: str) -> np.ndarray:
    """Decode a body that must be exactly one zstd frame declaring ``n`` bytes."""
    return np.frombuffer(zstdframe.decompress(body, n, what, exact=n, allow_extra=False), np.uint8)
