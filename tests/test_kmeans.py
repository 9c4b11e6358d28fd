"""The ``kmeans`` codec: the shared conformance checks (tests/conformance.py); its own properties are tested in test_quantize.py."""

import numpy as np

from conformance import check_codec
from nncodec.codecs.kmeans import KMeans


def test_conformance():
    check_codec(KMeans(8), np.random.default_rng(0).standard_normal((6, 10)).astype(np.float32), exact=False, bad_configs=[{}, {"centroids": []}, {"centroids": [1.0, 1.0]}])
