"""EncodeOptions: every choice the encoder makes, in one validated, frozen object.

Grouped like pcodec's ``ChunkConfig``: a rate target, the selection of lossy
tensors, the quantizer, the objective of rate allocation and the lossless
candidates. No numpy here, so building options is cheap.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re

from ..errors import UsageError
from .presets import DEFAULT_PRESET, PRESETS

QUANTIZERS = ("scalar", "lattice-d4", "lattice-e8")
OBJECTIVES = ("relative", "mse")
#: mantissa bits the near-lossless mode keeps by default (bfloat16's precision: relative error <= 2**-8)
NEAR_LOSSLESS_BITS = 7
#: how close a whole-file target (bits, size, ratio) is met: |file bytes / target - 1| <= RATE_TOLERANCE
RATE_TOLERANCE = 0.005

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40}


def parse_size(value) -> int:
    """A file size in bytes: an integer, or text such as ``"12MB"`` (10^6 bytes per MB; kB, MB, GB,
    TB are powers of 1000) or ``"12MiB"`` (KiB, MiB, GiB, TiB are powers of 1024). A bare
    ``"12M"`` is refused as ambiguous."""
    if isinstance(value, bool):
        raise UsageError(f"size = {value!r}: give a number of bytes or text like 12MB or 12MiB")
    if isinstance(value, (int, float)):
        v = float(value)
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", value)
        unit = m.group(2).upper() if m else None
        if m is None or unit not in _UNITS:
            hint = " (ambiguous: write MB for 10^6 bytes or MiB for 2^20)" if m and unit in ("K", "M", "G", "T") else ""
            raise UsageError(f"size = {value!r} is not a size{hint}; examples: 12000000, 12MB, 11.5MiB, 1.2GB")
        v = float(m.group(1)) * _UNITS[unit]
    else:
        raise UsageError(f"size = {value!r}: give a number of bytes or text like 12MB or 12MiB")
    if not (math.isfinite(v) and v >= 1):
        raise UsageError(f"size = {value!r}: must be at least one byte")
    return int(round(v))


@dataclasses.dataclass(frozen=True)
class RateSpec:
    """At most one target. Whole-file targets, met within :data:`RATE_TOLERANCE` of the file's
    bytes (header, records, index and trailer included): ``bits`` (8 x file bytes / the number
    of floating-point elements of the model), ``size`` (file bytes; an int or text such as
    ``"12MB"``, see :func:`parse_size`), ``ratio`` (the tensors' bytes / file bytes).
    Others: ``snr`` (weight SNR in dB over the lossy tensors), ``step`` (one step for all)
    or ``max_error``."""

    bits: float | None = None
    snr: float | None = None
    step: float | None = None
    max_error: float | None = None
    size: int | None = None
    ratio: float | None = None

    NAMES = ("bits", "size", "ratio", "snr", "step", "max_error")

    def __post_init__(self):
        given = self.given()
        if len(given) > 1:
            raise UsageError(f"choose one of bits, size, ratio, snr, step, max_error (got {', '.join(given)})")
        if self.bits is not None and not (0 < self.bits <= 32):
            raise UsageError(f"bits = {self.bits}: must be in (0, 32] bits per parameter")
        if self.size is not None:
            object.__setattr__(self, "size", parse_size(self.size))
        if self.ratio is not None and not (isinstance(self.ratio, (int, float)) and math.isfinite(self.ratio)
                                           and self.ratio >= 1):
            raise UsageError(f"ratio = {self.ratio}: must be a number >= 1 (original bytes / file bytes)")
        if self.snr is not None and not (0 < self.snr < 200):
            raise UsageError(f"snr = {self.snr}: must be in (0, 200) dB")
        for k in ("step", "max_error"):
            v = getattr(self, k)
            if v is not None and not (v > 0 and math.isfinite(v)):
                raise UsageError(f"{k} = {v}: must be a positive number")

    def given(self) -> list:
        return [k for k in self.NAMES if getattr(self, k) is not None]

    @property
    def whole_file(self) -> bool:
        """A target on the whole file's bytes (bits, size or ratio)."""
        return self.bits is not None or self.size is not None or self.ratio is not None

    def file_bytes(self, float_elements: int, tensor_bytes: int) -> float:
        """The target in file bytes, for a model of ``float_elements`` floating-point elements
        and ``tensor_bytes`` bytes of tensor data."""
        if self.bits is not None:
            return self.bits * float_elements / 8.0
        if self.size is not None:
            return float(self.size)
        if self.ratio is not None:
            return tensor_bytes / self.ratio
        raise ValueError("not a whole-file target")


@dataclasses.dataclass(frozen=True)
class SelectionSpec:
    """Which tensors are lossy: ``keep``/``lossy`` shell globs (``keep`` wins) and
    ``overrides``: name -> "lossless", "lossy", a step, a Pipeline, or a list of Pipelines
    (candidates: the smallest payload is kept)."""

    keep: tuple = ()
    lossy: tuple = ()
    overrides: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "keep", tuple(self.keep))
        object.__setattr__(self, "lossy", tuple(self.lossy))
        object.__setattr__(self, "overrides", dict(self.overrides or {}))


