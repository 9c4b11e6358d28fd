"""Codec stages and the context they run in.

A tensor is coded by a pipeline: any number of array->array stages, exactly
one array->bytes stage, then any number of bytes->bytes stages. Each stage is a
codec with an id and a JSON configuration holding every parameter that affects
its bytes (spec/FORMAT.md section 5; one page per codec under spec/codecs/).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import ClassVar

import numpy as np

from .. import dtypes
from ..errors import CorruptError, UsageError
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

    def _identity(self):
        """What equality compares: the configuration (a codec not yet fitted overrides this)."""
        return self.get_config()

    def __eq__(self, other):
        return type(self) is type(other) and self._identity() == other._identity()

    def __hash__(self):
        return hash((self.codec_id, repr(self._identity())))

    def __repr__(self):
        cfg = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({cfg})"


class ArrayToArrayCodec(Codec):
    kind = ARRAY_TO_ARRAY

    def resolve(self, spec: ArraySpec) -> ArraySpec:
        """The spec of the encoded array, given the spec of the input array."""
        return spec

    def fit(self, arr: np.ndarray, ctx: Context | None = None) -> "ArrayToArrayCodec":
        """This stage configured for ``arr``: a new codec, or ``self`` when nothing depends on the data.

        Data-dependent stages (``kmeans`` with ``k=``, ``prune``, ``lowrank``
        with ``energy=``) return a new codec whose configuration describes
        ``arr``; codecs are never changed after they are built.
        """
        return self

    def fit_encode(self, arr: np.ndarray, ctx: Context) -> tuple["ArrayToArrayCodec", np.ndarray]:
        """``(fitted codec, encoded array)``; stages that fit while encoding override it to do one pass."""
        codec = self.fit(arr, ctx)
        return codec, codec.encode(arr, ctx)

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

    def decode_into(self, data: memoryview, spec: ArraySpec, ctx: Context, out: np.ndarray) -> None:
        """Decode exactly ``spec`` into ``out`` (a writable C-contiguous array of that spec).
        Codecs that can write in place override it to skip the copy."""
        arr = self.decode(data, spec, ctx)
        if ArraySpec.of(arr) != spec:
            raise CorruptError(f"tensor {ctx.name!r}: codec {self.codec_id!r} produced {ArraySpec.of(arr)}, expected {spec}")
        if arr.size:  # bytes, not values: out may be an unsigned view of the dtype
            out.reshape(-1).view(np.uint8)[:] = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)


class BytesToBytesCodec(Codec):
    kind = BYTES_TO_BYTES

    def encode(self, data: bytes, ctx: Context) -> bytes:
        raise NotImplementedError

    def decode(self, data: memoryview, ctx: Context, max_bytes: int) -> bytes:
        """Decode; never produce more than ``max_bytes`` bytes (raise LimitError instead)."""
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


#: the default of a configuration field that must be present
MISSING = object()


def finite_number(v, lo: float, hi: float = math.inf, lo_open: bool = False):
    """``float(v)`` if ``v`` is a real number (not a bool), finite and in range, else None."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        return None
    try:
        f = float(v)
    except (OverflowError, TypeError, ValueError):
        return None
    ok = math.isfinite(f) and (f > lo if lo_open else f >= lo) and f <= hi
    return f if ok else None


def cfg_float(config: dict, key: str, codec_id: str, lo: float, hi: float = math.inf,
              lo_open: bool = False, default=MISSING) -> float:
    """A finite number in range from a stored configuration; CorruptError otherwise."""
    v = config.get(key, default)
    f = None if v is MISSING else finite_number(v, lo, hi, lo_open)
    if f is None:
        rng = f"{'(' if lo_open else '['}{lo!r}, {hi!r}]" if math.isfinite(hi) else f"{'>' if lo_open else '>='} {lo!r}"
        if v is MISSING:
            raise CorruptError(f"codec {codec_id!r}: configuration {key!r} is missing (a finite number {rng})")
        raise CorruptError(f"codec {codec_id!r}: configuration {key!r} = {v!r:.100}, must be a finite number {rng}")
    return f


def cfg_bool(config: dict, key: str, codec_id: str, default: bool) -> bool:
    v = config.get(key, default)
    if not isinstance(v, bool):
        raise CorruptError(f"codec {codec_id!r}: configuration {key!r} = {v!r:.100}, must be true or false")
    return v


# ---------------------------------------------------------------- argument checks (UsageError)


def float_arg(v, what: str, codec_id: str, lo: float, lo_open: bool, hi: float = math.inf) -> float:
    """A caller's finite number in range; UsageError naming the codec and argument otherwise."""
    f = finite_number(v, lo, hi, lo_open)
    if f is None:
        raise UsageError(f"{codec_id}: {what} must be a finite number {'>' if lo_open else '>='} {lo}"
                         f"{'' if math.isinf(hi) else f' and <= {hi}'}, found {v!r:.100}")
    return f


U64_MAX = 2**64 - 1


def u64_arg(v, what: str, codec_id: str) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or not 0 <= int(v) <= U64_MAX:
        raise UsageError(f"{codec_id}: {what} must be an integer in [0, 2**64 - 1], found {v!r:.100}")
    return int(v)


def int_arg(v, what: str, codec_id: str, lo: int, hi: int) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
        raise UsageError(f"{codec_id}: {what} must be an integer in [{lo}, {hi}], found {v!r:.100}")
    return int(v)
