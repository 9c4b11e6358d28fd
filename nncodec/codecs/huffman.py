"""``huffman``: canonical Huffman coding of integer levels with an escape (spec/codecs/huffman.md).

The fast static coder for quantized levels: each level becomes a z-value (zigzag
for signed dtypes), z-values below 255 are Huffman symbols, and larger ones are
the escape symbol 255 plus a varint in a side stream. The Huffman block is the
one the ``planes`` codec uses (:mod:`nncodec.entropy.blockhuffman`,
spec/codecs/planes-huffman.md): 4 interleaved streams and one table lookup per symbol.
"""

from __future__ import annotations

import numpy as np

from .. import dtypes
from ..errors import CorruptError, UsageError
from ..entropy import blockhuffman as hf
from ..entropy.varint import read_varint, write_varint
from ..entropy.zvalues import to_z, z_to_values, zmax_of
from .base import ArraySpec, ArrayToBytesCodec, Context

_ERRORS = {
    1: "the escape stream ends inside a value",
    2: "an escape varint is longer than 10 bytes, over 64 bits or not minimal",
    3: "an escaped value is out of range for the dtype",
    4: "bytes are left in the escape stream after the last escape",
}


def _kernels():
    from ..kernels import symbols

    return symbols


class HuffmanLevels(ArrayToBytesCodec):
    codec_id = "huffman"

    def encode(self, arr: np.ndarray, ctx: Context) -> bytes:
        arr, name = dtypes.as_stored(arr)
        if dtypes.kind(name) not in "iu":
            raise UsageError(f"tensor {ctx.name!r}, codec 'huffman': codes integer tensors only, found {name}")
        n = arr.size
        if n == 0:
            return b""
        z = to_z(arr)
        sym = np.empty(n, np.uint8)
        esc = np.empty(n, np.uint64)
        k = _kernels().split(z, sym, esc)
        from ..kernels.ans import varints_encode

        ebuf = np.empty(10 * k + 1, np.uint8)
        elen = varints_encode(esc[:k], ebuf)
        return write_varint(elen) + ebuf[:elen].tobytes() + hf.encode_block(sym)

    def decode(self, data, spec: ArraySpec, ctx: Context) -> np.ndarray:
        what = f"tensor {ctx.name!r}, codec 'huffman'"
        if dtypes.kind(spec.dtype) not in "iu":
            raise CorruptError(f"{what}: codes integer tensors only, the stage receives {spec.dtype}")
        buf = hf.as_u8(data)
        n = spec.size
        dt = dtypes.to_numpy(spec.dtype)
        if n == 0:
            if len(buf):
                raise CorruptError(f"{what}: payload of an empty tensor must be empty, found {len(buf)} bytes")
            return np.empty(spec.shape, dt)
        elen, pos = read_varint(buf, 0, len(buf), what, "the escape stream length")
        if elen > len(buf) - pos:
            raise CorruptError(f"{what}: escape stream of {elen} bytes runs past the {len(buf) - pos} bytes left")
        esc_end = pos + elen
        sym = hf.decode_block(buf[esc_end:], n, f"{what}, Huffman block")
        z = np.empty(n, np.uint64)
        err, i = _kernels().resolve(sym, buf, pos, esc_end, np.uint64(zmax_of(spec.dtype)), z)
        if err:
            at = f" (element {i})" if i >= 0 else ""
            raise CorruptError(f"{what}: {_ERRORS[int(err)]}{at}")
        return z_to_values(z, dt).reshape(spec.shape)
