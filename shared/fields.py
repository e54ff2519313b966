"""A frozen dataclass built from an untrusted JSON object, each field within its bound.

`build(cls, value, path)` is how `shared.messages` reads every message schema: unknown and
missing fields are refused, and each value must have its field's type and keep the bounds the
contract states (see `shared.messages`): integers within 0 .. 2**63-1, floats finite and in
their range, text short and free of control characters, free-form objects small and clean.
Errors are `MalformedDocument` naming the field by its JSON path (`$.model.version`).

The per-class plan (field shapes and bounds) is resolved once: resolving string annotations
is slow and the schemas are fixed. Reading a telemetry record costs a few microseconds.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
from dataclasses import dataclass
from typing import Any, Union, get_args, get_origin, get_type_hints

from shared.errors import MalformedDocument
from shared.jsonload import INT64_MAX, INT64_MIN
from shared.topics import DEVICE_ID_RE

__all__ = [
    "MAX_FREE_ITEMS",
    "MAX_FREE_TEXT",
    "MAX_MEASURE",
    "MAX_TEXT",
    "TS_MAX",
    "FreeObject",
    "build",
]

TS_MAX = 4_102_444_800.0  # 2100-01-01T00:00:00Z: the latest `ts` any message may carry
MAX_MEASURE = 1e12  # fps, latencies, cpu, memory, disk, uptime: finite, 0 .. this
MAX_TEXT = 256  # ids, names, phases, reasons, kinds, statuses (characters)
MAX_FREE_TEXT = 4096  # an update's `detail` sentence; any text in free-form objects
MAX_FREE_ITEMS = 256  # entries of one object or array in `outputs` / an event's `detail`
# a free object (`outputs`, an event's `detail`): JSON values within the bounds above
FreeObject = dict[str, object]
_FLOAT_RANGES = {"ts": (0.0, TS_MAX), "temperature_c": (-273.15, 1000.0)}
_MEASURE_RANGE = (0.0, MAX_MEASURE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_FREE_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_TEXT_RULES: dict[str, tuple[int, re.Pattern[str], re.Pattern[str] | None]] = {
    "device_id": (64, _CONTROL, DEVICE_ID_RE),
    "detail": (MAX_FREE_TEXT, _FREE_CONTROL, None),  # update status: a human sentence
}
_TEXT_RULE = (MAX_TEXT, _CONTROL, None)


# how `build` reads a field without the general `_coerce`: the shapes the schemas use
# (most telemetry fields are floats: tested first)
_FLOAT, _INT, _STR, _BOOL, _OPT_FLOAT, _OPT_OBJECT, _OBJECT, _DICT, _OTHER = range(9)


@dataclass(frozen=True)
class _Plan:
    """How to build one message class, resolved once: resolving string annotations is slow
    and the schemas are fixed."""

    names: frozenset[str]
    # name, hint, required, shape, nested class, and two bounds: the range of a number, or
    # the longest length and (characters refused, pattern required) of a text
    fields: tuple[tuple[str, Any, bool, int, Any, Any, Any], ...]
    defaults: dict[str, Any]  # plain defaults
    factories: tuple[tuple[str, Any], ...]  # default factories
    # a frozen dataclass with no __post_init__ is filled in directly: its generated
    # __init__ (one object.__setattr__ per field) costs more than the whole check
    direct: bool


_PLANS: dict[type[Any], _Plan] = {}
_ABSENT = object()


def _shape(hint: Any) -> tuple[int, Any]:
    if hint is int:
        return _INT, None
    if hint is str:
        return _STR, None
    if hint is bool:
        return _BOOL, None
    if hint is float:
        return _FLOAT, None
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return _OBJECT, hint
    if get_origin(hint) is dict:
        return _DICT, None
    if get_origin(hint) in (Union, types.UnionType):
        options = [o for o in get_args(hint) if o is not type(None)]
        if len(options) == 1 and len(get_args(hint)) == 2:
            if options[0] is float:
                return _OPT_FLOAT, None
            if dataclasses.is_dataclass(options[0]) and isinstance(options[0], type):
                return _OPT_OBJECT, options[0]
    return _OTHER, None


def _bounds(name: str, shape: int) -> tuple[Any, Any]:
    if shape in (_FLOAT, _OPT_FLOAT):
        return _FLOAT_RANGES.get(name, _MEASURE_RANGE)
    if shape == _STR:
        longest, unprintable, pattern = _TEXT_RULES.get(name, _TEXT_RULE)
        return longest, (unprintable, pattern)
    if shape == _INT:
        return 0, INT64_MAX
    return None, None


def _plan(cls: type[Any]) -> _Plan:
    plan = _PLANS.get(cls)
    if plan is None:
        hints = get_type_hints(cls)
        fields = dataclasses.fields(cls)
        MISSING = dataclasses.MISSING
        shapes = {f.name: _shape(hints[f.name]) for f in fields}
        plan = _PLANS[cls] = _Plan(
            names=frozenset(f.name for f in fields),
            fields=tuple(
                (
                    f.name,
                    hints[f.name],
                    f.default is MISSING and f.default_factory is MISSING,
                    *shapes[f.name],
                    *_bounds(f.name, shapes[f.name][0]),
                )
                for f in fields
            ),
            defaults={f.name: f.default for f in fields if f.default is not MISSING},
            factories=tuple(
                (f.name, f.default_factory) for f in fields if f.default_factory is not MISSING
            ),
            direct=(
                not hasattr(cls, "__post_init__")
                and not hasattr(cls, "__slots__")
                and all(f.init for f in fields)
            ),
        )
    return plan


def build(cls: type[Any], value: Any, path: str) -> Any:  # noqa: C901 — the one generic builder of every wire dataclass; each branch is one bound
    if not isinstance(value, dict):
        raise MalformedDocument("expected an object", path)
    plan = _plan(cls)
    kwargs: dict[str, Any] = {}
    if not plan.names.issuperset(value):
        for key in value:
            if key not in plan.names:
                raise MalformedDocument("unknown field", f"{path}.{str(key)[:80]}")
    for name, hint, required, shape, nested, low, high in plan.fields:
        v = value.get(name, _ABSENT)
        if v is _ABSENT:
            if required:
                raise MalformedDocument("missing", f"{path}.{name}")
            continue
        t = type(v)
        # fast paths for the shapes the schemas use; anything else goes through _coerce,
        # which refuses what these do not accept and names the field in its errors
        if shape <= _INT and (t is float or t is int):  # a float field, or an int field
            if shape == _FLOAT:
                v = float(v)  # an int of at most 32 digits (load_json): no overflow
            elif t is not int:
                raise MalformedDocument("expected an integer", f"{path}.{name}")
            if not low <= v <= high:  # also false for NaN
                raise MalformedDocument(f"out of range ({low:g} .. {high:g})", f"{path}.{name}")
            kwargs[name] = v
        elif shape == _STR and t is str:
            unprintable, pattern = high
            if len(v) > low or unprintable.search(v) or (pattern and not pattern.match(v)):
                raise MalformedDocument(
                    f"longer than {low} characters, control characters or not of its pattern",
                    f"{path}.{name}",
                )
            kwargs[name] = v
        elif shape == _BOOL and t is bool:
            kwargs[name] = v
        elif shape == _OPT_FLOAT and (t is float or t is int):
            v = float(v)
            if not low <= v <= high:
                raise MalformedDocument(f"out of range ({low:g} .. {high:g})", f"{path}.{name}")
            kwargs[name] = v
        elif v is None and shape in (_OPT_FLOAT, _OPT_OBJECT):
            kwargs[name] = None
        elif shape in (_OBJECT, _OPT_OBJECT) and t is dict:
            kwargs[name] = build(nested, v, f"{path}.{name}")
        elif shape == _DICT and t is dict:
            if v:
                _check_free(v, f"{path}.{name}")
            kwargs[name] = v
        else:
            kwargs[name] = _coerce(hint, v, f"{path}.{name}")
    if not plan.direct:
        return cls(**kwargs)
    for name, factory in plan.factories:
        if name not in kwargs:
            kwargs[name] = factory()
    obj = object.__new__(cls)
    obj.__dict__.update(plan.defaults)
    obj.__dict__.update(kwargs)
    return obj


def _check_free(value: Any, path: str) -> None:  # noqa: C901 — a flat, fast walk over free JSON: one branch per JSON type
    """Hold free-form JSON (`outputs`, event `detail`) to the bounds of the contract. Errors
    name the field, not the place inside it (the walk is flat, for speed)."""
    pending = [value]
    pop, push = pending.pop, pending.extend
    while pending:
        node = pop()
        t = type(node)
        if t is float:
            if node - node != 0.0:  # inf - inf and nan - nan are nan
                raise MalformedDocument("a number that is not finite", path)
        elif t is int:
            if not INT64_MIN <= node <= INT64_MAX:
                raise MalformedDocument("an integer out of the 64-bit range", path)
        elif t is list:
            if len(node) > MAX_FREE_ITEMS:
                raise MalformedDocument(f"more than {MAX_FREE_ITEMS} items in an array", path)
            push(node)
        elif t is dict:
            if len(node) > MAX_FREE_ITEMS:
                raise MalformedDocument(f"more than {MAX_FREE_ITEMS} entries in an object", path)
            for key in node:
                if len(key) > MAX_TEXT or _CONTROL.search(key):
                    raise MalformedDocument("a key too long or with control characters", path)
            push(node.values())
        elif t is str and (len(node) > MAX_FREE_TEXT or _FREE_CONTROL.search(node)):
            raise MalformedDocument("text too long or with control characters", path)


def _coerce(hint: Any, value: Any, path: str) -> Any:  # noqa: C901 — one branch per type hint the contract uses
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, path)
            except MalformedDocument as e:
                errors.append(e)
        raise errors[0] if errors else MalformedDocument("unexpected value", path)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return build(hint, value, path)
    if origin is dict:
        if not isinstance(value, dict):
            raise MalformedDocument("expected an object", path)
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise MalformedDocument("expected a boolean", path)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise MalformedDocument("expected an integer", path)
        if not 0 <= value <= INT64_MAX:
            raise MalformedDocument("out of range (0 .. 2**63-1)", path)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise MalformedDocument("expected a number", path)
        if not math.isfinite(value):
            raise MalformedDocument("a number that is not finite", path)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise MalformedDocument("expected a string", path)
        return value
    if hint is Any:
        return value
    raise MalformedDocument(f"unsupported field type {hint!r}", path)
