"""The encoding policy: which pipeline each tensor gets, and its payload.

One options object (:class:`EncodeOptions`), one entry point: :func:`plan`
(or :func:`iter_plan`, its streaming form) maps tensors to the chosen pipeline
*and the payload already coded*. Choosing needs coding -- "try the candidates,
keep the smallest" (:func:`smallest`, the only copy) and the rate feedback pass
of a ``bits`` target both measure real payloads -- so returning bare pipelines
would make the writer code every tensor a second time. The path of a tensor is
therefore: options -> plan (rate allocation, candidates, smallest) -> Writer.

Modules: ``options`` (EncodeOptions, no numpy), ``presets`` (PRESETS and the
tables rendered from it, no numpy), ``rate`` (rate allocation), ``candidates``
(the candidate pipelines: lossless, lossy, trellis; :func:`smallest`), ``planner``
(which tensors are lossy; :func:`plan`).
"""

from __future__ import annotations

from .._lazy import lazy_getattr

from .options import EncodeOptions, LosslessSpec, QuantizerSpec, RateSpec, SelectionSpec  # noqa: F401
from .presets import PRESETS  # noqa: F401

_LAZY = {
    "plan": "planner", "iter_plan": "planner", "Coded": "planner", "is_lossy": "planner", "MIN_LOSSY_ELEMENTS": "planner",
    "LOSSY_DTYPES": "planner", "smallest": "candidates", "lossless_candidates": "candidates",
    "lossy_candidates": "candidates", "encode_lossless": "candidates", "step_for_scalar": "candidates",
    "TCQ_STEP_RATIO": "candidates", "uses_trellis": "candidates", "quantizer_for": "candidates",
    "allocate": "rate", "rd_curve": "rate",
}
__all__ = sorted(set(_LAZY) | {"EncodeOptions", "RateSpec", "SelectionSpec", "QuantizerSpec", "LosslessSpec",
                                "PRESETS"})


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
