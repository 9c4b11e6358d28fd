"""The ``zstd`` codec: the shared conformance checks (tests/conformance.py); its own properties are tested in test_container.py and test_hostile.py."""

import numpy as np

from conformance import check_codec
from nncodec.codecs.zstd import Zstd


def test_conformance():
    check_codec(Zstd(3), b"nncodec " * 100, bad_configs=[{"level": 23}, {"level": "3"}, {"x": 1}])
