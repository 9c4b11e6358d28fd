"""What the array->array stages on float tensors share: input checks, levels, the final rounding.

``scalar``, ``lattice``, ``kmeans``, ``tcq``, ``dct`` and ``lowrank`` take a float
tensor (one of :data:`nncodec.dtypes.FLOAT_DTYPES`). Common rules (each codec
page under spec/codecs/ states them for its stage):

* every reconstruction is computed in float64 (or float32 for the narrow
  dtypes), then rounded to the tensor's dtype by :func:`nncodec.dtypes.round_float`;
* a decoder raises :class:`CorruptError` when a reconstructed value is not
  finite in the tensor's dtype, or the levels are not what the stage produces;
* encoders raise :class:`UsageError` on values that are not finite.
"""

from __future__ import annotations

import numpy as np

from .. import dtypes
from ..dtypes import FLOAT_DTYPES, round_float
from ..errors import CorruptError, UnsupportedError, UsageError
from .base import U64_MAX, ArraySpec, Context, cfg_bool, cfg_int, u64_arg

__all__ = ["FLOAT_DTYPES", "round_float", "check_float_spec", "kernel_input", "float_input", "work_name", "work_dtype",
           "finish", "check_levels", "check_input", "bad_input", "dither_args", "check_step_fits", "dither_config", "dither_from_config"]

LEVEL_MAX = 2**31 - 1


def check_float_spec(spec: ArraySpec, codec_id: str, verb: str = "quantizes", err=UnsupportedError) -> None:
    """Refuse a spec whose dtype is not a float dtype the stages take."""
    if spec.dtype not in FLOAT_DTYPES:
        raise err(f"codec {codec_id!r} {verb} {', '.join(FLOAT_DTYPES)} tensors, not {spec.dtype}")


def kernel_input(arr: np.ndarray, codec_id: str, ctx: Context):
    """``(stored array, dtype name, flat values)``: float32 for the narrow dtypes (exact), else as stored."""
    arr, name = dtypes.as_stored(arr)
    if name not in FLOAT_DTYPES:
        raise ctx.error(UnsupportedError, codec_id, f"quantizes {', '.join(FLOAT_DTYPES)} tensors, not {name}")
    flat = arr.reshape(-1)
    if name in ("float16", "bfloat16"):
        flat = flat.astype(np.float32)
    return arr, name, flat


def float_input(arr, codec_id: str, ctx: Context):
    """``(stored array, dtype name, values as float64)`` for the transforms; refuse non-finite values."""
    arr, name = dtypes.as_stored(np.asarray(arr))
    check_float_spec(ArraySpec(name, arr.shape), codec_id, "transforms")
    x = arr.astype(np.float64)
    if x.size and not np.isfinite(x).all():
        i = int(np.flatnonzero(~np.isfinite(x.reshape(-1)))[0])
        raise ctx.error(UsageError, codec_id, f"element {i} is {x.reshape(-1)[i]!r}; transforms need finite values")
    return arr, name, x


def work_name(name: str) -> str:
    """The working dtype of the transforms' coefficients: float64 for float64, else float32."""
    return "float64" if name == "float64" else "float32"


def work_dtype(name: str):
    """The dtype kernels write reconstructions in: float64 for float64, else float32."""
    return np.float64 if name == "float64" else np.float32


def finish(work: np.ndarray, spec: ArraySpec, ctx: Context, codec_id: str) -> np.ndarray:
    """Round a reconstruction to ``spec.dtype`` and shape; CorruptError if a value is not finite there."""
    out = round_float(work, spec.dtype).reshape(spec.shape)
    with np.errstate(over="ignore", invalid="ignore"):
        bad = ~np.isfinite(out.astype(np.float64) if spec.dtype in ("float16", "bfloat16") else out)
    if bad.any():
        i = int(np.flatnonzero(bad.reshape(-1))[0])
        raise ctx.error(CorruptError, codec_id,
                        f"element {i} reconstructs to {work.reshape(-1)[i]!r}, not finite in {spec.dtype}")
    return out


