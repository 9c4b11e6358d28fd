"""Candidate pipelines for one tensor, and the one place that tries them and keeps the smallest.

Decoders do not depend on these choices: the chosen pipeline is stored in the record.
"""

from __future__ import annotations

import numpy as np

from ..chunks import rows_per_chunk
from ..codecs import Context, codec_class
from ..pipeline import Pipeline
from .options import EncodeOptions, LosslessSpec
from .presets import PRESETS

#: tcq step / scalar step at about equal rate (measured on MobileNetV2 and digits, tools/bench_small.py)
TCQ_STEP_RATIO = 0.5


def step_for_scalar(scalar_step: float) -> float:
    """A tcq step giving about the rate of scalar quantization with ``scalar_step`` (measured):
    at half the scalar step the trellis spends about the same rate, for ~1 dB more SNR."""
    return scalar_step * TCQ_STEP_RATIO


def smallest(arr, candidates, ctx: Context, *, levels=None, threads: int = 1) -> tuple:
    """``(pipeline, payload)`` of the candidate with the smallest payload; ties go to the earlier one.

    Candidates that share their array->array stage objects (the same quantizer) quantize
    once. ``levels``, if given, is what the candidates' (shared) array stages make of
    ``arr``, computed by the caller (e.g. stochastic rounding, which decodes as ``scalar``).
    A serializer input of more than one piece (:func:`nncodec.chunks.rows_per_chunk`) is
    coded as a chunked record: the payload is then a :class:`nncodec.chunks.Pieces`.
    """
    made: dict = {}
    best = None
    for p in candidates:
        key = tuple(map(id, p.array_stages))
        x = made.get(key)
        if x is None:
            x = levels
            if x is None:
                x = arr
                for st in p.array_stages:
                    x = st.encode(x, ctx)
            made[key] = x
        rows = rows_per_chunk(x.shape) if p.chunkable else None
        if rows is not None:
            data = p.encode_levels_pieces(x, ctx, rows, threads)
        else:
            data = p.serializer.encode(x, ctx)
            for st in p.bytes_stages:
                data = st.encode(data, ctx)
        if best is None or len(data) < len(best[1]):
            best = (p, data)
    return best


def lossless_candidates(dtype: str, nbytes: int, opts: EncodeOptions | None = None, shape=None) -> list:
    """raw, then planes (bit planes per byte, Huffman or zstd per plane) unless the tensor is tiny;
    planes alone for a tensor of several pieces (``shape`` given; planes stores a piece no
    plane coding shrinks as its raw bytes behind one byte, so a raw copy is never needed)."""
    small = (opts.lossless_spec if opts is not None else LosslessSpec()).small_bytes
    raw = codec_class("raw")()
    if nbytes <= small:
        return [Pipeline([raw])]
    planes = Pipeline([codec_class("planes").for_dtype(dtype)])
    if shape is not None and rows_per_chunk(tuple(shape)) is not None:
        return [planes]
    return [Pipeline([raw]), planes]


def uses_trellis(opts: EncodeOptions) -> bool:
    """``small`` codes with trellis-coded quantization + the context-adaptive coder, unless
    the user asked for what it cannot give: a per-weight error bound, dither, a lattice."""
    return (PRESETS[opts.preset_name]["trellis"] and opts.quantizer.kind == "scalar" and not opts.quantizer.dither
            and opts.rate.max_error is None and opts.rate.step is None)


def quantizer_for(name: str, step: float, opts: EncodeOptions):
    """The quantizer stage of a lossy tensor (dither streams are per tensor name)."""
    from ..dither import stream_for_name

    q = opts.quantizer
    kw = {"dither": q.dither}
    if q.dither:
        kw.update(seed=q.seed, stream=stream_for_name(name))
    if q.kind == "scalar":
        return codec_class("scalar")(step, **kw)
    return codec_class("lattice")({"lattice-d4": "D4", "lattice-e8": "E8"}[q.kind], step, **kw)


def lossy_candidates(name: str, step: float, opts: EncodeOptions) -> list:
    """Pipelines for a lossy tensor at scalar step ``step``: trellis + cabac for ``small``,
    else the quantizer followed by each of the preset's entropy coders."""
    if uses_trellis(opts):
        tcq = codec_class("tcq")(step_for_scalar(step))
        return [Pipeline([tcq, codec_class("cabac")(tcq.states)])]
    q = quantizer_for(name, step, opts)
    return [Pipeline([q, codec_class(cid)()]) for cid in PRESETS[opts.preset_name]["coders"]]


def encode_lossless(arr: np.ndarray, ctx: Context, opts: EncodeOptions | None = None) -> tuple:
    """``(pipeline, payload)``: the smallest lossless candidate for a stored-dtype array."""
    from .. import dtypes

    arr, dt = dtypes.as_stored(arr)
    return smallest(arr, lossless_candidates(dt, arr.nbytes, opts, arr.shape), ctx)
