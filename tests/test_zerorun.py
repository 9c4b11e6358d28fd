"""The ``zerorun`` codec: the shared conformance checks (tests/conformance.py); its own properties are tested in test_ans.py."""

import numpy as np

from conformance import check_codec
from nncodec.codecs.zerorun import ZeroRun


def test_conformance():
    check_codec(ZeroRun(), np.array([0, 0, 3, 0, -1, 0, 0, 0, 7], np.int32), bad_configs=[{"precision": 9, "states": 8}, {"precision": 14, "states": 3}])
