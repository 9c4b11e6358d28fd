"""Plain-NumPy reference implementations (oracles) of nncodec's kernels, for the tests only.

Each module re-implements, as directly as the spec pages read, what a compiled
kernel computes; the tests compare the kernels against them bit for bit:
``blockhuffman`` (spec/codecs/planes-huffman.md, planes.md), ``ans`` (ans.md,
zerorun.md), ``cabac``, ``tcq``, ``quant`` (scalar, lattice, kmeans, prune) and
``bloomier``. They are not installed with the package.
"""
