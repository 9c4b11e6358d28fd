"""EncodeOptions: every choice the encoder makes, in one validated, frozen object.

Grouped like pcodec's ``ChunkConfig``: a rate target, the selection of lossy
tensors, the quantizer, the objective of rate allocation and the lossless
candidates. No numpy here, so building options is cheap.
"""

from __future__ import annotations

import dataclasses
import math

from ..errors import UsageError
from .presets import DEFAULT_PRESET, PRESETS

QUANTIZERS = ("scalar", "lattice-d4", "lattice-e8")
OBJECTIVES = ("relative", "mse")


@dataclasses.dataclass(frozen=True)
class RateSpec:
    """At most one target: ``bits`` (average bits per weight over the lossy tensors),
    ``snr`` (weight SNR in dB over them), ``step`` (one step for all) or ``max_error``."""

    bits: float | None = None
    snr: float | None = None
    step: float | None = None
    max_error: float | None = None

    def __post_init__(self):
        given = self.given()
        if len(given) > 1:
            raise UsageError(f"choose one of bits, snr, step, max_error (got {', '.join(given)})")
        if self.bits is not None and not (0 < self.bits <= 32):
            raise UsageError(f"bits = {self.bits}: must be in (0, 32] bits per weight")
        if self.snr is not None and not (0 < self.snr < 200):
            raise UsageError(f"snr = {self.snr}: must be in (0, 200) dB")
        for k in ("step", "max_error"):
            v = getattr(self, k)
            if v is not None and not (v > 0 and math.isfinite(v)):
                raise UsageError(f"{k} = {v}: must be a positive number")

    def given(self) -> list:
        return [k for k in ("bits", "snr", "step", "max_error") if getattr(self, k) is not None]


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
    """Tensors of at most ``small_bytes`` bytes are stored raw (no coder wins on them)."""

    small_bytes: int = 64


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

    #: the flat keywords accepted by :meth:`from_keywords` (and encode_file, the CLI)
    KEYWORDS = ("bits", "snr", "step", "max_error", "preset", "keep", "lossy", "overrides", "quantizer",
                "objective", "dither", "seed")

    def __post_init__(self):
        if self.preset is not None and self.preset not in PRESETS:
            raise UsageError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if self.rate.max_error is not None and self.quantizer.kind != "scalar":
            raise UsageError("max_error needs the scalar quantizer (a lattice bounds the error vector, not each weight)")
        if self.objective not in OBJECTIVES:
            raise UsageError(f"unknown objective {self.objective!r}; choose relative or mse")

    @classmethod
    def from_keywords(cls, **kw) -> "EncodeOptions":
        """``EncodeOptions.from_keywords(bits=4, keep=["*.bias"])``: the flat keywords of :attr:`KEYWORDS`."""
        unknown = sorted(set(kw) - set(cls.KEYWORDS))
        if unknown:
            raise UsageError(f"unknown encode option(s) {', '.join(unknown)}; the options are {', '.join(cls.KEYWORDS)}")
        g = lambda k, d=None: d if kw.get(k) is None else kw[k]  # noqa: E731
        return cls(rate=RateSpec(g("bits"), g("snr"), g("step"), g("max_error")), preset=g("preset"),
                   selection=SelectionSpec(tuple(g("keep", ())), tuple(g("lossy", ())), dict(g("overrides", {}))),
                   quantizer=QuantizerSpec(g("quantizer", "scalar"), bool(g("dither", False)), int(g("seed", 0))),
                   objective=g("objective", "relative"))

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

    def with_bits(self, bits: float) -> "EncodeOptions":
        """The same options with another bits target (the rate feedback pass)."""
        return dataclasses.replace(self, rate=RateSpec(bits=bits))
