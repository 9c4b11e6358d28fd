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
    "describe",
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


def describe(value, limit: int = 60) -> str:
    """A bounded, structure-free summary of ``value`` for an error message.

    Never calls ``repr``, ``str`` or ``hash`` on a container or an object a
    file built (an attacker-built graph can make those take unbounded time and
    memory): strings and bytes show a capped prefix and their length, integers
    their digits only when short, containers their type and length.
    """
    t = type(value)
    if value is None or t is bool:
        return repr(value)
    if t is int:
        if -(10**18) < value < 10**18:
            return repr(value)
        return f"an integer of {value.bit_length()} bits"
    if t is float:
        return repr(value)
    if t is str or t is bytes or t is bytearray:
        n = len(value)
        if n <= limit:
            return repr(value if t is not bytearray else bytes(value))
        head = value[:limit] if t is not bytearray else bytes(value[:limit])
        unit = "characters" if t is str else "bytes"
        return f"{head!r}... ({n} {unit})"
    name = getattr(t, "__name__", "object")
    if isinstance(value, (list, tuple, dict, set, frozenset)):
        return f"a {name} of {len(value)} items"
    return f"a value of type {name}"
