"""Fuzz harnesses for nncodec's parsers and decoders (see docs/FUZZING.md).

Each ``fuzz_*.py`` module defines ``TestOneInput(data: bytes)``, the entry
point atheris (libFuzzer) calls, and runs under atheris when executed as a
script. The same functions run under nncodec's own random-mutation driver
(:mod:`fuzz.driver`), which needs nothing beyond the test dependencies; the
short CI pass (tests/test_fuzz_short.py) and the long runs of tools/fuzz.py
use it.

The contract every harness checks: decoding hostile bytes either returns
arrays of the declared dtype and shape or raises a subclass of
``nncodec.NNCodecError``. Any other exception, a crash, a hang or an
unbounded allocation is a finding.
"""

HARNESSES = ("container", "container_crc", "codecs", "checkpoints", "pickles", "zips")
