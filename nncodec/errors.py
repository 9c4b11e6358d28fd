"""Errors raised by nncodec.

Every error nncodec raises on bad input is a subclass of :class:`NNCodecError`,
so callers can catch one class. Messages name the file, the tensor or field,
the value found and what to do about it.
"""

from __future__ import annotations

__all__ = [
    "NNCodecError",
    "FormatError",
    "CorruptError",
    "TruncatedError",
    "LimitError",
    "UnsupportedError",
    "UnsafePickleError",
    "UsageError",
    "BaseMismatchError",
]


class NNCodecError(Exception):
    """Root of every error nncodec raises on bad input or bad use."""


class FormatError(NNCodecError):
    """The input is not a file of the expected format (wrong magic, unknown version)."""


class CorruptError(NNCodecError):
    """The input is damaged: a checksum does not match or a field is out of range."""


class TruncatedError(CorruptError):
    """The input ends before the data it declares (a cut-off download or stream)."""


class LimitError(NNCodecError):
    """The input declares more than a configured limit allows (raise the limit to accept it)."""


class UnsupportedError(NNCodecError):
    """The input uses a dtype, codec or feature this version of nncodec does not know."""


class UnsafePickleError(NNCodecError):
    """A pickle inside a checkpoint names a global that nncodec refuses to load."""


class UsageError(NNCodecError, ValueError):
    """A caller passed an invalid argument (bad option, unknown format, wrong type)."""


class BaseMismatchError(NNCodecError):
    """An update was decoded against a base other than the one it was encoded against."""
