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


def decode_message(data: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> Message:
    value = load_json(data, max_bytes)
    if not isinstance(value, dict):
        raise MalformedDocument("a message is a JSON object", "$")
    schema = value.get("schema")
    cls = _KINDS.get(schema) if isinstance(schema, str) else None
    if cls is None:
        raise UnknownSchema(f"unknown message schema {schema!r}")
    body = {k: v for k, v in value.items() if k != "schema"}
    result: Message = _build(cls, body, "$")
    return result


_PLANS: dict[type[Any], tuple[frozenset[str], tuple[tuple[str, Any, bool], ...]]] = {}


def _plan(cls: type[Any]) -> tuple[frozenset[str], tuple[tuple[str, Any, bool], ...]]:
    """(field names, (name, type hint, required) per field), resolved once per class:
    resolving string annotations is slow and the schemas are fixed."""
    plan = _PLANS.get(cls)
    if plan is None:
        hints = get_type_hints(cls)
        fields = dataclasses.fields(cls)
        plan = _PLANS[cls] = (
            frozenset(f.name for f in fields),
            tuple(
                (f.name, hints[f.name],
                 f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
                for f in fields
            ),
        )
    return plan


def _build(cls: type[Any], value: Any, path: str) -> Any:
    if not isinstance(value, dict):
        raise MalformedDocument("expected an object", path)
    names, fields = _plan(cls)
    kwargs: dict[str, Any] = {}
    for key in value:
        if key not in names:
            raise MalformedDocument("unknown field", f"{path}.{key}")
    for name, hint, required in fields:
        if name not in value:
            if required:
                raise MalformedDocument("missing", f"{path}.{name}")
            continue
        v = value[name]
        t = type(v)
        # fast path for exact scalar types; everything else goes through _coerce
        if t is hint and t in (str, int, bool):
            kwargs[name] = v
        elif hint is float and t in (float, int):
            kwargs[name] = float(v)
        else:
            kwargs[name] = _coerce(hint, v, f"{path}.{name}")
    return cls(**kwargs)


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
