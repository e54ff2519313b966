"""The cloud side's typed configuration (`cloud.toml`).

`load_cloud_config(path)` returns a `CloudConfig` or raises `CloudConfigInvalid`, whose
`problems` hold one human line per mistake. Relative paths resolve against the config file's
folder. Every bound the cloud keeps (ingest queue, batch size, release history, artifact
sizes) has a safe default here.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from shared.tomlcheck import Problems, TableReader
from shared.topics import DEFAULT_PREFIX

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_NAME",
    "CloudConfig",
    "CloudConfigInvalid",
    "CloudRole",
    "HttpConfig",
    "IngestConfig",
    "MqttConfig",
    "MqttCredentials",
    "RolloutConfig",
    "SigningConfig",
    "StoreConfig",
    "WebConfig",
    "default_config_path",
    "load_cloud_config",
    "parse_cloud_config",
]

CONFIG_ENV = "LITEFLEET_CONFIG"
DEFAULT_CONFIG_NAME = "cloud.toml"


class CloudConfigInvalid(Problems):
    """A cloud config with problems; `problems` has one line per mistake."""


class CloudRole(StrEnum):
    """The cloud's MQTT connections, each of which may log in as its own broker user."""

    INGEST = "ingest"  # reads every device's state, telemetry, events, update
    CONTROLLER = "controller"  # `serve`'s rollout ticks: writes desired
    OPERATOR = "operator"  # one-shot commands (deploy, command, rollout abort): desired, cmd

    @property
    def default_user(self) -> str:
        """The user `litefleet broker-config` creates for this role."""
        return f"litefleet-{self.value}"


_CREDENTIAL_KEYS = {"username", "password_file", "tls_cert", "tls_key"}


@dataclass(frozen=True)
class MqttCredentials:
    """A role's own `[mqtt.<role>]` table; each key set there overrides `[mqtt]`'s."""

    username: str | None = None
    password_file: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None


@dataclass(frozen=True)
class MqttConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    topic_prefix: str = DEFAULT_PREFIX
    client_id: str = "litefleet-cloud"
    protocol: str = "5"  # "5", or "3.1.1" for brokers that lack MQTT 5
    keepalive_s: int = 30
    session_expiry_s: int = 7 * 24 * 3600
    username: str | None = None
    password_file: Path | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None  # a client certificate (mutual TLS), with tls_key
    tls_key: Path | None = None
    max_payload_bytes: int = 64 * 1024  # device messages larger than this are dropped
    roles: dict[CloudRole, MqttCredentials] = field(default_factory=dict)

    def for_role(self, role: CloudRole) -> MqttConfig:
        """This config with the role's own credentials (`[mqtt.<role>]`) in place."""
        own = self.roles.get(role)
        if own is None:
            return self
        return replace(
            self, username=own.username or self.username,
            password_file=own.password_file or self.password_file,
            tls_cert=own.tls_cert or self.tls_cert, tls_key=own.tls_key or self.tls_key,
            roles={},
        )


@dataclass(frozen=True)
class StoreConfig:
    db: Path
    artifacts: str  # file:///dir or s3://bucket/prefix
    public_url: str | None = None  # what devices fetch file-store artifacts from
    endpoint_url: str | None = None  # S3-compatible servers
    region: str | None = None
    # presigned URLs live as long as the release, capped at S3's 7-day maximum
    presign_max_s: int = 7 * 24 * 3600


@dataclass(frozen=True)
class SigningConfig:
    key: Path | None = None


@dataclass(frozen=True)
class HttpConfig:
    """The artifact server (file stores) with `/healthz` and `/metrics`: what devices reach."""

    host: str = "127.0.0.1"
    port: int = 8081
    enabled: bool = True


