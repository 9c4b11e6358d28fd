"""Replay every input that once made a fuzz harness fail (see docs/FUZZING.md).

Files are named ``<harness>-<what>.bin``; each is fed to that harness's
``TestOneInput``, which must return normally (the harness itself accepts an
``nncodec.NNCodecError``) while allocating at most ``MAX_PEAK`` bytes (every
input here is a few kilobytes: a larger peak is a decompression bomb). Inputs
whose fix is still pending are listed in ``PENDING`` and run as strict xfails,
so the fix flips them to errors.
"""

from __future__ import annotations

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
if ROOT not in sys.path:  # the fuzz package lives at the repository root
    sys.path.insert(0, ROOT)
FILES = sorted(f for f in os.listdir(HERE) if f.endswith(".bin"))

#: file -> why it still fails
PENDING: dict = {}
MAX_PEAK = 32 << 20


def _harness(fname: str):
    from fuzz.driver import load_harness

    return load_harness(fname.split("-", 1)[0])


@pytest.mark.parametrize(
    "fname",
    [pytest.param(f, marks=pytest.mark.xfail(strict=True, reason=PENDING[f])) if f in PENDING else f for f in FILES],
)
def test_replay(fname):
    with open(os.path.join(HERE, fname), "rb") as f:
        data = f.read()
    fn = _harness(fname)
    import tracemalloc

    tracemalloc.start()
    try:
        fn(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= MAX_PEAK, f"{fname}: decoding allocated {peak} bytes"


def test_every_input_names_a_harness():
    from fuzz import HARNESSES

    for f in FILES:
        assert f.split("-", 1)[0] in HARNESSES, f
