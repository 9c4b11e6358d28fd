"""The ``dct`` codec: the shared conformance checks (tests/conformance.py); its own properties are tested in test_transform.py."""

import numpy as np

from conformance import check_codec
from nncodec.codecs.dct import DCT


def test_conformance():
    check_codec(DCT((4, 4)), np.random.default_rng(0).standard_normal((6, 10)).astype(np.float32), exact=False, bad_configs=[{}, {"block": [0, 4], "scan": "natural"}, {"block": None, "scan": "diag"}])