@dataclass(frozen=True)
class WebConfig:
    """The dashboard and its JSON API (`cloud.web`): what operators reach, loopback by default."""

    host: str = "127.0.0.1"
    port: int = 8080
    enabled: bool = True
    secret_file: Path | None = None  # signs session cookies; default: web-secret beside the db
    session_max_age_s: int = 12 * 3600
    login_failures_max: int = 5  # failed logins per client and user name in login_window_s
    login_window_s: float = 300.0

    @property
    def listen(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class IngestConfig:
    queue_max: int = 50_000  # messages waiting for the writer; beyond this paho's window holds
    batch_max: int = 2_000  # messages per transaction
    batch_wait_s: float = 0.2  # longest a message waits before its batch is written
    offline_after_s: float = 180.0  # no message for this long: the device counts as offline


@dataclass(frozen=True)
class RolloutConfig:
    tick_s: float = 5.0
    device_timeout_s: float = 1800.0  # a device silent this long after its wave started: timed out
    deployment_lifetime_s: int = 7 * 24 * 3600
    release_history: int = 3  # deltas are made against this many previous releases
    max_artifact_bytes: int = 256 * 1024 * 1024


@dataclass(frozen=True)
class CloudConfig:
    mqtt: MqttConfig
    store: StoreConfig
    signing: SigningConfig = field(default_factory=SigningConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    web: WebConfig = field(default_factory=WebConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    path: Path | None = None


def _check_mqtt_files(r: TableReader, mqtt: MqttConfig) -> None:
    """Every named file exists, and a client key comes with its certificate."""
    tables: list[tuple[str, MqttConfig | MqttCredentials]] = [("mqtt.", mqtt)]
    tables += [(f"mqtt.{role.value}.", own) for role, own in mqtt.roles.items()]
    for prefix, t in tables:
        paths = [("password_file", t.password_file), ("tls_cert", t.tls_cert),
                 ("tls_key", t.tls_key)]
        if isinstance(t, MqttConfig):
            paths.append(("tls_ca", t.tls_ca))
        for name, p in paths:
            if p is not None and not p.exists():
                r.problem(f"{prefix}{name}", f"{p} does not exist")
    lonely = "a client key needs its certificate (tls_cert)"
    if mqtt.tls_key is not None and mqtt.tls_cert is None:
        r.problem("mqtt.tls_key", lonely)
    for role, own in mqtt.roles.items():
        if own.tls_key is not None and mqtt.for_role(role).tls_cert is None:
            r.problem(f"mqtt.{role.value}.tls_key", lonely)


def default_config_path() -> Path:
    """$LITEFLEET_CONFIG, else ./cloud.toml."""
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else Path(DEFAULT_CONFIG_NAME)


def load_cloud_config(path: Path | None = None) -> CloudConfig:
    path = path or default_config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise CloudConfigInvalid([f"{path}: cannot read: {e.strerror}"]) from e
    return parse_cloud_config(text, str(path), path.resolve().parent, path)


def parse_cloud_config(
    text: str, source: str = "cloud.toml", base_dir: Path | None = None, path: Path | None = None
) -> CloudConfig:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise CloudConfigInvalid([f"{source}: not valid TOML: {e}"]) from e
    r = TableReader(source)
    base = base_dir or Path.cwd()

    def resolve(value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else base / p

    def opt_path(table: dict[str, Any], key: str, prefix: str) -> Path | None:
        value = r.get(table, key, str, None, prefix)
        return None if value is None else resolve(value)

    def port_of(table: dict[str, Any], key: str, default: int, prefix: str) -> int:
        port: int = r.get(table, key, int, default, prefix)
        if not 0 <= port < 65536:
            r.problem(f"{prefix}{key}", f"{port} is not a TCP port (0-65535)")
            return default
        return port

    def pos(table: dict[str, Any], key: str, kind: Any, default: Any, prefix: str) -> Any:
        return r.positive(f"{prefix}{key}", r.get(table, key, kind, default, prefix), default)

    r.unknown(doc, {"mqtt", "store", "signing", "http", "web", "ingest", "rollout"})
    m = r.table(doc, "mqtt", {"host", "port", "topic_prefix", "client_id", "protocol", "keepalive_s",
                              "session_expiry_s", "username", "password_file", "tls_ca",
                              "tls_cert", "tls_key", "max_payload_bytes",
                              *(role.value for role in CloudRole)})
    roles: dict[CloudRole, MqttCredentials] = {}
    for role in CloudRole:
        if role.value not in m:
            continue
        t = r.get(m, role.value, dict, {}, "mqtt.")
        r.unknown(t, _CREDENTIAL_KEYS, f"mqtt.{role.value}.")
        pre = f"mqtt.{role.value}."
        roles[role] = MqttCredentials(
            username=r.get(t, "username", str, None, pre),
            password_file=opt_path(t, "password_file", pre),
            tls_cert=opt_path(t, "tls_cert", pre), tls_key=opt_path(t, "tls_key", pre))
    mqtt = MqttConfig(
        host=r.get(m, "host", str, "127.0.0.1", "mqtt."),
        port=port_of(m, "port", 1883, "mqtt."),
        topic_prefix=r.get(m, "topic_prefix", str, DEFAULT_PREFIX, "mqtt."),
        client_id=r.get(m, "client_id", str, "litefleet-cloud", "mqtt."),
        protocol=r.choice(m, "protocol", ("5", "3.1.1"), "5", "mqtt."),
        keepalive_s=pos(m, "keepalive_s", int, 30, "mqtt."),
        session_expiry_s=pos(m, "session_expiry_s", int, MqttConfig.session_expiry_s, "mqtt."),
        username=r.get(m, "username", str, None, "mqtt."),
        password_file=opt_path(m, "password_file", "mqtt."),
        tls_ca=opt_path(m, "tls_ca", "mqtt."),
        tls_cert=opt_path(m, "tls_cert", "mqtt."),
        tls_key=opt_path(m, "tls_key", "mqtt."),
        max_payload_bytes=pos(m, "max_payload_bytes", int, MqttConfig.max_payload_bytes, "mqtt."),
        roles=roles,
    )
    _check_mqtt_files(r, mqtt)

    s = r.table(doc, "store", {"db", "artifacts", "public_url", "endpoint_url", "region",
                               "presign_max_s"})
    db = opt_path(s, "db", "store.")
    if db is None:
        db = base / "cloud.db"
    artifacts = r.get(s, "artifacts", str, None, "store.")
    if artifacts is None:
        artifacts = (base / "artifacts").as_uri()
    elif artifacts.startswith("file://"):
        artifacts = resolve(artifacts.removeprefix("file://")).as_uri()
    elif artifacts.startswith("s3://"):
        if not artifacts.removeprefix("s3://").split("/", 1)[0]:
            r.problem("store.artifacts", f"{artifacts!r} names no bucket (s3://bucket/prefix)")
    else:
        r.problem("store.artifacts", f"{artifacts!r} is neither file:///dir nor s3://bucket/prefix")
    public_url = r.get(s, "public_url", str, None, "store.")
    if public_url is not None and not public_url.startswith(("http://", "https://")):
        r.problem("store.public_url", f"{public_url!r} is not an http(s) URL")
    presign = pos(s, "presign_max_s", int, StoreConfig.presign_max_s, "store.")
    if presign > StoreConfig.presign_max_s:
        r.problem("store.presign_max_s", f"{presign} exceeds S3's 7-day presign maximum (604800)")
        presign = StoreConfig.presign_max_s
    store = StoreConfig(
        db=db,
        artifacts=artifacts,
        public_url=public_url.rstrip("/") if public_url else None,
        endpoint_url=r.get(s, "endpoint_url", str, None, "store."),
        region=r.get(s, "region", str, None, "store."),
        presign_max_s=presign,
    )

    g = r.table(doc, "signing", {"key"})
    signing = SigningConfig(key=opt_path(g, "key", "signing."))

    h = r.table(doc, "http", {"host", "port", "enabled"})
    http = HttpConfig(
        host=r.get(h, "host", str, "127.0.0.1", "http."),
        port=port_of(h, "port", HttpConfig.port, "http."),
        enabled=r.get(h, "enabled", bool, True, "http."),
    )
    web = _web_config(r, r.table(doc, "web", {"listen", "enabled", "secret_file",
                                              "session_max_age_s", "login_failures_max",
                                              "login_window_s"}), opt_path)
    if (web.enabled and http.enabled and web.port == http.port and web.port != 0
            and web.host == http.host):
        r.problem("web.listen", f"{web.listen} is also [http]'s address (the artifact server): "
                  "give one of them another port")

    i = r.table(doc, "ingest", {"queue_max", "batch_max", "batch_wait_s", "offline_after_s"})
    ingest = IngestConfig(
        queue_max=pos(i, "queue_max", int, IngestConfig.queue_max, "ingest."),
        batch_max=pos(i, "batch_max", int, IngestConfig.batch_max, "ingest."),
        batch_wait_s=float(pos(i, "batch_wait_s", (int, float), 0.2, "ingest.")),
        offline_after_s=float(pos(i, "offline_after_s", (int, float), 180.0, "ingest.")),
    )

    o = r.table(doc, "rollout", {"tick_s", "device_timeout_s", "deployment_lifetime_s",
                                 "release_history", "max_artifact_bytes"})
    rollout = RolloutConfig(
        tick_s=float(pos(o, "tick_s", (int, float), 5.0, "rollout.")),
        device_timeout_s=float(pos(o, "device_timeout_s", (int, float), 1800.0, "rollout.")),
        deployment_lifetime_s=pos(o, "deployment_lifetime_s", int,
                                  RolloutConfig.deployment_lifetime_s, "rollout."),
        release_history=r.get(o, "release_history", int, 3, "rollout."),
        max_artifact_bytes=pos(o, "max_artifact_bytes", int, RolloutConfig.max_artifact_bytes,
                               "rollout."),
    )
    if rollout.release_history < 0:
        r.problem("rollout.release_history", "must be 0 or more")

    if r.problems:
        raise CloudConfigInvalid(r.problems)
    return CloudConfig(mqtt=mqtt, store=store, signing=signing, http=http, web=web,
                       ingest=ingest, rollout=rollout, path=path)


def _web_config(r: TableReader, w: dict[str, Any], opt_path: Any) -> WebConfig:
    listen = r.get(w, "listen", str, WebConfig().listen, "web.")
    host, sep, port_text = listen.rpartition(":")
    port = WebConfig.port
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        r.problem("web.listen", f"{listen!r} is not HOST:PORT (for example 127.0.0.1:8080)")
    else:
        port = int(port_text)
    host = host.removeprefix("[").removesuffix("]")  # [::1]:8080
    age = r.positive("web.session_max_age_s",
                     r.get(w, "session_max_age_s", int, WebConfig.session_max_age_s, "web."),
                     WebConfig.session_max_age_s)
    failures = r.positive("web.login_failures_max",
                          r.get(w, "login_failures_max", int, WebConfig.login_failures_max,
                                "web."), WebConfig.login_failures_max)
    window = r.positive("web.login_window_s",
                        r.get(w, "login_window_s", (int, float), WebConfig.login_window_s,
                              "web."), WebConfig.login_window_s)
    return WebConfig(host=host or WebConfig.host, port=port,
                     enabled=r.get(w, "enabled", bool, True, "web."),
                     secret_file=opt_path(w, "secret_file", "web."), session_max_age_s=age,
                     login_failures_max=failures, login_window_s=float(window))
