"""The agent's typed configuration (`/etc/litefleet/agent.toml`).

`load_config(path)` returns an `AgentConfig` or raises `ConfigInvalid`, whose `problems` hold one
human line per mistake, so `litefleet-agent check-config` can list them all at once. Every
bound (outbox rows and bytes, download and model sizes) has a safe default here.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from agent.opencv import OpenCVMissing, gives_frames, opencv
from device_profiles import load_profile
from device_profiles.profile import DeviceProfile, ProfileInvalid
from localio.tomlcheck import (
    POSITIVE,
    Bound,
    MustExist,
    Paths,
    Problems,
    Required,
    TableReader,
    read,
)
from shared.errors import Rejected
from shared.keys import HEX64, Keyring
from shared.root import MAX_ROOT_KEYS, TrustedRoot, implicit_root, self_signed_root
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
    "file://",
    "camera:",
    "/dev/video",
    "rtsp://",
    "http://",
    "https://",
    "images://",
    "sensor+csv://",
    "sensor+serial://",
    "synthetic:image",
    "synthetic:sensor",
)


class ConfigInvalid(Problems):
    """An agent config with problems; `problems` has one line per mistake."""


Positive = Annotated[int, POSITIVE]
PositiveS = Annotated[float, POSITIVE]  # seconds (or another positive measure)
ExistingFile = Annotated[Path | None, MustExist()]


@dataclass(frozen=True)
class MqttConfig:
    host: str = "127.0.0.1"
    port: Annotated[int, Bound(1, 65535, message="{value} is not a TCP port (1-65535)")] = 1883
    protocol: Literal["5", "3.1.1"] = "5"
    topic_prefix: str = DEFAULT_PREFIX
    keepalive_s: Positive = 30
    session_expiry_s: int = 7 * 24 * 3600
    reconnect_min_s: PositiveS = 1.0
    reconnect_max_s: PositiveS = 60.0
    max_payload_bytes: Positive = 1024 * 1024  # inbound messages larger than this are dropped
    inbound_queue: Positive = 16  # desired/cmd messages waiting for the worker; more dropped
    tls_ca: ExistingFile = None
    tls_cert: ExistingFile = None
    tls_key: ExistingFile = None
    username: str | None = None
    password_file: ExistingFile = None


@dataclass(frozen=True)
class ModelConfig:
    name: str
    initial: Annotated[
        Path, MustExist(), Required("the model served until the first update commits")
    ]
    labels: ExistingFile = None
    normalization: Literal["auto", "0_1", "-1_1", "none"] = "auto"
    color: Literal["auto", "rgb", "bgr", "gray"] = "auto"
    top_k: Positive = 3
    score_threshold: float = 0.5  # detections or top-1 above this become events
    crop: Literal["center", "stretch"] = "center"  # keep the aspect ratio | whole frame


@dataclass(frozen=True)
class SourceConfig:
    uri: Annotated[str, Required("for example file:///srv/video.mp4 or camera:0")]
    reconnect_max_s: PositiveS = 30.0
    loop: bool = False  # replay a file source from the start when it ends
    buffer_frames: Positive = 4  # prepared frames waiting for the inference thread (files)


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
    interval_s: PositiveS  # the profile's, unless set
    heartbeat_s: PositiveS = 60.0
    event_queue: Positive = 256  # loop events waiting to be stored; more are dropped, counted


@dataclass(frozen=True)
class OutboxConfig:
    max_rows: Positive = 100_000
    max_bytes: Positive = 64 * 1024 * 1024
    # SQLite synchronous: NORMAL (WAL; a power cut may lose the last few records, never corrupt
    # the store) or FULL (every append survives a power cut; slower on SD cards).
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    publish_window: Positive = 100  # QoS 1 messages in flight at once
    shutdown_flush_s: PositiveS = 5.0  # on stop, how long to wait for the broker to take the rest
    # records held in memory while the disk refuses writes (full); the oldest go first, counted
    # in `outbox_dropped`
    memory_rows: Positive = 1000


@dataclass(frozen=True)
class UpdateConfig:
    max_model_bytes: Positive = 64 * 1024 * 1024
    download_timeout_s: PositiveS = 30.0  # per socket read
    # a whole download may take download_grace_s + size / min_download_rate (bytes per second)
    min_download_rate: Positive = 16 * 1024
    download_grace_s: PositiveS = 60.0
    # active, previous and a few recent ones
    keep_models: Annotated[int, Bound(2, message="must be at least 2 (active and previous)")] = 4
    shadow_frames: int = 8  # recent real frames kept for smoke tests and agreement checks


@dataclass(frozen=True)
class DriftConfig:
    enabled: bool = True  # measured whenever the served model has a reference profile
    window: Positive = 300  # sampled frames in the rolling window
    sample_hz: PositiveS = 5.0  # frames a second handed to the drift thread, at most
    reference: ExistingFile = None  # the initial model's reference.json (releases sign theirs)


CAPTURE_TRIGGERS = ("low_confidence", "disagreement", "drift", "command")


@dataclass(frozen=True)
class CaptureConfig:
    enabled: bool = False  # nothing is kept or uploaded unless this or a signed command says so
    max_disk_mb: PositiveS = 50.0  # samples waiting for upload, at most
    max_per_hour: Positive = 60  # samples kept per hour, at most (operator commands included)
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
    log_format: Literal["auto", "json", "text"] = "auto"  # auto: JSON under systemd
    path: Path | None = None


def load_config(path: Path, *, check_files: bool = True) -> AgentConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigInvalid([f"{path}: cannot read: {e.strerror}"]) from e
    return parse_config(text, str(path), path.parent, path, check_files=check_files)


def parse_config(
    text: str,
    source: str = "agent.toml",
    base_dir: Path | None = None,
    path: Path | None = None,
    *,
    check_files: bool = True,
) -> AgentConfig:
    """`check_files=False` skips the existence of the files it names: the installer checks
    them inside the image tree it builds, not on the machine that builds it.

    Each table is read by `localio.tomlcheck.read` from its dataclass above (types, choices,
    bounds); what spans keys or needs more than a type (device id, profile, source URI, trust)
    is checked here.
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigInvalid([f"{source}: not valid TOML: {e}"]) from e
    r = TableReader(source)
    base = base_dir or Path.cwd()
    paths = Paths(base, check_files=check_files)

    def section(key: str) -> dict[str, Any]:
        table: dict[str, Any] = r.get(doc, key, dict, {})
        return table

    top = read(
        r,
        AgentConfig,
        doc,
        "",
        paths,
        skip={
            "device_id",
            "profile",
            "state_dir",
            "mqtt",
            "model",
            "source",
            "trust",
            "telemetry",
            "outbox",
            "update",
            "drift",
            "capture",
        },
        not_keys={"path"},
    )
    device_id = _device_id(r, doc)
    profile = _profile(r, doc, base)
    state_dir = Path(r.get(doc, "state_dir", str, "/var/lib/litefleet"))

    mqtt = MqttConfig(**read(r, MqttConfig, section("mqtt"), "mqtt.", paths))
    if (mqtt.tls_cert is None) != (mqtt.tls_key is None):
        r.problem("mqtt.tls_cert", "tls_cert and tls_key go together (mutual TLS needs both)")
    model = ModelConfig(**read(r, ModelConfig, section("model"), "model.", paths))
    source_cfg = SourceConfig(**read(r, SourceConfig, section("source"), "source.", paths))
    _check_source(r, source_cfg.uri)
    trust = _trust(r, section("trust"), paths)
    interval = profile.telemetry_interval_s if profile else 10.0
    telemetry = TelemetryConfig(
        **read(
            r,
            TelemetryConfig,
            section("telemetry"),
            "telemetry.",
            paths,
            defaults={"interval_s": interval},
        )
    )
    outbox = OutboxConfig(**read(r, OutboxConfig, section("outbox"), "outbox.", paths))
    update = UpdateConfig(**read(r, UpdateConfig, section("update"), "update.", paths))
    drift = DriftConfig(**read(r, DriftConfig, section("drift"), "drift.", paths))
    capture = CaptureConfig(**read(r, CaptureConfig, section("capture"), "capture.", paths))
    for t in capture.triggers:
        if t not in CAPTURE_TRIGGERS:
            r.problem("capture.triggers", f"{t!r} is not one of {', '.join(CAPTURE_TRIGGERS)}")

    if r.problems or profile is None or device_id is None:
        raise ConfigInvalid(r.problems)
    return AgentConfig(
        device_id=device_id,
        profile=profile,
        state_dir=state_dir,
        mqtt=mqtt,
        model=model,
        source=source_cfg,
        trust=trust,
        telemetry=telemetry,
        outbox=outbox,
        update=update,
        drift=drift,
        capture=capture,
        log_format=top["log_format"],
        path=path,
    )