def _check_spec(arr, want: ArraySpec, ctx: Context, codec_id: str, what: str) -> None:
    got = ArraySpec.of(np.asarray(arr))
    if got != want:
        raise ctx.error(CorruptError, codec_id, f"{what} {got.dtype}{list(got.shape)}, expected "
                                                f"{want.dtype}{list(want.shape)}")


def check_levels(arr: np.ndarray, want: ArraySpec, ctx: Context, codec_id: str) -> np.ndarray:
    """The levels a decoder receives, checked against ``want``, as contiguous int32."""
    _check_spec(arr, want, ctx, codec_id, "levels are")
    return np.ascontiguousarray(arr, dtype=np.int32)


def check_input(arr, want: ArraySpec, ctx: Context, codec_id: str) -> np.ndarray:
    """The coefficients a transform decoder receives, checked against ``want``, as float64."""
    _check_spec(arr, want, ctx, codec_id, "input is")
    return np.asarray(arr).astype(np.float64)


def bad_input(ctx: Context, codec_id: str, status: int, index: int, flat, step: float, extra: str = ""):
    """The UsageError for a quantizer kernel's status 1 (not finite) or 2 (level beyond int32)."""
    if status == 1:
        return ctx.error(UsageError, codec_id, f"element {index} is {flat[index]!r}; quantizers need finite values")
    return ctx.error(
        UsageError, codec_id,
        f"element {index} = {flat[index]!r} needs a level beyond int32 with step {step!r}{extra}; "
        f"use a larger step",
    )


def dither_args(dither, seed, stream, codec_id: str) -> tuple[bool, int, int]:
    """A caller's dither settings, checked; seed and stream are 0 without dither (they only matter with it)."""
    if not isinstance(dither, (bool, np.bool_)):
        raise UsageError(f"{codec_id}: dither must be True or False, found {dither!r}")
    seed = u64_arg(seed, "seed", codec_id)
    stream = u64_arg(stream, "stream", codec_id)
    return (True, seed, stream) if dither else (False, 0, 0)


def check_step_fits(codec, levels: np.ndarray, spec: ArraySpec, bound: float, ctx: Context) -> None:
    """After encoding: if ``bound`` (the largest possible |reconstruction|) overflows the dtype,
    decode ``levels`` and turn a non-finite reconstruction into a UsageError asking for a smaller step."""
    with np.errstate(over="ignore"):
        b = round_float(np.array([bound]), spec.dtype)
    if np.isfinite(b).all():
        return
    try:
        codec.decode(levels, spec, ctx)
    except CorruptError as e:
        raise ctx.error(UsageError, codec.codec_id,
                        f"step {codec.step!r} is too large for {spec.dtype}: {e}; use a smaller step") from None


def dither_config(cfg: dict, dither: bool, seed: int, stream: int) -> None:
    """Add the dither fields to a configuration (spec/dither.md); nothing without dither."""
    if dither:
        cfg["dither"] = True
        cfg["seed"] = seed
        cfg["stream"] = stream


def dither_from_config(config: dict, codec_id: str):
    """``(dither, seed, stream)`` from a stored configuration; seed and stream only with dither."""
    dither = cfg_bool(config, "dither", codec_id, False)
    if dither:
        for k in ("seed", "stream"):
            if k not in config:
                raise CorruptError(f"codec {codec_id!r}: configuration {k!r} is missing (required with dither)")
        seed = cfg_int(config, "seed", codec_id, 0, U64_MAX)
        stream = cfg_int(config, "stream", codec_id, 0, U64_MAX)
    else:
        extra = sorted({"seed", "stream"} & set(config))
        if extra:
            raise CorruptError(f"codec {codec_id!r}: configuration {extra} given without dither")
        seed = stream = 0
    return dither, seed, stream
