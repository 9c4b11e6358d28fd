"""``zstd``: a Zstandard frame (RFC 8878) around the bytes (spec/codecs/zstd.md).

The frame itself is :mod:`nncodec.entropy.zstdframe`, shared with ``planes`` and ``bloomier``.
"""

from __future__ import annotations

from ..entropy.zstdframe import compress, decompress
from .base import BytesToBytesCodec, Context, cfg_int, cfg_only


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

    def decode(self, data, ctx: Context, max_bytes: int) -> bytes:
        return decompress(data, max_bytes, f"tensor {ctx.name!r}, codec 'zstd'")
