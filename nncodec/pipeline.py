"""A tensor's codec pipeline: array->array*, one array->bytes, bytes->bytes*."""

from __future__ import annotations

import numpy as np

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

    def encode(self, arr: np.ndarray, ctx: Context) -> bytes:
        """The payload of ``arr``; every stage must be configured (see :meth:`fit_encode`)."""
        for st in self.array_stages:
            arr = st.encode(arr, ctx)
        return self._encode_bytes(arr, ctx)

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

    def decode(self, payload, spec: ArraySpec, ctx: Context) -> np.ndarray:
        return self.decode_until(payload, spec, ctx, len(self.array_stages))

    def decode_levels(self, payload, spec: ArraySpec, ctx: Context) -> np.ndarray:
        """Decode only as far as the array->bytes stage: e.g. the quantized levels."""
        return self.decode_until(payload, spec, ctx, 0)

    def decode_until(self, payload, spec: ArraySpec, ctx: Context, n_array_stages: int) -> np.ndarray:
        """Decode the bytes stages, the serializer and the last ``n_array_stages`` array stages."""
        specs = self.specs(spec)
        limits = ctx.limits
        biggest = max(s.nbytes for s in specs)
        stored = payload.nbytes if isinstance(payload, memoryview) else len(payload)
        if biggest > limits.min_expansion_floor and biggest > stored * limits.max_expansion:
            raise LimitError(
                f"tensor {ctx.name!r}: declares {biggest} decoded bytes from {stored} stored bytes, "
                f"an expansion over max_expansion={limits.max_expansion} (a decompression bomb?); "
                f"raise the limit if the file is trusted"
            )
        data = payload
        if self.bytes_stages:
            # bytes->bytes decoders never produce more than the largest plausible serialized size
            # ... and never more than a serialized form of the tensor can take: no serializer
            # writes more than twice the array's bytes plus a small header (codec pages)
            max_bytes = min(max(limits.min_expansion_floor, stored * limits.max_expansion),
                            2 * specs[-1].nbytes + 4096)
            for st in reversed(self.bytes_stages):
                data = memoryview(st.decode(data, ctx, max_bytes))
        arr = self.serializer.decode(data, specs[-1], ctx)
        _check(arr, specs[-1], ctx, self.serializer)
        todo = list(zip(self.array_stages, specs[:-1]))[len(self.array_stages) - n_array_stages:]
        for st, s in reversed(todo):
            arr = st.decode(arr, s, ctx)
            _check(arr, s, ctx, st)
        if n_array_stages < len(self.array_stages):
            return arr
        if spec.dtype == "bool" and arr.size and arr.view(np.uint8).max() > 1:
            raise CorruptError(f"tensor {ctx.name!r}: a bool value decoded to a byte other than 0 or 1")
        return arr


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
