"""The agent's typed configuration (`/etc/litefleet/agent.toml`).

`load_config(path)` returns an `AgentConfig` or raises `ConfigInvalid`, whose `problems` hold one
human line per mistake, so `litefleet-agent check-config` can list them all at once. Every
bound (outbox rows and bytes, download and model sizes) has a safe default here.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.opencv import OpenCVMissing, gives_frames, opencv
from device_profiles import load_profile
from shared.errors import Rejected
from shared.keys import HEX64, Keyring
from shared.profile import DeviceProfile, ProfileInvalid
from shared.root import MAX_ROOT_KEYS, TrustedRoot, implicit_root, self_signed_root
from shared.tomlcheck import Problems, TableReader
from shared.topics import DEFAULT_PREFIX, DEVICE_ID_RE

__all__ = [
    "AgentConfig",
    "ConfigInvalid",
    "ModelConfig",
    "MqttConfig",
    "OutboxConfig",
    "SourceConfig",
    "TelemetryConfig",
    "TrustConfig",
    "UpdateConfig",
    "load_config",
    "parse_config",
]

SOURCE_SCHEMES = (
    "file://", "camera:", "/dev/video", "rtsp://", "http://", "https://", "images://",
    "sensor+csv://", "sensor+serial://", "synthetic:image", "synthetic:sensor",
)


class ConfigInvalid(Problems):
    """An agent config with problems; `problems` has one line per mistake."""


@dataclass(frozen=True)
class MqttConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    protocol: str = "5"  # "5" or "3.1.1"
    topic_prefix: str = DEFAULT_PREFIX
    keepalive_s: int = 30
    session_expiry_s: int = 7 * 24 * 3600
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    max_payload_bytes: int = 1024 * 1024  # inbound messages larger than this are dropped
    inbound_queue: int = 16  # desired/cmd messages waiting for the worker; more are dropped
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    username: str | None = None
    password_file: Path | None = None


@dataclass(frozen=True)
class ModelConfig:
    name: str
    initial: Path
    labels: Path | None = None
    normalization: str = "auto"  # auto | 0_1 | -1_1 | none
    color: str = "auto"  # auto | rgb | bgr | gray
    top_k: int = 3
    score_threshold: float = 0.5  # detections or top-1 above this become events
    crop: str = "center"  # center (keep the aspect ratio) | stretch (whole frame)


@dataclass(frozen=True)
class SourceConfig:
    uri: str
    reconnect_max_s: float = 30.0
    loop: bool = False  # replay a file source from the start when it ends
    buffer_frames: int = 4  # prepared frames waiting for the inference thread (files)


@dataclass(frozen=True)
class TrustConfig:
    """The device's first root of trust: `keys` (an implicit root version 1, whose release and
    root keys are both these keys) or `root`, a signed root document (`shared.root`)."""

    keys: tuple[str, ...]
    threshold: int = 1
    root: TrustedRoot | None = None

    def keyring(self) -> Keyring:
        if self.root is not None:
            return self.root.root.release_keyring()
        return Keyring.from_hex(list(self.keys), self.threshold)

    def initial_root(self) -> TrustedRoot:
        if self.root is not None:
            return self.root
        ring = Keyring.from_hex(list(dict.fromkeys(self.keys)), self.threshold)
        return implicit_root(ring.keys, ring.threshold)


@dataclass(frozen=True)
class TelemetryConfig:
    interval_s: float
    heartbeat_s: float = 60.0
    event_queue: int = 256  # loop events waiting to be stored; more are dropped and counted


@dataclass(frozen=True)
class OutboxConfig:
    max_rows: int = 100_000
    max_bytes: int = 64 * 1024 * 1024
    # SQLite synchronous: NORMAL (WAL; a power cut may lose the last few records, never corrupt
    # the store) or FULL (every append survives a power cut; slower on SD cards).
    synchronous: str = "NORMAL"
    publish_window: int = 100  # QoS 1 messages in flight at once
    shutdown_flush_s: float = 5.0  # on stop, how long to wait for the broker to take the rest
    # records held in memory while the disk refuses writes (full); the oldest go first, counted
    # in `outbox_dropped`
    memory_rows: int = 1000


@dataclass(frozen=True)
class UpdateConfig:
    max_model_bytes: int = 64 * 1024 * 1024
    download_timeout_s: float = 30.0  # per socket read
    # a whole download may take download_grace_s + size / min_download_rate (bytes per second)
    min_download_rate: int = 16 * 1024
    download_grace_s: float = 60.0
    keep_models: int = 4  # active, previous and a few recent ones
    shadow_frames: int = 8  # recent real frames kept for smoke tests and agreement checks


@dataclass(frozen=True)
class DriftConfig:
    enabled: bool = True  # measured whenever the served model has a reference profile
    window: int = 300  # sampled frames in the rolling window
    sample_hz: float = 5.0  # frames a second handed to the drift thread, at most
    reference: Path | None = None  # the initial model's reference.json (releases sign theirs)


CAPTURE_TRIGGERS = ("low_confidence", "disagreement", "drift", "command")


@dataclass(frozen=True)
class CaptureConfig:
    enabled: bool = False  # nothing is kept or uploaded unless this or a signed command says so
    max_disk_mb: float = 50.0  # samples waiting for upload, at most
    max_per_hour: int = 60  # samples kept per hour, at most (operator commands included)
    triggers: tuple[str, ...] = CAPTURE_TRIGGERS


@dataclass(frozen=True)
class AgentConfig:
    device_id: str
    profile: DeviceProfile
    state_dir: Path
    mqtt: MqttConfig
    model: ModelConfig
    source: SourceConfig
    trust: TrustConfig
    telemetry: TelemetryConfig
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    update: UpdateConfig = field(default_factory=UpdateConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    log_format: str = "auto"  # auto (JSON under systemd, text on a terminal) | json | text
    path: Path | None = None


def load_config(path: Path, *, check_files: bool = True) -> AgentConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigInvalid([f"{path}: cannot read: {e.strerror}"]) from e
    return parse_config(text, str(path), path.parent, path, check_files=check_files)


def parse_config(
    text: str, source: str = "agent.toml", base_dir: Path | None = None, path: Path | None = None,
    *, check_files: bool = True,
) -> AgentConfig:
    """`check_files=False` skips the existence of the files it names: the installer checks
    them inside the image tree it builds, not on the machine that builds it."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigInvalid([f"{source}: not valid TOML: {e}"]) from e
    r = TableReader(source)
    base = base_dir or Path.cwd()

    def file_path(table: dict[str, Any], key: str, prefix: str, must_exist: bool) -> Path | None:
        value = r.get(table, key, str, None, prefix)
        if value is None:
            return None
        p = Path(value)
        p = p if p.is_absolute() else base / p
        if must_exist and check_files and not p.exists():
            r.problem(f"{prefix}{key}", f"{p} does not exist")
        return p

    r.unknown(doc, {"device_id", "profile", "state_dir", "log_format", "mqtt", "model", "source",
                    "trust", "telemetry", "outbox", "update", "drift", "capture"})
    device_id = r.get(doc, "device_id", str, None)
    if device_id is None:
        r.problem("device_id", "missing")
    elif not DEVICE_ID_RE.match(device_id):
        r.problem("device_id", f"{device_id!r} is not [A-Za-z0-9_-]{{1,64}}")

    profile: DeviceProfile | None = None
    profile_name = r.get(doc, "profile", str, None)
    if profile_name is None:
        r.problem("profile", "missing (a name in device_profiles/ or a path to a profile file)")
    else:
        try:
            profile = load_profile(profile_name, base)
        except ProfileInvalid as e:
            r.problems.extend(e.problems)

    state_dir = Path(r.get(doc, "state_dir", str, "/var/lib/litefleet"))
    log_format = r.choice(doc, "log_format", ("auto", "json", "text"), "auto")

    m = r.table(doc, "mqtt", {"host", "port", "protocol", "topic_prefix", "keepalive_s",
                              "session_expiry_s", "reconnect_min_s", "reconnect_max_s",
                              "max_payload_bytes", "tls_ca", "tls_cert", "tls_key", "username",
                              "password_file", "inbound_queue"})
    port = r.get(m, "port", int, 1883, "mqtt.")
    if not 0 < port < 65536:
        r.problem("mqtt.port", f"{port} is not a TCP port (1-65535)")
    mqtt = MqttConfig(
        host=r.get(m, "host", str, "127.0.0.1", "mqtt."),
        port=port,
        protocol=r.choice(m, "protocol", ("5", "3.1.1"), "5", "mqtt."),
        topic_prefix=r.get(m, "topic_prefix", str, DEFAULT_PREFIX, "mqtt."),
        keepalive_s=r.positive("mqtt.keepalive_s", r.get(m, "keepalive_s", int, 30, "mqtt."), 30),
        session_expiry_s=r.get(m, "session_expiry_s", int, MqttConfig.session_expiry_s, "mqtt."),
        reconnect_min_s=float(r.positive(
            "mqtt.reconnect_min_s", r.get(m, "reconnect_min_s", (int, float), 1.0, "mqtt."), 1.0)),
        reconnect_max_s=float(r.positive(
            "mqtt.reconnect_max_s", r.get(m, "reconnect_max_s", (int, float), 60.0, "mqtt."), 60.0)),
        max_payload_bytes=r.positive("mqtt.max_payload_bytes", r.get(
            m, "max_payload_bytes", int, MqttConfig.max_payload_bytes, "mqtt."),
            MqttConfig.max_payload_bytes),
        tls_ca=file_path(m, "tls_ca", "mqtt.", True),
        tls_cert=file_path(m, "tls_cert", "mqtt.", True),
        tls_key=file_path(m, "tls_key", "mqtt.", True),
        username=r.get(m, "username", str, None, "mqtt."),
        password_file=file_path(m, "password_file", "mqtt.", True),
        inbound_queue=r.positive("mqtt.inbound_queue", r.get(
            m, "inbound_queue", int, MqttConfig.inbound_queue, "mqtt."), MqttConfig.inbound_queue),
    )
    if (mqtt.tls_cert is None) != (mqtt.tls_key is None):
        r.problem("mqtt.tls_cert", "tls_cert and tls_key go together (mutual TLS needs both)")

    md = r.table(doc, "model", {"name", "initial", "labels", "normalization", "color", "top_k",
                                "score_threshold", "crop"})
    model_name = r.get(md, "name", str, None, "model.")
    if model_name is None:
        r.problem("model.name", "missing")
    initial = file_path(md, "initial", "model.", True)
    if initial is None:
        r.problem("model.initial", "missing (the model served until the first update commits)")
    model = ModelConfig(
        name=model_name or "",
        initial=initial or Path(),
        labels=file_path(md, "labels", "model.", True),
        normalization=r.choice(md, "normalization", ("auto", "0_1", "-1_1", "none"), "auto",
                               "model."),
        color=r.choice(md, "color", ("auto", "rgb", "bgr", "gray"), "auto", "model."),
        top_k=r.positive("model.top_k", r.get(md, "top_k", int, 3, "model."), 3),
        score_threshold=float(r.get(md, "score_threshold", (int, float), 0.5, "model.")),
        crop=r.choice(md, "crop", ("center", "stretch"), "center", "model."),
    )

    s = r.table(doc, "source", {"uri", "reconnect_max_s", "loop", "buffer_frames"})
    uri = r.get(s, "uri", str, None, "source.")
    if uri is None:
        r.problem("source.uri", "missing (for example file:///srv/video.mp4 or camera:0)")
    elif not uri.startswith(SOURCE_SCHEMES):
        r.problem("source.uri", f"{uri!r} is not one of {', '.join(SOURCE_SCHEMES)}")
    elif gives_frames(uri):
        try:
            opencv(f"the frames of {uri.split('?', 1)[0]}")
        except OpenCVMissing as e:
            r.problem("source.uri", str(e))
    source_cfg = SourceConfig(
        uri=uri or "",
        reconnect_max_s=float(r.positive("source.reconnect_max_s", r.get(
            s, "reconnect_max_s", (int, float), 30.0, "source."), 30.0)),
        loop=r.get(s, "loop", bool, False, "source."),
        buffer_frames=r.positive("source.buffer_frames", r.get(
            s, "buffer_frames", int, 4, "source."), 4),
    )

    t = r.table(doc, "trust", {"keys", "threshold", "root"})
    keys = r.get(t, "keys", list, None, "trust.")
    threshold = r.get(t, "threshold", int, 1, "trust.")
    root_path = file_path(t, "root", "trust.", must_exist=True)
    root = None
    if root_path is not None and keys:
        r.problem("trust.root", "set either keys (an implicit root version 1) or root, not both")
    elif root_path is not None and root_path.exists():
        try:
            root = self_signed_root(root_path.read_bytes())
        except (OSError, Rejected) as e:
            r.problem("trust.root", f"{root_path} is not a root signed by its own root keys: {e}")
    elif root_path is None and not keys:
        r.problem("trust.keys", "missing or empty: list the release public keys this device trusts "
                  "(or name a signed root file as trust.root)")
    keys = keys or []
    trust = TrustConfig(tuple(str(k) for k in keys), threshold, root)
    if keys:
        for i, key in enumerate(trust.keys):
            if not HEX64.match(key):
                r.problem(f"trust.keys[{i}]", "a public key is 64 lowercase hex characters")
        if len(set(trust.keys)) > MAX_ROOT_KEYS:
            r.problem("trust.keys", f"at most {MAX_ROOT_KEYS} distinct keys")
        if len(set(trust.keys)) < threshold or threshold < 1:
            r.problem("trust.threshold", f"{threshold} needs that many distinct trusted keys "
                      f"({len(set(trust.keys))} listed)")

    tl = r.table(doc, "telemetry", {"interval_s", "heartbeat_s", "event_queue"})
    default_interval = profile.telemetry_interval_s if profile else 10.0
    telemetry = TelemetryConfig(
        interval_s=float(r.positive("telemetry.interval_s", r.get(
            tl, "interval_s", (int, float), default_interval, "telemetry."), default_interval)),
        heartbeat_s=float(r.positive("telemetry.heartbeat_s", r.get(
            tl, "heartbeat_s", (int, float), 60.0, "telemetry."), 60.0)),
        event_queue=r.positive("telemetry.event_queue", r.get(
            tl, "event_queue", int, TelemetryConfig.event_queue, "telemetry."),
            TelemetryConfig.event_queue),
    )

    o = r.table(doc, "outbox", {"max_rows", "max_bytes", "synchronous", "publish_window",
                                "shutdown_flush_s", "memory_rows"})
    outbox = OutboxConfig(
        max_rows=r.positive("outbox.max_rows", r.get(o, "max_rows", int, OutboxConfig.max_rows,
                                                     "outbox."), OutboxConfig.max_rows),
        max_bytes=r.positive("outbox.max_bytes", r.get(o, "max_bytes", int,
                                                       OutboxConfig.max_bytes, "outbox."),
                             OutboxConfig.max_bytes),
        synchronous=r.choice(o, "synchronous", ("NORMAL", "FULL"), "NORMAL", "outbox."),
        publish_window=r.positive("outbox.publish_window", r.get(
            o, "publish_window", int, 100, "outbox."), 100),
        shutdown_flush_s=float(r.positive("outbox.shutdown_flush_s", r.get(
            o, "shutdown_flush_s", (int, float), 5.0, "outbox."), 5.0)),
        memory_rows=r.positive("outbox.memory_rows", r.get(
            o, "memory_rows", int, OutboxConfig.memory_rows, "outbox."), OutboxConfig.memory_rows),
    )

    u = r.table(doc, "update", {"max_model_bytes", "download_timeout_s", "keep_models",
                                "shadow_frames", "min_download_rate", "download_grace_s"})
    update = UpdateConfig(
        max_model_bytes=r.positive("update.max_model_bytes", r.get(
            u, "max_model_bytes", int, UpdateConfig.max_model_bytes, "update."),
            UpdateConfig.max_model_bytes),
        download_timeout_s=float(r.positive("update.download_timeout_s", r.get(
            u, "download_timeout_s", (int, float), 30.0, "update."), 30.0)),
        min_download_rate=r.positive("update.min_download_rate", r.get(
            u, "min_download_rate", int, UpdateConfig.min_download_rate, "update."),
            UpdateConfig.min_download_rate),
        download_grace_s=float(r.positive("update.download_grace_s", r.get(
            u, "download_grace_s", (int, float), UpdateConfig.download_grace_s, "update."),
            UpdateConfig.download_grace_s)),
        keep_models=r.get(u, "keep_models", int, 4, "update."),
        shadow_frames=r.get(u, "shadow_frames", int, 8, "update."),
    )
    if update.keep_models < 2:
        r.problem("update.keep_models", "must be at least 2 (active and previous)")

    dr = r.table(doc, "drift", {"enabled", "window", "sample_hz", "reference"})
    drift = DriftConfig(
        enabled=r.get(dr, "enabled", bool, True, "drift."),
        window=r.positive("drift.window", r.get(dr, "window", int, 300, "drift."), 300),
        sample_hz=float(r.positive("drift.sample_hz", r.get(
            dr, "sample_hz", (int, float), 5.0, "drift."), 5.0)),
        reference=file_path(dr, "reference", "drift.", True),
    )
    cp = r.table(doc, "capture", {"enabled", "max_disk_mb", "max_per_hour", "triggers"})
    triggers = r.get(cp, "triggers", list, list(CAPTURE_TRIGGERS), "capture.")
    for t in triggers:
        if t not in CAPTURE_TRIGGERS:
            r.problem("capture.triggers", f"{t!r} is not one of {', '.join(CAPTURE_TRIGGERS)}")
    capture = CaptureConfig(
        enabled=r.get(cp, "enabled", bool, False, "capture."),
        max_disk_mb=float(r.positive("capture.max_disk_mb", r.get(
            cp, "max_disk_mb", (int, float), 50.0, "capture."), 50.0)),
        max_per_hour=r.positive("capture.max_per_hour", r.get(
            cp, "max_per_hour", int, 60, "capture."), 60),
        triggers=tuple(str(t) for t in triggers),
    )

    if r.problems or profile is None:
        raise ConfigInvalid(r.problems)
    return AgentConfig(
        device_id=device_id, profile=profile, state_dir=state_dir, mqtt=mqtt, model=model,
        source=source_cfg, trust=trust, telemetry=telemetry, outbox=outbox, update=update,
        drift=drift, capture=capture, log_format=log_format, path=path,
    )