def _device_id(r: TableReader, doc: dict[str, Any]) -> str | None:
    device_id: str | None = r.get(doc, "device_id", str, None)
    if device_id is None:
        r.problem("device_id", "missing")
    elif not DEVICE_ID_RE.match(device_id):
        r.problem("device_id", f"{device_id!r} is not [A-Za-z0-9_-]{{1,64}}")
    return device_id


def _profile(r: TableReader, doc: dict[str, Any], base: Path) -> DeviceProfile | None:
    name = r.get(doc, "profile", str, None)
    if name is None:
        r.problem("profile", "missing (a name in device_profiles/ or a path to a profile file)")
        return None
    try:
        return load_profile(name, base)
    except ProfileInvalid as e:
        r.problems.extend(e.problems)
        return None


def _check_source(r: TableReader, uri: str | None) -> None:
    if uri is None:
        return  # reported as missing
    if not uri.startswith(SOURCE_SCHEMES):
        r.problem("source.uri", f"{uri!r} is not one of {', '.join(SOURCE_SCHEMES)}")
    elif gives_frames(uri):
        try:
            opencv(f"the frames of {uri.split('?', 1)[0]}")
        except OpenCVMissing as e:
            r.problem("source.uri", str(e))


def _trust(r: TableReader, t: dict[str, Any], paths: Paths) -> TrustConfig:
    """`keys` and `threshold`, or `root`: one of the two, checked together."""
    r.unknown(t, {"keys", "threshold", "root"}, "trust.")
    keys = r.get(t, "keys", list, None, "trust.")
    threshold = r.get(t, "threshold", int, 1, "trust.")
    root_value = r.get(t, "root", str, None, "trust.")
    root_path = paths.resolve(root_value) if root_value is not None else None
    if root_path is not None and paths.check_files and not root_path.exists():
        r.problem("trust.root", f"{root_path} does not exist")
    root = None
    if root_path is not None and keys:
        r.problem("trust.root", "set either keys (an implicit root version 1) or root, not both")
    elif root_path is not None and root_path.exists():
        try:
            root = self_signed_root(root_path.read_bytes())
        except (OSError, Rejected) as e:
            r.problem("trust.root", f"{root_path} is not a root signed by its own root keys: {e}")
    elif root_path is None and not keys:
        r.problem(
            "trust.keys",
            "missing or empty: list the release public keys this device trusts "
            "(or name a signed root file as trust.root)",
        )
    keys = keys or []
    trust = TrustConfig(tuple(str(k) for k in keys), threshold, root)
    if keys:
        for i, key in enumerate(trust.keys):
            if not HEX64.match(key):
                r.problem(f"trust.keys[{i}]", "a public key is 64 lowercase hex characters")
        if len(set(trust.keys)) > MAX_ROOT_KEYS:
            r.problem("trust.keys", f"at most {MAX_ROOT_KEYS} distinct keys")
        if len(set(trust.keys)) < threshold or threshold < 1:
            r.problem(
                "trust.threshold",
                f"{threshold} needs that many distinct trusted keys "
                f"({len(set(trust.keys))} listed)",
            )
    return trust
