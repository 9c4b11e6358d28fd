"""The ``raw`` codec: the shared conformance checks (tests/conformance.py); its own properties are tested in test_container.py and test_golden.py."""

import numpy as np

from conformance import check_codec
from nncodec.codecs.raw import Raw


def test_conformance():
    check_codec(Raw(), np.arange(12, dtype=np.int16).reshape(3, 4), bad_configs=[{"level": 1}])
