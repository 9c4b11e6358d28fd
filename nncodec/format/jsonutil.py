"""Strict JSON for record headers (spec/FORMAT.md section 4.2)."""

from __future__ import annotations

import json

from ..errors import CorruptError


def _no_dupes(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise CorruptError(f"duplicate JSON key {k!r}")
        out[k] = v
    return out


def _no_constant(name):
    raise CorruptError(f"JSON constant {name} is not allowed")


def dumps(obj) -> bytes:
    """Compact UTF-8 JSON, keys in insertion order, no NaN/Infinity."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def loads(data, what: str) -> dict:
    """Parse a record header: UTF-8, a JSON object, no duplicate keys, no NaN."""
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorruptError(f"{what}: header is not valid UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        obj = json.loads(text, object_pairs_hook=_no_dupes, parse_constant=_no_constant)
    except CorruptError as e:
        raise CorruptError(f"{what}: {e}") from None
    except (ValueError, RecursionError) as e:
        raise CorruptError(f"{what}: header is not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise CorruptError(f"{what}: header must be a JSON object, found {type(obj).__name__}")
    return obj
