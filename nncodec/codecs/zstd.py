"""``zstd``: a Zstandard frame (RFC 8878) around the bytes (spec/codecs/zstd.md)."""

from __future__ import annotations

from ..errors import CorruptError, LimitError
from .base import BytesToBytesCodec, Context, cfg_int, cfg_only

_cctx = {}
_dctx = None


def compress(data, level: int) -> bytes:
    import zstandard

    c = _cctx.get(level)
    if c is None:
        c = _cctx[level] = zstandard.ZstdCompressor(level=level, write_content_size=True, write_checksum=False)
    return c.compress(data)


def decompress(data, max_bytes: int, what: str, exact: int | None = None) -> bytes:
    """Decompress one frame, refusing output over ``max_bytes`` or other than ``exact``."""
    import zstandard

    global _dctx
    if _dctx is None:
        _dctx = zstandard.ZstdDecompressor()
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
        raise LimitError(f"{what}: zstd frame declares {size} bytes, over the limit of {max_bytes} (raise max_expansion)")
    try:
        out = _dctx.decompress(data, max_output_size=size)
    except zstandard.ZstdError as e:
        raise CorruptError(f"{what}: zstd data is damaged ({e})") from None
    if len(out) != size:
        raise CorruptError(f"{what}: zstd frame decoded to {len(out)} bytes, declared {size}")
    return out


class Zstd(BytesToBytesCodec):
    codec_id = "zstd"

    def __init__(self, level: int = 3):
        self.level = level

    def get_config(self) -> dict:
        return {"level": self.level}

    @classmethod
    def from_config(cls, config: dict) -> "Zstd":
        cfg_only(config, cls.codec_id, {"level"})
        return cls(cfg_int(config, "level", cls.codec_id, -131072, 22))

    def encode(self, data, ctx: Context) -> bytes:
        return compress(data, self.level)

    def decode(self, data, ctx: Context) -> bytes:
        return decompress(data, ctx.max_bytes, f"tensor {ctx.name!r}, codec 'zstd'")
