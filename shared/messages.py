"""Typed, versioned MQTT message schemas.

Every payload is UTF-8 JSON with `"schema": "litefleet.<kind>/<n>"`. `decode_message` reads
untrusted bytes with a size cap and returns the typed message, or raises `UnknownSchema`,
`PayloadTooLarge` or `MalformedDocument` (naming the field). Unlike signed documents, messages
may carry floats (fps, latencies).

The bounds every field is held to (the contract, both directions):

    integers      0 <= n <= 2**63 - 1 (seq, versions, counters, byte counts)
    ts            finite, 0 <= ts <= TS_MAX (2100-01-01); with the receiver's clock (`now`),
                  also no more than MAX_TS_AGE_S (5 years) behind it and MAX_TS_AHEAD_S (1 day)
                  ahead of it
    temperature_c finite, -273.15 .. 1000
    other floats  finite, 0 .. MAX_MEASURE (1e12): fps, latencies, cpu, memory, disk, uptime
    device_id     [A-Za-z0-9_-]{1,64}
    other text    at most MAX_TEXT (256) characters, no control characters (ids, names,
                  phases, reasons, kinds, statuses); `detail` sentences up to MAX_FREE_TEXT
                  (4096), where tabs and newlines are allowed
    free objects  `outputs` and event `detail`: at most MAX_FREE_ITEMS (256) entries per object
                  or array, text as above, integers within int64, finite floats

`load_json` has already refused oversize, deep (> 32) or long-integer input before parsing.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union, get_args, get_origin, get_type_hints

from shared.errors import MalformedDocument, UnknownSchema
from shared.jsonload import INT64_MAX, INT64_MIN, load_json
from shared.topics import DEVICE_ID_RE

__all__ = [
    "MAX_MESSAGE_BYTES",
    "MAX_TS_AGE_S",
    "MAX_TS_AHEAD_S",
    "TS_MAX",
    "Command",
    "DeviceState",
    "Event",
    "Message",
    "ModelIdentity",
    "TelemetryRecord",
    "UpdatePhase",
    "UpdateStatus",
    "decode_message",
    "encode_message",
]

MAX_MESSAGE_BYTES = 64 * 1024
TS_MAX = 4_102_444_800.0  # 2100-01-01T00:00:00Z
MAX_TS_AGE_S = 5 * 365 * 86_400  # a record may wait this long in a device's outbox
MAX_TS_AHEAD_S = 86_400  # a device clock may run this far ahead of the receiver's
MAX_MEASURE = 1e12
MAX_TEXT = 256
MAX_FREE_TEXT = 4096
MAX_FREE_ITEMS = 256
_FLOAT_RANGES = {"ts": (0.0, TS_MAX), "temperature_c": (-273.15, 1000.0)}
_MEASURE_RANGE = (0.0, MAX_MEASURE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_FREE_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_TEXT_RULES: dict[str, tuple[int, re.Pattern[str], re.Pattern[str] | None]] = {
    "device_id": (64, _CONTROL, DEVICE_ID_RE),
    "detail": (MAX_FREE_TEXT, _FREE_CONTROL, None),  # update status: a human sentence
}
_TEXT_RULE = (MAX_TEXT, _CONTROL, None)


class UpdatePhase:
    """The update journal's phases (ARCHITECTURE.md, device state)."""

    IDLE = "idle"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    STAGED = "staged"
    ACTIVATING = "activating"
    PROBATION = "probation"
    COMMITTED = "committed"
    ROLLED_BACK = "rolled_back"
    REJECTED = "rejected"

    ALL: ClassVar[tuple[str, ...]] = (
        IDLE, DOWNLOADING, VERIFYING, STAGED, ACTIVATING, PROBATION, COMMITTED, ROLLED_BACK,
        REJECTED,
    )
    TERMINAL: ClassVar[tuple[str, ...]] = (IDLE, COMMITTED, ROLLED_BACK, REJECTED)


@dataclass(frozen=True)
class ModelIdentity:
    name: str
    version: int
    sha256: str


@dataclass(frozen=True)
class DeviceState:
    """Retained on `devices/{id}/state`; the last will sets `online` to false."""

    SCHEMA: ClassVar[str] = "litefleet.state/1"
    device_id: str
    online: bool
    ts: float
    agent_version: str = ""
    profile: str = ""
    model: ModelIdentity | None = None
    update_phase: str = UpdatePhase.IDLE
    source_status: str = ""
    fps: float = 0.0


