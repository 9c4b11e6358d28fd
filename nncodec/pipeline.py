"""A tensor's codec pipeline: array->array*, one array->bytes, bytes->bytes*."""

from __future__ import annotations

import numpy as np

from . import dtypes
from . import chunks as ch
from .codecs import ARRAY_TO_ARRAY, ARRAY_TO_BYTES, BYTES_TO_BYTES, ArraySpec, Codec, Context, get_codec
from .errors import CorruptError, LimitError, UsageError

_ORDER = {ARRAY_TO_ARRAY: 0, ARRAY_TO_BYTES: 1, BYTES_TO_BYTES: 2}


class Pipeline:
    """A tensor's stages in order; built wrongly by a caller it raises :class:`UsageError`.

    A pipeline read from a file goes through :meth:`from_json`, which raises
    :class:`CorruptError` instead: there a bad stage list is the file's fault.
    """

    def __init__(self, stages):
        self.stages = _checked(tuple(stages), UsageError)
        stages = self.stages
        kinds = [s.kind for s in stages]
        i = kinds.index(ARRAY_TO_BYTES)
        self.array_stages = stages[:i]
        self.serializer = stages[i]
        self.bytes_stages = stages[i + 1:]

    @classmethod
    def from_json(cls, obj, max_stages: int = 64) -> "Pipeline":
        if not isinstance(obj, list) or not obj:
            raise CorruptError(f"pipeline must be a non-empty list of stages, found {obj!r:.200}")
        if len(obj) > max_stages:
            raise CorruptError(f"pipeline has {len(obj)} stages, more than {max_stages}")
        return cls(_checked(tuple(get_codec(o) for o in obj), CorruptError))

    def to_json(self) -> list:
        return [s.to_json() for s in self.stages]

    def describe(self) -> str:
        return "|".join(s.codec_id for s in self.stages)

    def __eq__(self, other):
        return isinstance(other, Pipeline) and self.stages == other.stages

    def __repr__(self):
        return f"Pipeline({list(self.stages)!r})"

    def specs(self, spec: ArraySpec) -> list:
        """The array spec before each array->array stage and before the serializer."""
        out = [spec]
        for st in self.array_stages:
            spec = st.resolve(spec)
            out.append(spec)
        return out

    @property
    def chunkable(self) -> bool:
        """Whether the serializer's input may be coded as independent pieces (chunks.py)."""
        return self.serializer.codec_id in ch.CHUNKABLE

    def encode(self, arr: np.ndarray, ctx: Context) -> bytes:
        """The payload of ``arr``; every stage must be configured (see :meth:`fit_encode`)."""
        for st in self.array_stages:
            arr = st.encode(arr, ctx)
        return self._encode_bytes(arr, ctx)

    def encode_pieces(self, arr: np.ndarray, ctx: Context, rows: int, threads: int = 1) -> ch.Pieces:
        """The payload of ``arr`` as a chunked record: the array stages run on the whole array,
        then the serializer's input is coded in pieces of ``rows`` rows."""
        if not self.chunkable:
            raise UsageError(f"codec {self.serializer.codec_id!r} codes whole tensors, not pieces")
        for st in self.array_stages:
            arr = st.encode(arr, ctx)
        return self.encode_levels_pieces(arr, ctx, rows, threads)

    def encode_levels_pieces(self, x: np.ndarray, ctx: Context, rows: int, threads: int = 1) -> ch.Pieces:
        """Code ``x`` (what the serializer receives) in pieces of ``rows`` rows."""
        if x.ndim == 0 or not 1 <= rows < x.shape[0]:
            raise UsageError(f"tensor {ctx.name!r}: pieces of {rows} rows need an array of more rows, "
                             f"not shape {list(x.shape)}")
        jobs = [lambda a=a, b=b: self._encode_bytes(x[a:b], ctx) for a, b in ch.piece_bounds(x.shape[0], rows)]
        return ch.Pieces(rows, tuple(ch.run_all(jobs, threads)))

    def fit_encode(self, arr: np.ndarray, ctx: Context) -> tuple["Pipeline", bytes]:
        """``(fitted pipeline, payload)``: data-dependent stages (``kmeans`` with ``k``, ``prune``,
        ``lowrank`` with ``energy``) are fitted to the array each receives, in one pass; the
        fitted pipeline is the one to store with the payload. ``self`` is not changed."""
        fitted = []
        for st in self.array_stages:
            st, arr = st.fit_encode(arr, ctx)
            fitted.append(st)
        data = self._encode_bytes(arr, ctx)
        same = all(a is b for a, b in zip(fitted, self.array_stages))
        return (self if same else Pipeline([*fitted, self.serializer, *self.bytes_stages])), data

    def _encode_bytes(self, arr: np.ndarray, ctx: Context) -> bytes:
        data = self.serializer.encode(arr, ctx)
        for st in self.bytes_stages:
            data = st.encode(data, ctx)
        return data

    def decode(self, payload, spec: ArraySpec, ctx: Context, *, chunks=None, threads: int = 1,
               out: np.ndarray | None = None) -> np.ndarray:
        """Decode a record's payload to the tensor ``spec`` describes. ``chunks`` is the record
        header's chunk table (None for a 1.0-style record); ``threads`` decode pieces in
        parallel; ``out``, if given, is a writable C-contiguous array of the tensor's shape and
        stored dtype the result is written into (and returned)."""
        return self.decode_until(payload, spec, ctx, len(self.array_stages), chunks=chunks, threads=threads, out=out)

    def decode_coded(self, payload, spec: ArraySpec, ctx: Context, threads: int = 1) -> np.ndarray:
        """Decode what :meth:`encode` or :meth:`encode_pieces` returned (bytes or Pieces)."""
        if isinstance(payload, ch.Pieces):
            return self.decode(memoryview(b"".join(payload.parts)), spec, ctx, chunks=payload.table(), threads=threads)
        return self.decode(memoryview(payload), spec, ctx, threads=threads)

    def decode_levels(self, payload, spec: ArraySpec, ctx: Context, *, chunks=None, threads: int = 1) -> np.ndarray:
        """Decode only as far as the array->bytes stage: e.g. the quantized levels."""
        return self.decode_until(payload, spec, ctx, 0, chunks=chunks, threads=threads)

    def decode_until(self, payload, spec: ArraySpec, ctx: Context, n_array_stages: int, *, chunks=None,
                     threads: int = 1, out: np.ndarray | None = None) -> np.ndarray:
        """Decode the bytes stages, the serializer and the last ``n_array_stages`` array stages."""
        specs = self.specs(spec)
        check_tensor_bytes(specs, ctx)
        s = specs[-1]
        target = None
        if out is not None and not self.array_stages:
            _check_out(out, s, ctx)
            target = out
        if chunks is None:
            arr = self.decode_piece(payload, s, ctx, target)
        else:
            stored = payload.nbytes if isinstance(payload, memoryview) else len(payload)
            if not self.chunkable:
                raise CorruptError(f"tensor {ctx.name!r}: a chunk table on codec {self.serializer.codec_id!r}, "
                                   f"which codes whole tensors")
            table = ch.parse_table(chunks, s.shape, stored, f"tensor {ctx.name!r}")
            arr = target if target is not None else np.empty(s.shape, dtypes.to_numpy(s.dtype))
            rest = s.shape[1:]

            def piece(i):
                a, b = table.bounds[i]
                self.decode_piece(table.piece(payload, i), ArraySpec(s.dtype, (b - a, *rest)), ctx, arr[a:b])

            ch.run_all([lambda i=i: piece(i) for i in range(len(table.bounds))], threads)
        todo = list(zip(self.array_stages, specs[:-1]))[len(self.array_stages) - n_array_stages:]
        for st, sp in reversed(todo):
            arr = st.decode(arr, sp, ctx)
            _check(arr, sp, ctx, st)
        if out is not None and target is None and n_array_stages == len(self.array_stages):
            _check_out(out, spec, ctx)
            if arr.size:
                out.reshape(-1).view(np.uint8)[:] = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
            arr = out
        if n_array_stages < len(self.array_stages):
            return arr
        if spec.dtype == "bool" and arr.size and arr.view(np.uint8).max() > 1:
            raise CorruptError(f"tensor {ctx.name!r}: a bool value decoded to a byte other than 0 or 1")
        return arr

    def decode_piece(self, data, s: ArraySpec, ctx: Context, out: np.ndarray | None = None) -> np.ndarray:
        """The bytes stages and the serializer on one piece (or a whole 1.0-style payload)
        decoding to ``s``; into ``out`` (a C-contiguous array of spec ``s``) when given."""
        if self.bytes_stages:
            # bytes->bytes decoders never produce more than a serialized form of the array
            # can take: no serializer writes more than twice the array's bytes plus a small
            # header (codec pages)
            max_bytes = 2 * s.nbytes + 4096
            for st in reversed(self.bytes_stages):
                data = memoryview(st.decode(data, ctx, max_bytes))
        if out is None:
            arr = self.serializer.decode(data, s, ctx)
            _check(arr, s, ctx, self.serializer)
            return arr
        self.serializer.decode_into(data, s, ctx, out)
        return out


