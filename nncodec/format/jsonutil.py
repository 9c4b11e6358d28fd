"""Strict JSON for record headers (spec/FORMAT.md section 4.2) and safetensors headers.

:func:`parse` is the one JSON reader for bytes from a file: UTF-8 only, no
duplicate keys, no NaN/Infinity, no lone surrogates (the strings must be
writable back as UTF-8), integers of at most 20 digits (every size and offset
fits in 64 bits; longer digit strings are refused before conversion) and
nesting checked before parsing, so no input can raise RecursionError or
ValueError from Python's integer digit limit.
"""

from __future__ import annotations

import json
import re

import numpy as np

from ..errors import CorruptError, UsageError, describe

#: deepest nesting any nncodec or safetensors header needs is far below this
MAX_DEPTH = 64
#: digits of 2**64 (20) plus a sign
MAX_INT_CHARS = 21

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_OPEN = np.zeros(256, np.int8)
_OPEN[[ord("["), ord("{")]] = 1
_OPEN[[ord("]"), ord("}")]] = -1


class _Refused(Exception):
    """Raised inside json.loads hooks; turned into CorruptError with the caller's context."""


def _no_dupes(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise _Refused(f"duplicate JSON key {describe(k)}")
        out[k] = v
    return out


def _no_constant(name):
    raise _Refused(f"JSON constant {name} is not allowed")


def _int(text: str) -> int:
    if len(text) > MAX_INT_CHARS:
        raise _Refused(f"a JSON integer of {len(text)} digits; sizes and offsets fit in 64 bits")
    return int(text)


def depth(raw: bytes) -> int:
    """Nesting depth of the JSON text ``raw`` (brackets outside string literals), without parsing it."""
    outside = _STRING.sub(b"", raw)
    if not outside:
        return 0
    steps = _OPEN[np.frombuffer(outside, np.uint8)]
    steps = steps[steps != 0]
    if not steps.size:
        return 0
    return int(np.cumsum(steps, dtype=np.int64).max())


def lone_surrogate(obj):
    """The first string (key or value) in ``obj`` that is not encodable as UTF-8, or None. Iterative."""
    stack = [obj]
    while stack:
        x = stack.pop()
        if type(x) is str:
            try:
                x.encode("utf-8")
            except UnicodeEncodeError:
                return x
        elif type(x) is dict:
            stack.extend(x.keys())
            stack.extend(x.values())
        elif type(x) is list:
            stack.extend(x)
    return None


def parse(data, what: str, *, max_depth: int = MAX_DEPTH, duplicates: bool = False):
    """Parse JSON bytes from a file; every refusal is a one-line CorruptError naming ``what``."""
    raw = bytes(data)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorruptError(f"{what}: header is not valid UTF-8 ({e.reason} at byte {e.start})") from None
    d = depth(raw)
    if d > max_depth:
        raise CorruptError(f"{what}: header nests {d} levels deep; at most {max_depth} are allowed")
    try:
        obj = json.loads(text, object_pairs_hook=None if duplicates else _no_dupes, parse_constant=_no_constant,
                         parse_int=_int)
    except _Refused as e:
        raise CorruptError(f"{what}: {e}") from None
    except (ValueError, RecursionError, MemoryError) as e:
        msg = str(e)[:200] if isinstance(e, ValueError) else type(e).__name__
        raise CorruptError(f"{what}: header is not valid JSON ({msg})") from None
    bad = lone_surrogate(obj)
    if bad is not None:
        raise CorruptError(
            f"{what}: the string {describe(bad)} holds a lone surrogate (an unpaired \\ud800-\\udfff escape); "
            f"it is not valid Unicode text"
        )
    return obj


def dumps(obj) -> bytes:
    """Compact UTF-8 JSON, keys in insertion order, no NaN/Infinity.

    Raises :class:`~nncodec.errors.UsageError` (a ValueError) for values JSON
    or UTF-8 cannot hold: NaN, infinities, lone surrogates.
    """
    try:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except UnicodeEncodeError as e:
        bad = e.object[max(0, e.start - 20): e.end + 20] if isinstance(e.object, str) else ""
        raise UsageError(
            f"a string holds a lone surrogate and cannot be written as UTF-8 (near {describe(bad)}); "
            f"use valid Unicode text for names and metadata"
        ) from None
    except RecursionError:
        raise UsageError("a value nested too deeply to write as JSON") from None
    except ValueError as e:
        raise UsageError(f"cannot write JSON: {str(e)[:200]}") from None


def loads(data, what: str) -> dict:
    """Parse a record header: UTF-8, a JSON object, no duplicate keys, no NaN."""
    obj = parse(data, what)
    if not isinstance(obj, dict):
        raise CorruptError(f"{what}: header must be a JSON object, found {type(obj).__name__}")
    return obj
