"""Typed, versioned MQTT message schemas.

Every payload is UTF-8 JSON with `"schema": "litefleet.<kind>/<n>"`. `decode_message` reads
untrusted bytes with a size cap and returns the typed message, or raises `UnknownSchema`,
`PayloadTooLarge` or `MalformedDocument` (naming the field). Receivers log and drop those.
Unlike signed documents, messages may carry floats (fps, latencies).
"""

from __future__ import annotations

import dataclasses
import json
import types
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union, get_args, get_origin, get_type_hints

from shared.documents import load_json
from shared.errors import MalformedDocument, UnknownSchema

__all__ = [
    "MAX_MESSAGE_BYTES",
    "CaptureRequest",
    "Command",
    "DeviceState",
    "DriftSummary",
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
class DriftSummary:
    """Drift of the live inputs and outputs from the release's reference profile: the
    largest per-feature population stability index (`score`), which feature it is, the
    release's threshold and how many sampled frames the rolling window holds."""

    score: float
    feature: str
    threshold: float
    samples: int


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
    drift: DriftSummary | None = None  # None: no reference profile, or too few frames yet


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
    """A signed operator command's `signed` part (`report-now`, `rollback`, `restart-source`,
    `capture`, `upload`). `args` carries a command's parameters (absent when it has none)."""

    SCHEMA: ClassVar[str] = "litefleet.cmd/1"
    device_id: str
    command: str
    issued: str
    expires: str
    nonce: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CaptureRequest:
    """On `devices/{id}/capture`: the device asks for upload URLs for these sample files
    (name -> bytes). The cloud answers with a signed `upload` command on `cmd`."""

    SCHEMA: ClassVar[str] = "litefleet.capture/1"
    device_id: str
    ts: float
    files: dict[str, Any] = field(default_factory=dict)


Message = DeviceState | TelemetryRecord | Event | UpdateStatus | Command | CaptureRequest
_KINDS: dict[str, type[Any]] = {
    cls.SCHEMA: cls
    for cls in (DeviceState, TelemetryRecord, Event, UpdateStatus, Command, CaptureRequest)
}


def encode_message(message: Message) -> bytes:
    body = {"schema": message.SCHEMA, **dataclasses.asdict(message)}
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode("utf-8")


def decode_message(data: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> Message:
    value = load_json(data, max_bytes)
    if not isinstance(value, dict):
        raise MalformedDocument("a message is a JSON object", "$")
    schema = value.get("schema")
    cls = _KINDS.get(schema) if isinstance(schema, str) else None
    if cls is None:
        raise UnknownSchema(f"unknown message schema {schema!r}")
    del value["schema"]
    result: Message = _build(cls, value, "$")
    return result


# how `_build` reads a field without the general `_coerce`: the shapes the schemas use
_EXACT, _FLOAT, _OPT_FLOAT, _OPT_OBJECT, _OBJECT, _DICT, _OTHER = range(7)


@dataclass(frozen=True)
class _Plan:
    """How to build one message class, resolved once: resolving string annotations is slow
    and the schemas are fixed."""

    names: frozenset[str]
    fields: tuple[tuple[str, Any, bool, int, Any], ...]  # name, hint, required, shape, nested
    defaults: dict[str, Any]  # plain defaults
    factories: tuple[tuple[str, Any], ...]  # default factories
    # a frozen dataclass with no __post_init__ is filled in directly: its generated
    # __init__ (one object.__setattr__ per field) costs more than the whole check
    direct: bool


_PLANS: dict[type[Any], _Plan] = {}


def _shape(hint: Any) -> tuple[int, Any]:
    if hint in (str, int, bool):
        return _EXACT, None
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


def _plan(cls: type[Any]) -> _Plan:
    plan = _PLANS.get(cls)
    if plan is None:
        hints = get_type_hints(cls)
        fields = dataclasses.fields(cls)
        MISSING = dataclasses.MISSING
        plan = _PLANS[cls] = _Plan(
            names=frozenset(f.name for f in fields),
            fields=tuple(
                (f.name, hints[f.name], f.default is MISSING and f.default_factory is MISSING,
                 *_shape(hints[f.name]))
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
                raise MalformedDocument("unknown field", f"{path}.{key}")
    for name, hint, required, shape, nested in plan.fields:
        if name not in value:
            if required:
                raise MalformedDocument("missing", f"{path}.{name}")
            continue
        v = value[name]
        t = type(v)
        # fast paths for the shapes the schemas use; anything else goes through _coerce,
        # which accepts the same values and names the field in its errors
        if shape == _EXACT and t is hint:
            kwargs[name] = v
        elif shape in (_FLOAT, _OPT_FLOAT) and (t is float or t is int):
            kwargs[name] = float(v)
        elif v is None and shape in (_OPT_FLOAT, _OPT_OBJECT):
            kwargs[name] = None
        elif shape in (_OBJECT, _OPT_OBJECT) and t is dict:
            kwargs[name] = _build(nested, v, f"{path}.{name}")
        elif shape == _DICT and t is dict:
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
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise MalformedDocument("expected a number", path)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise MalformedDocument("expected a string", path)
        return value
    if hint is Any:
        return value
    raise MalformedDocument(f"unsupported field type {hint!r}", path)
