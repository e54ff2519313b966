"""Canonical JSON: the exact bytes that signatures cover.

Sorted keys, compact separators, UTF-8, and only the types that encode one way: objects with
string keys, arrays, strings, integers, booleans and null. Floats are refused because two
implementations may print the same float differently, and a signature must not depend on that.
"""

from __future__ import annotations

import json
from typing import Any

from shared.errors import MalformedDocument

__all__ = ["canonical_json", "check_canonical_types"]


def check_canonical_types(value: Any, path: str = "$") -> None:
    """Raise `MalformedDocument` naming the first value canonical JSON cannot carry."""
    if value is None or isinstance(value, (bool, str)):
        return
    if isinstance(value, int):
        return
    if isinstance(value, float):
        raise MalformedDocument("floats are not allowed in signed documents", path)
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise MalformedDocument(f"object key {key!r} is not a string", path)
            check_canonical_types(item, f"{path}.{key}")
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_canonical_types(item, f"{path}[{index}]")
        return
    raise MalformedDocument(f"type {type(value).__name__} has no canonical JSON form", path)


def canonical_json(value: Any) -> bytes:
    """Encode `value` as canonical JSON bytes, or raise `MalformedDocument` (also for strings
    with lone surrogates and for nesting too deep to encode)."""
    try:
        check_canonical_types(value)
        text = json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
        return text.encode("utf-8")
    except UnicodeEncodeError as e:  # a lone surrogate (\ud800 in the JSON) has no UTF-8 form
        raise MalformedDocument("a string that is not valid Unicode", "$") from e
    except (RecursionError, ValueError) as e:  # nesting beyond what the encoder can walk
        raise MalformedDocument(f"cannot be encoded: {type(e).__name__}", "$") from e
