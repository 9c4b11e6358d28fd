"""``tcq``: trellis-coded (dependent) quantization (spec/codecs/tcq.md).

Two scalar quantizers share the step Δ: Q0 reconstructs even multiples of Δ,
Q1 zero and odd multiples. A state machine driven by the parity of each level
picks the quantizer of the next weight (the 8-state machine of MPEG NNC, or a
4-state one), so the levels of both quantizers are coded with half the
alphabet while the reconstructions lie on the finer grid. The decoder is one
pass: ``ŵ = (2k − sgn(k)·q)·Δ`` with ``q`` the quantizer of the current state.

The encoder runs a Viterbi search over the squared error plus ``lambda`` times
the bits of the ``cabac`` coder's context model (static costs fitted to the
plain trellis rounding), and keeps the plain trellis rounding instead if that
costs less under the same model. Every weight moves by at most 2Δ (plus the
final rounding to the dtype).

Pair it with ``Cabac(states=...)`` of the same state count:
``Pipeline([Tcq(step), Cabac(8)])``; :func:`pipeline` builds that pair. The
rate model is :func:`nncodec.entropy.contexts.rate_model`, the one the coder's
contexts define; this module does not depend on the coder.
"""

from __future__ import annotations

import numpy as np

from ..entropy import contexts
from ..errors import CorruptError, UsageError
from .base import ArraySpec, ArrayToArrayCodec, Context, cfg_choice, cfg_float, cfg_only, float_arg
from .floatcodec import check_float_spec, check_levels, finish, kernel_input

STATE_CHOICES = (4, 8)
DEFAULT_STATES = 8
#: the encoder's default rate-distortion trade-off, in step² per bit
DEFAULT_LAMBDA = 0.3
#: |w| / step must stay below this so that every level fits int32
T_MAX = float(2**32 - 8)

def kernels():
    from ..kernels import tcq

    return tcq


class Tcq(ArrayToArrayCodec):
    """Trellis-coded quantization with step ``step`` (spec/codecs/tcq.md).

    ``states`` is 8 (the MPEG NNC state machine) or 4; ``lam`` (stored as
    ``lambda``) weighs bits against squared error in units of step² per bit;
    0 minimises the error alone. The decoder needs neither ``lambda`` nor any model.
    """

    codec_id = "tcq"

    def __init__(self, step: float, *, states: int = DEFAULT_STATES, lam: float = DEFAULT_LAMBDA):
        self.step = float_arg(step, "step", self.codec_id, 0.0, True)
        if isinstance(states, (bool, np.bool_)) or states not in STATE_CHOICES:
            raise UsageError(f"tcq: states must be one of {list(STATE_CHOICES)}, found {states!r:.100}")
        self.states = int(states)
        self.lam = float_arg(lam, "lam", self.codec_id, 0.0, False)

    def get_config(self) -> dict:
        return {"step": self.step, "states": self.states, "lambda": self.lam}

    @classmethod
    def from_config(cls, config: dict) -> "Tcq":
        cid = cls.codec_id
        cfg_only(config, cid, ("step", "states", "lambda"))
        step = cfg_float(config, "step", cid, 0.0, lo_open=True)
        if isinstance(config.get("states"), bool):
            raise CorruptError(f"codec {cid!r}: configuration 'states' = {config['states']!r}, must be one of "
                               f"{list(STATE_CHOICES)}")
        states = cfg_choice(config, "states", cid, STATE_CHOICES)
        lam = cfg_float(config, "lambda", cid, 0.0)
        return cls(step, states=states, lam=lam)

    def resolve(self, spec: ArraySpec) -> ArraySpec:
        check_float_spec(spec, self.codec_id)
        return ArraySpec("int32", spec.shape)

    def scaled(self, arr: np.ndarray, ctx: Context) -> np.ndarray:
        """``fl(x_i / step)`` as float64 (flat), after checking the weights."""
        arr, name, flat = kernel_input(arr, self.codec_id, ctx)
        t = np.empty(flat.shape[0], np.float64)
        bad, i = kernels().scale(flat, self.step, t)
        if bad >= 0:
            raise ctx.error(UsageError, self.codec_id, f"element {bad} is {flat[bad]!r}; quantizers need finite values")
        if i >= 0 and not abs(t[i]) <= T_MAX:
            raise ctx.error(UsageError, self.codec_id,
                            f"element {i} = {flat[i]!r} needs a level beyond int32 with step {self.step!r}; "
                            f"use a larger step")
        return t

    def encode(self, arr: np.ndarray, ctx: Context) -> np.ndarray:
        return self.quantize(arr, ctx)[0]

    def quantize(self, arr: np.ndarray, ctx: Context) -> tuple[np.ndarray, float]:
        """``(levels, cost)``: the levels :meth:`encode` returns and their total cost,
        squared error in step² plus ``lambda`` times the bits under the encoder's rate model."""
        k = kernels()
        shape = np.shape(arr)
        t = self.scaled(arr, ctx)
        n = t.shape[0]
        table, quant = contexts.state_table(self.states)
        width = contexts.row_width(shape)
        gt = contexts.DEFAULT_GT
        g = np.empty(n, np.int32)
        k.greedy(t, table, quant, g)
        if n == 0:
            return g.reshape(shape), 0.0
        cost = contexts.rate_model(g, shape, self.states, gt)
        v = np.empty(n, np.int32)
        k.viterbi(t, width, table, quant, gt, cost, self.lam, g, v)
        dv, bv = k.path_cost(t, v, width, table, quant, gt, cost, self.lam)
        dg, bg = k.path_cost(t, g, width, table, quant, gt, cost, self.lam)
        jv = dv + self.lam * bv
        jg = dg + self.lam * bg
        out = v if jv <= jg else g
        return out.reshape(shape), min(jv, jg)

    def decode(self, arr: np.ndarray, spec: ArraySpec, ctx: Context) -> np.ndarray:
        lv = check_levels(arr, self.resolve(spec), ctx, self.codec_id).reshape(-1)
        if lv.size and int(lv.min()) == -(2**31):
            i = int(np.argmin(lv))
            raise ctx.error(CorruptError, self.codec_id, f"level -2**31 at element {i} is not valid")
        table, quant = contexts.state_table(self.states)
        work = np.empty(lv.size, np.float64)
        kernels().dequantize(lv, table, quant, self.step, work)
        if not np.isfinite(work).all():
            i = int(np.flatnonzero(~np.isfinite(work))[0])
            raise ctx.error(CorruptError, self.codec_id, f"element {i} reconstructs to {work[i]!r}, not finite")
        return finish(work, spec, ctx, self.codec_id)