@dataclass(frozen=True)
class TelemetryRecord:
    SCHEMA: ClassVar[str] = "litefleet.telemetry/1"
    device_id: str
    seq: int
    ts: float
    model: ModelIdentity | None = None
    frames: int = 0
    inferences: int = 0
    errors: int = 0
    dropped_frames: int = 0
    fps: float = 0.0
    latency_p50_ms: float = 0.0
    latency_p95_ms: float = 0.0
    latency_p99_ms: float = 0.0
    outputs: dict[str, Any] = field(default_factory=dict)
    cpu_percent: float = 0.0
    rss_mb: float = 0.0
    temperature_c: float | None = None
    disk_free_mb: float = 0.0
    outbox_depth: int = 0
    outbox_dropped: int = 0
    source_status: str = ""
    uptime_s: float = 0.0


@dataclass(frozen=True)
class Event:
    """Inference events over a threshold, source up/down, errors."""

    SCHEMA: ClassVar[str] = "litefleet.event/1"
    device_id: str
    seq: int
    ts: float
    kind: str  # "inference" | "source" | "error" | ...
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class UpdateStatus:
    """Progress and outcome of an update; `reason` is a `Rejected.reason` code on failure."""

    SCHEMA: ClassVar[str] = "litefleet.update/1"
    device_id: str
    seq: int
    ts: float
    rollout_id: str
    phase: str
    model: str = ""
    version: int = 0
    sha256: str = ""
    reason: str = ""
    detail: str = ""
    bytes_done: int = 0
    bytes_total: int = 0
    via: str = ""  # "delta" | "full" | "local"


@dataclass(frozen=True)
class Command:
    """A signed operator command's `signed` part (`report-now`, `rollback`, `restart-source`)."""

    SCHEMA: ClassVar[str] = "litefleet.cmd/1"
    device_id: str
    command: str
    issued: str
    expires: str
    nonce: str


Message = DeviceState | TelemetryRecord | Event | UpdateStatus | Command
_KINDS: dict[str, type[Any]] = {
    cls.SCHEMA: cls for cls in (DeviceState, TelemetryRecord, Event, UpdateStatus, Command)
}


def encode_message(message: Message) -> bytes:
    body = {"schema": message.SCHEMA, **dataclasses.asdict(message)}
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode("utf-8")


def decode_message(data: bytes, max_bytes: int = MAX_MESSAGE_BYTES, *,
                   now: float | None = None) -> Message:
    """The typed message in `data`, every field within its bound (see the module docstring).

    `now`, the receiver's clock, also holds `ts` to within MAX_TS_AGE_S behind and
    MAX_TS_AHEAD_S ahead of it.
    """
    value = load_json(data, max_bytes)
    if not isinstance(value, dict):
        raise MalformedDocument("a message is a JSON object", "$")
    schema = value.get("schema")
    cls = _KINDS.get(schema) if isinstance(schema, str) else None
    if cls is None:
        raise UnknownSchema(f"unknown message schema {str(schema)[:80]!r}")
    del value["schema"]
    result: Message = _build(cls, value, "$")
    if now is not None and not isinstance(result, Command):
        ts = result.ts
        if not now - MAX_TS_AGE_S <= ts <= now + MAX_TS_AHEAD_S:
            raise MalformedDocument(
                f"{ts} is more than {MAX_TS_AGE_S // 86_400} days behind or "
                f"{MAX_TS_AHEAD_S} s ahead of the receiver's clock", "$.ts")
    return result


# how `_build` reads a field without the general `_coerce`: the shapes the schemas use
_INT, _STR, _BOOL, _FLOAT, _OPT_FLOAT, _OPT_OBJECT, _OBJECT, _DICT, _OTHER = range(9)


@dataclass(frozen=True)
class _Plan:
    """How to build one message class, resolved once: resolving string annotations is slow
    and the schemas are fixed."""

    names: frozenset[str]
    # name, hint, required, shape, nested class, bound (a (low, high) range or a text rule)
    fields: tuple[tuple[str, Any, bool, int, Any, Any], ...]
    defaults: dict[str, Any]  # plain defaults
    factories: tuple[tuple[str, Any], ...]  # default factories
    # a frozen dataclass with no __post_init__ is filled in directly: its generated
    # __init__ (one object.__setattr__ per field) costs more than the whole check
    direct: bool


_PLANS: dict[type[Any], _Plan] = {}


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


