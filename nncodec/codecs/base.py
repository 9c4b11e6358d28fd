"""Codec stages and the context they run in.

A tensor is coded by a pipeline: any number of array->array stages, exactly
one array->bytes stage, then any number of bytes->bytes stages. Each stage is a
codec with an id and a JSON configuration holding every parameter that affects
its bytes (spec/FORMAT.md section 5; one page per codec under spec/codecs/).
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import numpy as np

from .. import dtypes
from ..errors import CorruptError
from ..format.constants import DEFAULT_LIMITS, Limits

ARRAY_TO_ARRAY = "array->array"
ARRAY_TO_BYTES = "array->bytes"
BYTES_TO_BYTES = "bytes->bytes"


@dataclasses.dataclass(frozen=True)
class ArraySpec:
    """The dtype and shape an array has at some point of a pipeline."""

    dtype: str
    shape: tuple

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * dtypes.itemsize(self.dtype)

    @classmethod
    def of(cls, arr: np.ndarray) -> "ArraySpec":
        return cls(dtypes.from_numpy(arr.dtype), tuple(int(d) for d in arr.shape))


@dataclasses.dataclass
class Context:
    """What a stage may know besides its input: the tensor's name and the limits."""

    name: str = ""
    limits: Limits = DEFAULT_LIMITS
    #: upper bound on bytes a bytes->bytes decoder may produce (set by the pipeline)
    max_bytes: int = 0

    def error(self, cls, codec_id: str, msg: str):
        return cls(f"tensor {self.name!r}, codec {codec_id!r}: {msg}")


class Codec:
    codec_id: ClassVar[str]
    kind: ClassVar[str]

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config: dict) -> "Codec":
        """Build from a stored configuration; raise CorruptError on any bad field."""
        if config:
            raise CorruptError(f"codec {cls.codec_id!r} takes no configuration, found keys {sorted(config)}")
        return cls()

    def to_json(self) -> dict:
        cfg = self.get_config()
        return {"name": self.codec_id, "configuration": cfg} if cfg else {"name": self.codec_id}

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash((self.codec_id, repr(self.get_config())))

    def __repr__(self):
        cfg = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({cfg})"


class ArrayToArrayCodec(Codec):
    kind = ARRAY_TO_ARRAY

    def resolve(self, spec: ArraySpec) -> ArraySpec:
        """The spec of the encoded array, given the spec of the input array."""
        return spec

    def encode(self, arr: np.ndarray, ctx: Context) -> np.ndarray:
        raise NotImplementedError

    def decode(self, arr: np.ndarray, spec: ArraySpec, ctx: Context) -> np.ndarray:
        """Invert encode; ``spec`` is what the output must be."""
        raise NotImplementedError


class ArrayToBytesCodec(Codec):
    kind = ARRAY_TO_BYTES

    def encode(self, arr: np.ndarray, ctx: Context) -> bytes:
        raise NotImplementedError

    def decode(self, data: memoryview, spec: ArraySpec, ctx: Context) -> np.ndarray:
        """Decode exactly ``spec``; raise CorruptError if ``data`` does not hold it."""
        raise NotImplementedError


class BytesToBytesCodec(Codec):
    kind = BYTES_TO_BYTES

    def encode(self, data: bytes, ctx: Context) -> bytes:
        raise NotImplementedError

    def decode(self, data: memoryview, ctx: Context) -> bytes:
        """Decode; never produce more than ``ctx.max_bytes`` bytes."""
        raise NotImplementedError


# ---------------------------------------------------------------- config checks


def cfg_int(config: dict, key: str, codec_id: str, lo: int, hi: int, default=None) -> int:
    v = config.get(key, default)
    if v is None or isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise CorruptError(f"codec {codec_id!r}: configuration {key!r} = {v!r}, must be an integer in [{lo}, {hi}]")
    return v


def cfg_choice(config: dict, key: str, codec_id: str, choices, default=None):
    v = config.get(key, default)
    if v not in choices:
        raise CorruptError(f"codec {codec_id!r}: configuration {key!r} = {v!r}, must be one of {list(choices)}")
    return v


def cfg_only(config: dict, codec_id: str, allowed) -> None:
    extra = set(config) - set(allowed)
    if extra:
        raise CorruptError(f"codec {codec_id!r}: unknown configuration keys {sorted(extra)}")
