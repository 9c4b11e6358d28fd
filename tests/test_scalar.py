"""The ``scalar`` codec: the shared conformance checks (tests/conformance.py); its own properties are tested in test_quantize.py."""

import numpy as np

from conformance import check_codec
from nncodec.codecs.scalar import Scalar


def test_conformance():
    check_codec(Scalar(0.05), np.random.default_rng(0).standard_normal((6, 10)).astype(np.float32), exact=False, bad_configs=[{}, {"step": 0}, {"step": 1.0, "dither": True}])
