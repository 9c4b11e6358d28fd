"""Shared entropy-coding pieces that are not codecs themselves.

* :mod:`.varint` -- the one LEB128 reader and writer;
* :mod:`.zstdframe` -- one checked Zstandard frame (compress, decompress with limits);
* :mod:`.stats` -- the one empirical-entropy estimate;
* :mod:`.zvalues` -- integer elements as unsigned z-values (zigzag);
* :mod:`.rans` -- static rANS streams (model and coder) for ``ans`` and ``zerorun``;
* :mod:`.blockhuffman` -- the block-Huffman library of ``planes`` and ``huffman``;
* :mod:`.contexts` -- the ``cabac`` context model that ``tcq`` plans with.

Each module imports its Numba kernels (:mod:`nncodec.kernels`) on first use.
"""
