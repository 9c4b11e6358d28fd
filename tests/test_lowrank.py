"""The ``lowrank`` codec: the shared conformance checks (tests/conformance.py); its own properties are tested in test_transform.py."""

import numpy as np

from conformance import check_codec
from nncodec.codecs.lowrank import LowRank


def test_conformance():
    check_codec(LowRank(energy=0.9), np.random.default_rng(0).standard_normal((6, 10)).astype(np.float32), exact=False, bad_configs=[{}, {"rank": 2}, {"rank": -1, "rows": 1}])