def _bound(name: str, shape: int) -> Any:
    if shape in (_FLOAT, _OPT_FLOAT):
        return _FLOAT_RANGES.get(name, _MEASURE_RANGE)
    if shape == _STR:
        return _TEXT_RULES.get(name, _TEXT_RULE)
    return None


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
                (f.name, hints[f.name], f.default is MISSING and f.default_factory is MISSING,
                 *shapes[f.name], _bound(f.name, shapes[f.name][0]))
                for f in fields
            ),
            defaults={f.name: f.default for f in fields if f.default is not MISSING},
            factories=tuple((f.name, f.default_factory) for f in fields
                            if f.default_factory is not MISSING),
            direct=(not hasattr(cls, "__post_init__") and not hasattr(cls, "__slots__")
                    and all(f.init for f in fields)),
        )
    return plan


def _build(cls: type[Any], value: Any, path: str) -> Any:
    if not isinstance(value, dict):
        raise MalformedDocument("expected an object", path)
    plan = _plan(cls)
    kwargs: dict[str, Any] = {}
    if not plan.names.issuperset(value):
        for key in value:
            if key not in plan.names:
                raise MalformedDocument("unknown field", f"{path}.{str(key)[:80]}")
    for name, hint, required, shape, nested, bound in plan.fields:
        if name not in value:
            if required:
                raise MalformedDocument("missing", f"{path}.{name}")
            continue
        v = value[name]
        t = type(v)
        # fast paths for the shapes the schemas use; anything else goes through _coerce,
        # which refuses what these do not accept and names the field in its errors
        if shape == _INT and t is int:
            if not 0 <= v <= INT64_MAX:
                raise MalformedDocument("out of range (0 .. 2**63-1)", f"{path}.{name}")
            kwargs[name] = v
        elif shape == _STR and t is str:
            longest, unprintable, pattern = bound
            if len(v) > longest or unprintable.search(v) or (pattern and not pattern.match(v)):
                raise MalformedDocument(f"longer than {longest} characters, control characters "
                                        "or not of its pattern", f"{path}.{name}")
            kwargs[name] = v
        elif shape == _BOOL and t is bool:
            kwargs[name] = v
        elif shape in (_FLOAT, _OPT_FLOAT) and (t is float or t is int):
            f = float(v)  # an int of at most 32 digits (load_json): no overflow
            if not bound[0] <= f <= bound[1]:  # also false for NaN
                raise MalformedDocument(f"out of range ({bound[0]:g} .. {bound[1]:g})",
                                        f"{path}.{name}")
            kwargs[name] = f
        elif v is None and shape in (_OPT_FLOAT, _OPT_OBJECT):
            kwargs[name] = None
        elif shape in (_OBJECT, _OPT_OBJECT) and t is dict:
            kwargs[name] = _build(nested, v, f"{path}.{name}")
        elif shape == _DICT and t is dict:
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


def _check_free(value: Any, path: str) -> None:
    """Hold free-form JSON (`outputs`, event `detail`) to the bounds of the contract."""
    t = type(value)
    if t is dict:
        if len(value) > MAX_FREE_ITEMS:
            raise MalformedDocument(f"more than {MAX_FREE_ITEMS} entries", path)
        for key, item in value.items():
            if len(key) > MAX_TEXT or _CONTROL.search(key):
                raise MalformedDocument("a key too long or with control characters", path)
            if type(item) in _FREE_SCALARS:
                _check_scalar(item, path)
            else:
                _check_free(item, f"{path}.{key[:80]}")
    elif t is list:
        if len(value) > MAX_FREE_ITEMS:
            raise MalformedDocument(f"more than {MAX_FREE_ITEMS} items", path)
        for index, item in enumerate(value):
            if type(item) in _FREE_SCALARS:
                _check_scalar(item, path)
            else:
                _check_free(item, f"{path}[{index}]")
    else:
        _check_scalar(value, path)


def _check_scalar(value: Any, path: str) -> None:
    t = type(value)
    if t is str:
        if len(value) > MAX_FREE_TEXT or _FREE_CONTROL.search(value):
            raise MalformedDocument("text too long or with control characters", path)
    elif t is int:
        if not INT64_MIN <= value <= INT64_MAX:
            raise MalformedDocument("an integer out of the 64-bit range", path)
    elif t is float and not math.isfinite(value):
        raise MalformedDocument("a number that is not finite", path)


_FREE_SCALARS = frozenset({str, int, float, bool, type(None)})


def _coerce(hint: Any, value: Any, path: str) -> Any:
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
        return _build(hint, value, path)
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
