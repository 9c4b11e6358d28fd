"""The ``prune`` codec: the shared conformance checks (tests/conformance.py); its own properties are tested in test_quantize.py."""

import numpy as np

from conformance import check_codec
from nncodec.codecs.prune import Prune


def test_conformance():
    check_codec(Prune(sparsity=0.5), np.random.default_rng(0).standard_normal((6, 10)).astype(np.float32), exact=False, bad_configs=[{}, {"threshold": -1.0}, {"threshold": 1.0, "sparsity": 2.0}])
