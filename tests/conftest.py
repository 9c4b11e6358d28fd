import os

# Tests run single-threaded and deterministic.
os.environ.setdefault("NUMBA_NUM_THREADS", "1")
