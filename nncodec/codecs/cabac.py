"""``cabac``: context-adaptive binary arithmetic coding of int32 levels (spec/codecs/cabac.md).

Each level is binarized into a significance bin, a sign bin, up to ``gt``
greater-than bins and an Exp-Golomb remainder whose prefix is context coded.
Contexts depend on the trellis state of the level (recomputed from the levels
with the state table named by ``states``: 1 for plain scalar levels, 4 or 8 for
``tcq`` levels), on the previous two levels and on the level one row above
(rows = axis 0; a conv kernel is flattened per output channel). Each context
has two adaptive probability estimates (fast and slow, 15 bits) whose average
drives an LZMA-style binary range coder.

The payload is the element count (LEB128) followed by the coded stream; the
decoder checks the count against the tensor's shape, never reads past the end
of the payload, and requires the stream to end exactly, on the encoder's final
value: damaged data raises :class:`~nncodec.errors.CorruptError`.

The context model (trellis states, row width, the static per-context bit
costs the ``tcq`` encoder plans with) lives apart from this coder, in
:mod:`nncodec.entropy.contexts`.
"""

from __future__ import annotations

import numpy as np

from .. import dtypes
from ..errors import CorruptError, UsageError
from ..entropy.contexts import DEFAULT_GT, row_width, state_table
from ..entropy.varint import read_varint, write_varint
from .base import ArraySpec, ArrayToBytesCodec, Context, cfg_choice, cfg_int, cfg_only

STATE_CHOICES = (1, 4, 8)
DEFAULT_RATE_FAST = 5
DEFAULT_RATE_SLOW = 8
MAX_GT = 32
MAX_RATE = 10
LEVEL_MIN = -(2**31 - 1)

def kernels():
    """The compiled kernels module (imported, and so compiled, on first use)."""
    from ..kernels import cabac

    return cabac


class Cabac(ArrayToBytesCodec):
    """Context-adaptive binary arithmetic coder for int32 levels (spec/codecs/cabac.md)."""

    codec_id = "cabac"

    def __init__(self, states: int = 1, *, gt: int = DEFAULT_GT, rate_fast: int = DEFAULT_RATE_FAST,
                 rate_slow: int = DEFAULT_RATE_SLOW):
        for name, v, lo, hi in (("gt", gt, 1, MAX_GT), ("rate_fast", rate_fast, 1, MAX_RATE),
                                ("rate_slow", rate_slow, 1, MAX_RATE)):
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
                raise UsageError(f"cabac: {name} must be an integer in [{lo}, {hi}], found {v!r:.100}")
        if isinstance(states, (bool, np.bool_)) or states not in STATE_CHOICES:
            raise UsageError(f"cabac: states must be one of {list(STATE_CHOICES)}, found {states!r:.100}")
        self.states = int(states)
        self.gt = int(gt)
        self.rate_fast = int(rate_fast)
        self.rate_slow = int(rate_slow)

    def get_config(self) -> dict:
        return {"states": self.states, "gt": self.gt, "rate_fast": self.rate_fast, "rate_slow": self.rate_slow}

    @classmethod
    def from_config(cls, config: dict) -> "Cabac":
        cid = cls.codec_id
        cfg_only(config, cid, ("states", "gt", "rate_fast", "rate_slow"))
        states = cfg_choice(config, "states", cid, STATE_CHOICES)
        if isinstance(config.get("states"), bool):
            raise CorruptError(f"codec {cid!r}: configuration 'states' = {config['states']!r}, must be one of "
                               f"{list(STATE_CHOICES)}")
        return cls(
            states,
            gt=cfg_int(config, "gt", cid, 1, MAX_GT),
            rate_fast=cfg_int(config, "rate_fast", cid, 1, MAX_RATE),
            rate_slow=cfg_int(config, "rate_slow", cid, 1, MAX_RATE),
        )

    def _what(self, ctx: Context) -> str:
        return f"tensor {ctx.name!r}, codec {self.codec_id!r}"

    def encode(self, arr: np.ndarray, ctx: Context) -> bytes:
        arr, name = dtypes.as_stored(np.asarray(arr))
        if name != "int32":
            raise ctx.error(UsageError, self.codec_id, f"codes int32 levels, not {name}")
        lv = np.ascontiguousarray(arr.reshape(-1))
        if not lv.dtype.isnative:
            lv = lv.astype(np.int32)
        n = lv.shape[0]
        head = write_varint(n)
        if n == 0:
            return head
        if int(lv.min()) < LEVEL_MIN:
            i = int(np.argmin(lv))
            raise ctx.error(UsageError, self.codec_id, f"element {i} is -2**31; levels must lie in "
                                                        f"[-(2**31 - 1), 2**31 - 1]")
        k = kernels()
        table, quant = state_table(self.states)
        width = row_width(arr.shape)
        size = 4 * n + 64
        while True:
            out = np.empty(size, np.uint8)
            m = k.encode(lv, width, table, quant, self.gt, self.rate_fast, self.rate_slow, out)
            if m >= 0:
                return head + out[:m].tobytes()
            size *= 4

    def decode(self, data, spec: ArraySpec, ctx: Context) -> np.ndarray:
        what = self._what(ctx)
        if spec.dtype != "int32":
            raise CorruptError(f"{what}: decodes int32 levels, the record says {spec.dtype}")
        buf = np.frombuffer(data, np.uint8)
        end = buf.shape[0]
        n, pos = read_varint(buf, 0, end, what, "the element count")
        if n != spec.size:
            raise CorruptError(f"{what}: payload holds {n} elements, the tensor has {spec.size}")
        out = np.empty(n, np.int32)
        if n == 0:
            if pos != end:
                raise CorruptError(f"{what}: {end - pos} bytes follow an element count of 0")
            return out.reshape(spec.shape)
        k = kernels()
        table, quant = state_table(self.states)
        err = k.decode(buf, pos, end, row_width(spec.shape), table, quant, self.gt, self.rate_fast,
                       self.rate_slow, out)
        if err:
            raise CorruptError(f"{what}: {k.ERRORS.get(err, f'error {err}')}")
        return out.reshape(spec.shape)
