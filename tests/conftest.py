import os

# Tests run single-threaded and deterministic.
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

try:
    from hypothesis import settings

    # The bounds-checked CI pass (NUMBA_BOUNDSCHECK=1) runs every kernel far slower:
    # it keeps the same properties with fewer generated examples.
    settings.register_profile("boundscheck", max_examples=15, deadline=None)
    settings.register_profile("nncodec", deadline=None)
    settings.load_profile(os.environ.get("NNCODEC_HYPOTHESIS_PROFILE", "nncodec"))
except ImportError:  # pragma: no cover
    pass
