"""Typed, versioned MQTT message schemas.

Every payload is UTF-8 JSON with `"schema": "litefleet.<kind>/<n>"`. `decode_message` reads
untrusted bytes with a size cap and returns the typed message, or raises `UnknownSchema`,
`PayloadTooLarge` or `MalformedDocument` (naming the field). Unlike signed documents, messages
may carry floats (fps, latencies).

The bounds every field is held to (the contract, both directions):

    integers      0 <= n <= 2**63 - 1 (seq, versions, counters, byte counts, root_version)
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
                  or array, keys as other text, text as `detail`, integers within int64,
                  finite floats

`load_json` has already refused oversize, deep (> 32) or long-integer input before parsing.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from shared.errors import MalformedDocument, UnknownSchema
from shared.fields import TS_MAX, build
from shared.jsonload import load_json
from shared.phases import UpdatePhase

__all__ = [
    "MAX_MESSAGE_BYTES",
    "MAX_TS_AGE_S",
    "MAX_TS_AHEAD_S",
    "TS_MAX",
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
MAX_TS_AGE_S = 5 * 365 * 86_400  # a record may wait this long in a device's outbox
MAX_TS_AHEAD_S = 86_400  # a device clock may run this far ahead of the receiver's


@dataclass(frozen=True)
class ModelIdentity:
    name: str
    version: int
    sha256: str


@dataclass(frozen=True)
class DeviceState:
    """Retained on `devices/{id}/state`; the last will sets `online` to false.

    `root_version` is the version of the root of trust the device verifies with (1 for the
    implicit root of `[trust] keys`); 0 means not reported: an agent from before the field.
    """

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
    root_version: int = 0


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
    """The message as compact JSON with its schema first (what `decode_message` reads)."""
    body = {"schema": message.SCHEMA, **_plain_fields(message)}
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode("utf-8")


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _plain_fields(obj: Any) -> dict[str, Any]:
    """A message's fields as a dict, nested messages (model, drift) as dicts: what
    `dataclasses.asdict` gives, for a third of its cost (no deep copy: the dict is only
    serialized, and the messages are frozen)."""
    cls = type(obj)
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(obj))
    out = {}
    for name in names:
        value = getattr(obj, name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = _plain_fields(value)
        out[name] = value
    return out


def decode_message(
    data: bytes, max_bytes: int = MAX_MESSAGE_BYTES, *, now: float | None = None
) -> Message:
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
    result: Message = build(cls, value, "$")
    if now is not None and not isinstance(result, Command):
        ts = result.ts
        if not now - MAX_TS_AGE_S <= ts <= now + MAX_TS_AHEAD_S:
            raise MalformedDocument(
                f"{ts} is more than {MAX_TS_AGE_S // 86_400} days behind or "
                f"{MAX_TS_AHEAD_S} s ahead of the receiver's clock",
                "$.ts",
            )
    return result
