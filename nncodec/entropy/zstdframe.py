"""One Zstandard frame (RFC 8878): the compressor and the checked decompressor.

Used by the ``zstd`` stage, the zstd plane mode of ``planes`` and the table of
``bloomier``. nncodec always writes the content size into the frame header and
never a checksum; the decoder refuses a frame that does not declare its size,
and checks that size against the caller's limit (or exact expectation) before
it allocates anything.
"""

from __future__ import annotations

import threading

from ..errors import CorruptError, LimitError

# zstandard's (de)compressor objects must not be used by two threads at once: one per thread
_local = threading.local()


def compress(data, level: int) -> bytes:
    """One frame at ``level``, with the content size and without a checksum."""
    import zstandard

    cctx = getattr(_local, "cctx", None)
    if cctx is None:
        cctx = _local.cctx = {}
    c = cctx.get(level)
    if c is None:
        c = cctx[level] = zstandard.ZstdCompressor(level=level, write_content_size=True, write_checksum=False)
    return c.compress(data)


def decompress(data, max_bytes: int, what: str, exact: int | None = None, allow_extra: bool = True) -> bytes:
    """Decompress one frame, refusing output over ``max_bytes`` or other than ``exact``.

    ``allow_extra=False`` also refuses bytes after the frame. Damaged data
    raises :class:`CorruptError`, a frame over ``max_bytes`` :class:`LimitError`;
    both name ``what``.
    """
    import zstandard

    dctx = getattr(_local, "dctx", None)
    if dctx is None:
        dctx = _local.dctx = zstandard.ZstdDecompressor()
    try:
        params = zstandard.get_frame_parameters(data)
    except zstandard.ZstdError as e:
        raise CorruptError(f"{what}: not a valid zstd frame ({e})") from None
    size = params.content_size
    if size == zstandard.CONTENTSIZE_UNKNOWN or size == zstandard.CONTENTSIZE_ERROR:
        raise CorruptError(f"{what}: zstd frame does not declare its content size (nncodec always writes it)")
    if exact is not None and size != exact:
        raise CorruptError(f"{what}: zstd frame declares {size} bytes, expected {exact}")
    if size > max_bytes:
        raise LimitError(f"{what}: zstd frame declares {size} bytes, over the limit of {max_bytes} (the size its tensor can take)")
    try:
        out = dctx.decompress(data, max_output_size=size, allow_extra_data=allow_extra)
    except zstandard.ZstdError as e:
        extra = "" if allow_extra else " or followed by other bytes"
        raise CorruptError(f"{what}: zstd data is damaged{extra} ({e})") from None
    if len(out) != size:
        raise CorruptError(f"{what}: zstd frame decoded to {len(out)} bytes, declared {size}")
    return out
