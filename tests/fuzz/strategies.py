"""Hypothesis strategies for hostile input: JSON values, message bodies of every schema with
fields in and out of the contract's bounds, and byte-level mutations of any payload."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from typing import Any, get_type_hints

from hypothesis import strategies as st

from shared.jsonload import INT64_MAX
from shared.messages import DeviceState, Event, ModelIdentity, TelemetryRecord, UpdateStatus

SCHEMAS = (DeviceState, TelemetryRecord, Event, UpdateStatus)
NOW = time.time()  # one clock for every strategy: hypothesis needs them to stay the same
DEVICES = ("dev-a", "dev-b")

# strings a parser must survive: control characters, a lone surrogate, bidi, long runs
NASTY_TEXT = st.sampled_from(
    [
        "",
        "\x00",
        "a\x00b",
        "\x1b[31m",
        "\ud800",
        "\udfff x",
        "\u202e",
        "x" * 300,
        "committed\n",
        "dev-a",
        "é",
        "\\",
        '"',
        "[" * 40,
    ]
)
text = st.text(max_size=24) | NASTY_TEXT
integers = (
    st.integers(0, 1000)
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([-1, 2**63 - 1, 2**63, 2**64, -(2**63), -(2**63) - 1, 10**40])
)
floats = st.floats() | st.floats(0, 1e6) | st.sampled_from([1e308, -1e308, 1e-320, -0.0])
scalars = st.none() | st.booleans() | integers | floats | text
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(text, inner, max_size=6),
    max_leaves=40,
)
# JSON with at most 32 levels, integers of at most 32 digits and finite floats: what
# load_json must accept and return unchanged
sane_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=24)
)
sane_json = st.recursive(
    sane_scalars,
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=6)
    ),
    max_leaves=40,
)


def _typical(name: str, hint: Any) -> st.SearchStrategy[Any]:
    """Values inside the bounds for one field."""
    if name == "device_id":
        return st.sampled_from(DEVICES)
    if name == "ts":
        return st.floats(NOW - 86_400, NOW + 60)
    if hint is bool:
        return st.booleans()
    if hint is int:
        return st.integers(0, 50) | st.integers(0, INT64_MAX)
    if hint is float or hint == (float | None):
        return st.floats(0, 1e6)
    if hint is str:
        return st.from_regex(r"[a-z0-9_.-]{0,12}", fullmatch=True)
    if hint == (ModelIdentity | None):
        return st.fixed_dictionaries(
            {
                "name": st.just("digits"),
                "version": st.integers(0, INT64_MAX),
                "sha256": st.just("ab" * 32),
            }
        )
    return st.dictionaries(st.text(max_size=6), sane_scalars, max_size=4)  # outputs, detail


def message_body(cls: type[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A JSON object for `cls`'s schema: each field typical or hostile, some missing, some extra."""
    hints = get_type_hints(cls)
    fields = {
        f.name: _typical(f.name, hints[f.name]) | json_values for f in dataclasses.fields(cls)
    }
    body = st.fixed_dictionaries({"schema": st.just(cls.SCHEMA) | text}, optional=fields)
    extra = st.dictionaries(text, json_values, max_size=2)
    return st.tuples(body, extra).map(lambda pair: {**pair[1], **pair[0]})


def encode(body: dict[str, Any]) -> bytes:
    """As a device would send it (NaN and Infinity included, surrogates escaped)."""
    return json.dumps(body).encode("utf-8")


@st.composite
def mutated(draw: st.DrawFn, payloads: st.SearchStrategy[bytes]) -> bytes:
    """A payload with a few random edits: bytes replaced, inserted, deleted or repeated."""
    data = bytearray(draw(payloads))
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(
            st.sampled_from(["replace", "insert", "delete", "repeat", "brackets", "digits"])
        )
        at = draw(st.integers(0, len(data)))
        if kind == "replace" and data:
            data[min(at, len(data) - 1)] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif kind == "repeat":
            data[at:at] = data[at : at + draw(st.integers(1, 16))] * draw(st.integers(2, 50))
        elif kind == "brackets":
            data[at:at] = draw(st.sampled_from([b"[", b"{", b"[{"])) * draw(st.integers(1, 3000))
        else:
            data[at:at] = b"9" * draw(st.integers(1, 6000))
    return bytes(data)


def within_bounds(value: Any) -> None:
    """Assert what a parser returned keeps the contract's bounds, all the way down."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            within_bounds(getattr(value, f.name))
    elif isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, int):
        assert -(2**63) <= value <= INT64_MAX
    elif isinstance(value, float):
        assert math.isfinite(value)
    elif isinstance(value, str):
        value.encode("utf-8")  # no lone surrogate
        assert "\x00" not in value
    elif isinstance(value, dict):
        for key, item in value.items():
            within_bounds(key)
            within_bounds(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            within_bounds(item)
    else:
        raise AssertionError(f"unexpected {type(value).__name__}")
