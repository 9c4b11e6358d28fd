"""Numba kernels behind nncodec's codecs.

Kernels are compiled on first use (``@njit(cache=True)``) and never called
directly on untrusted input: each codec module validates every argument first,
because compiled code does not check bounds.
"""
