"""The ``lattice`` codec: the shared conformance checks (tests/conformance.py); its own properties are tested in test_quantize.py."""

import numpy as np

from conformance import check_codec
from nncodec.codecs.lattice import Lattice


def test_conformance():
    check_codec(Lattice("E8", 0.1), np.random.default_rng(0).standard_normal((6, 10)).astype(np.float32), exact=False, bad_configs=[{"lattice": "A2", "step": 1.0}, {"lattice": "D4"}])
