"""Untrusted JSON bytes in, Python values out, with every bound checked before parsing.

`load_json` refuses, before the JSON parser runs:

    size      more than `max_bytes` bytes                          PayloadTooLarge
    depth     arrays/objects nested deeper than `max_depth`        MalformedDocument
    integers  a run of more than `MAX_INT_DIGITS` digits           MalformedDocument

and, while parsing, the non-standard constants `NaN`, `Infinity` and `-Infinity`, text that is
not UTF-8, and anything else that is not JSON (all `MalformedDocument`). Nothing else leaves it:
a parser that hits a bound it did not foresee (recursion, a huge integer) is turned into
`MalformedDocument` too.

The scans cost little: a message with at most `max_depth` opening brackets and no long run of
digits (every telemetry record) is checked with one `bytes.translate`, one `count` and one
substring search (about 1 us for a 500-byte record). Only a
message with more brackets has its strings blanked out and its depth computed exactly; only one
with a long digit run is parsed with an integer hook that refuses long integers (digits inside
strings, such as hashes, are harmless).

Floats may still overflow to infinity (`1e400`): the typed parsers check their ranges (message
floats must be finite; signed documents carry no floats at all).
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

from shared.errors import MalformedDocument, PayloadTooLarge

__all__ = [
    "DEFAULT_MAX_DOCUMENT_BYTES",
    "INT64_MAX",
    "INT64_MIN",
    "MAX_INT_DIGITS",
    "MAX_JSON_DEPTH",
    "json_depth",
    "load_json",
]

DEFAULT_MAX_DOCUMENT_BYTES = 256 * 1024
MAX_JSON_DEPTH = 32  # nested arrays/objects; the deepest document of the contract needs ~10
MAX_INT_DIGITS = 32  # digits of one JSON integer; int64 needs 19, the typed parsers check range
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)

# a JSON string, escapes included (the unrolled form: no backtracking on long strings)
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}
# one pass that keeps what the cheap checks look at: digits become "0", opening brackets "[",
# anything else " "; then a long run of digits is a substring search, and brackets a count
_SKETCH = bytes(48 if 48 <= b <= 57 else 91 if b in b"[{" else 32 for b in range(256))
_LONG_RUN = b"0" * (MAX_INT_DIGITS + 1)


def _refuse_constant(name: str) -> Any:
    raise MalformedDocument(f"{name} is not a JSON number", "$")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise MalformedDocument(f"an integer of {len(text)} digits (at most {MAX_INT_DIGITS})", "$")
    return int(text)


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)
_BOUNDED_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_int=_bounded_int)


def json_depth(data: bytes) -> int:
    """How deeply arrays and objects nest in `data` (brackets inside strings do not count)."""
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def load_json(
    data: bytes, max_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES, max_depth: int = MAX_JSON_DEPTH
) -> Any:
    """Decode untrusted JSON bytes, refusing oversize, deep or long-integer input first."""
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"{len(data)} bytes exceeds the {max_bytes}-byte cap")
    sketch = data.translate(_SKETCH)
    if sketch.count(b"[") > max_depth and json_depth(data) > max_depth:
        raise MalformedDocument(f"nested deeper than {max_depth} levels", "$")
    decoder = _BOUNDED_DECODER if _LONG_RUN in sketch else _DECODER
    try:
        return decoder.decode(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MalformedDocument(f"not UTF-8 JSON: {e}", "$") from e
    except (RecursionError, ValueError, OverflowError) as e:
        # not expected after the scans above; a parser limit is still the input's fault
        raise MalformedDocument(f"not parseable within bounds: {type(e).__name__}", "$") from e
