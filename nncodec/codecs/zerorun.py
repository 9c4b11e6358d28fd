"""``zerorun``: zero-run lengths and nonzero values as two rANS streams (spec/codecs/zerorun.md).

For integer tensors that are mostly zero (pruned or coarsely quantized
levels): one stream codes the run of zeros before each nonzero element, the
other the nonzero values' z-values minus one (:mod:`nncodec.entropy.rans`).
"""

from __future__ import annotations

import numpy as np

from .. import dtypes
from ..entropy.rans import decode_stream, encode_stream, raise_kernel_error
from ..entropy.varint import read_varint, write_varint
from ..entropy.zvalues import check_int_dtype, to_z, zmax_of
from ..errors import CorruptError
from .ans import RansCodec
from .base import ArraySpec, Context

__all__ = ["ZeroRun"]


class ZeroRun(RansCodec):
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
            return write_varint(0)
        runs = np.diff(nz, prepend=-1) - 1
        rs = encode_stream(runs.astype(np.uint64), self.precision, self.states)
        vz = to_z(flat[nz]) - np.uint64(1)
        vs = encode_stream(vz, self.precision, self.states)
        return b"".join((write_varint(m), write_varint(len(rs)), rs, vs))

    def decode(self, data, spec: ArraySpec, ctx: Context) -> np.ndarray:
        what = self._what(ctx)
        check_int_dtype(spec.dtype, what)
        buf = np.frombuffer(data, np.uint8)
        end = buf.shape[0]
        dt = dtypes.to_numpy(spec.dtype)
        n = spec.size
        out = np.zeros(n, dt)
        if n == 0:
            if end:
                raise CorruptError(f"{what}: an empty tensor must have an empty payload, found {end} bytes")
            return out.reshape(spec.shape)
        m, pos = read_varint(buf, 0, end, what, "the nonzero count")
        if m > n:
            raise CorruptError(f"{what}: nonzero count {m} is over the element count {n}")
        if m == 0:
            if pos != end:
                raise CorruptError(f"{what}: {end - pos} bytes follow a zero nonzero count")
            return out.reshape(spec.shape)
        rlen, pos = read_varint(buf, pos, end, what, "the run stream length")
        if rlen > end - pos:
            raise CorruptError(f"{what}: run stream length {rlen} runs past the payload end (truncated)")
        runs = np.empty(m, np.int64)
        decode_stream(buf, pos, pos + rlen, runs, self.precision, self.states, 0, n - m, False,
                      what + ", run stream")
        values = np.empty(m, dt)
        decode_stream(buf, pos + rlen, end, values, self.precision, self.states, 1, zmax_of(spec.dtype),
                      dt.kind == "i", what + ", value stream")
        err = _kernels().zerorun_scatter(runs, values, out)
        if err:
            raise_kernel_error(err, what)
        return out.reshape(spec.shape)


def _kernels():
    from ..kernels import ans

    return ans