def check_tensor_bytes(specs, ctx: Context) -> None:
    """Refuse, before anything is allocated, a tensor whose decoded form (or any
    intermediate array of its pipeline) is over ``limits.max_tensor_bytes``."""
    biggest = max(s.nbytes for s in specs)
    cap = ctx.limits.max_tensor_bytes
    if biggest > cap:
        raise LimitError(
            f"tensor {ctx.name!r}: declares {biggest} decoded bytes, over max_tensor_bytes={cap} "
            f"(a decompression bomb, or a trusted giant: raise it with --max-tensor-size or "
            f"Limits(max_tensor_bytes=...))"
        )


def _check_out(out: np.ndarray, spec: ArraySpec, ctx: Context) -> None:
    """``out`` must be writable, C-contiguous, of ``spec``'s shape and item size (its dtype may be
    the stored dtype or an unsigned word of the same width: the bytes are what is written)."""
    if (not isinstance(out, np.ndarray) or tuple(out.shape) != tuple(spec.shape) or not out.flags.c_contiguous
            or not out.flags.writeable or out.dtype.itemsize != dtypes.itemsize(spec.dtype)):
        raise UsageError(f"tensor {ctx.name!r}: out must be a writable C-contiguous array of shape "
                         f"{list(spec.shape)} and {dtypes.itemsize(spec.dtype)}-byte items")


def _check(arr, spec: ArraySpec, ctx: Context, st: Codec) -> None:
    if ArraySpec.of(arr) != spec:
        raise CorruptError(
            f"tensor {ctx.name!r}: codec {st.codec_id!r} produced {ArraySpec.of(arr)}, expected {spec}"
        )


def _checked(stages: tuple, error) -> tuple:
    """The stages if they are codecs in a valid order (array->array*, one array->bytes,
    bytes->bytes*); else ``error`` (UsageError for a caller, CorruptError for a file)."""
    for s in stages:
        if not isinstance(s, Codec):
            raise error(f"pipeline stage {s!r:.100} is not a codec (build stages with their classes or get_codec)")
    kinds = [s.kind for s in stages]
    if kinds.count(ARRAY_TO_BYTES) != 1 or kinds != sorted(kinds, key=_ORDER.__getitem__):
        raise error(
            f"pipeline {[s.codec_id for s in stages]} must be array->array stages, exactly one "
            f"array->bytes stage, then bytes->bytes stages"
        )
    return stages