@dataclasses.dataclass(frozen=True)
class QuantizerSpec:
    """``kind``: scalar, lattice-d4 or lattice-e8; subtractive ``dither`` from ``seed``."""

    kind: str = "scalar"
    dither: bool = False
    seed: int = 0

    def __post_init__(self):
        if self.kind not in QUANTIZERS:
            raise UsageError(f"unknown quantizer {self.kind!r}; choose scalar, lattice-d4 or lattice-e8")


@dataclasses.dataclass(frozen=True)
class LosslessSpec:
    """Tensors of at most ``small_bytes`` bytes are stored raw (no coder wins on them).

    ``near_lossless``: the mantissa bits kept (rounded to nearest, ties to even) in the
    float tensors that are not coded lossily (1-D and small ones) when the rate target is
    ``bits``, ``size``, ``ratio`` or ``snr``; the element-wise error is then at most
    ``2**-(near_lossless + 1)`` times the value (normal numbers; half a step of the smallest
    normal's for subnormals). ``None`` keeps them exact; a value at least the dtype's mantissa
    width keeps that dtype exact. Under ``step`` and ``max_error`` they stay exact."""

    small_bytes: int = 64
    near_lossless: int | None = NEAR_LOSSLESS_BITS

    def __post_init__(self):
        v = self.near_lossless
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 52):
            raise UsageError(f"near_lossless = {v!r}: mantissa bits to keep, an integer in [0, 52], or None (exact)")


@dataclasses.dataclass(frozen=True)
class EncodeOptions:
    """How to encode a set of tensors (see ``nncodec encode --help``).

    Lossless unless a rate target, a ``preset`` or ``overrides`` are given.
    Build one from the flat keywords of :func:`nncodec.encode_file` with
    :meth:`from_keywords`.
    """

    rate: RateSpec = RateSpec()
    preset: str | None = None
    selection: SelectionSpec = SelectionSpec()
    quantizer: QuantizerSpec = QuantizerSpec()
    objective: str = "relative"  #: relative (each tensor's error relative to its power) or mse
    lossless_spec: LosslessSpec = LosslessSpec()
    #: weights of each tensor's distortion in rate allocation: None, "auto", a .npz/.safetensors
    #: path or a dict name -> scalar or per-input-column vector (nncodec.importance)
    importance: object = None

    #: the flat keywords accepted by :meth:`from_keywords` (and encode_file, the CLI)
    KEYWORDS = ("bits", "size", "ratio", "snr", "step", "max_error", "preset", "keep", "lossy", "overrides",
                "quantizer", "objective", "dither", "seed", "near_lossless", "importance")

    def __post_init__(self):
        if self.preset is not None and self.preset not in PRESETS:
            raise UsageError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if self.rate.max_error is not None and self.quantizer.kind != "scalar":
            raise UsageError("max_error needs the scalar quantizer (a lattice bounds the error vector, not each weight)")
        if self.objective not in OBJECTIVES:
            raise UsageError(f"unknown objective {self.objective!r}; choose relative or mse")
        imp = self.importance
        if imp is not None and not (isinstance(imp, (str, os.PathLike, dict))):
            raise UsageError(f"importance = {imp!r}: give 'auto', a .npz or .safetensors file, or a dict "
                             f"name -> scalar or per-input-column vector")
        if isinstance(imp, (str, os.PathLike)) and imp != "auto" and not os.path.isfile(imp):
            raise UsageError(f"importance = {os.fspath(imp)!r}: no such file (or give 'auto')")

    @classmethod
    def from_keywords(cls, **kw) -> "EncodeOptions":
        """``EncodeOptions.from_keywords(bits=4, keep=["*.bias"])``: the flat keywords of :attr:`KEYWORDS`."""
        unknown = sorted(set(kw) - set(cls.KEYWORDS))
        if unknown:
            raise UsageError(f"unknown encode option(s) {', '.join(unknown)}; the options are {', '.join(cls.KEYWORDS)}")
        g = lambda k, d=None: d if kw.get(k) is None else kw[k]  # noqa: E731
        nl = kw["near_lossless"] if "near_lossless" in kw else NEAR_LOSSLESS_BITS
        return cls(rate=RateSpec(g("bits"), g("snr"), g("step"), g("max_error"), g("size"), g("ratio")),
                   preset=g("preset"), lossless_spec=LosslessSpec(near_lossless=nl),
                   selection=SelectionSpec(tuple(g("keep", ())), tuple(g("lossy", ())), dict(g("overrides", {}))),
                   quantizer=QuantizerSpec(g("quantizer", "scalar"), bool(g("dither", False)), int(g("seed", 0))),
                   objective=g("objective", "relative"), importance=g("importance"))

    @property
    def lossless(self) -> bool:
        """No rate target, no preset and no overrides: every tensor is coded losslessly."""
        return not self.rate.given() and self.preset is None and not self.selection.overrides

    @property
    def preset_name(self) -> str:
        return self.preset or DEFAULT_PRESET

    @property
    def target(self) -> RateSpec:
        """The rate target in force: the one given, else the preset's default bits."""
        if self.rate.given():
            return self.rate
        return RateSpec(bits=PRESETS[self.preset_name]["bits"])

    @property
    def near_lossless_bits(self) -> int | None:
        """Mantissa bits kept in the small float tensors (None: exact); see :class:`LosslessSpec`."""
        if self.lossless or self.rate.step is not None or self.rate.max_error is not None:
            return None
        return self.lossless_spec.near_lossless
