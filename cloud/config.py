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
from typing import Annotated, Any, Literal

from localio.tomlcheck import POSITIVE, Bound, Paths, Problems, TableReader, read
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


Positive = Annotated[int, POSITIVE]
PositiveS = Annotated[float, POSITIVE]
Port = Annotated[int, Bound(0, 65535, message="{value} is not a TCP port (0-65535)")]
PRESIGN_MAX_S = 7 * 24 * 3600  # S3's longest presigned URL


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
    port: Port = 1883
    topic_prefix: str = DEFAULT_PREFIX
    client_id: str = "litefleet-cloud"
    protocol: Literal["5", "3.1.1"] = "5"  # 3.1.1 for brokers that lack MQTT 5
    keepalive_s: Positive = 30
    session_expiry_s: Positive = 7 * 24 * 3600
    username: str | None = None
    password_file: Path | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None  # a client certificate (mutual TLS), with tls_key
    tls_key: Path | None = None
    max_payload_bytes: Positive = 64 * 1024  # device messages larger than this are dropped
    roles: dict[CloudRole, MqttCredentials] = field(default_factory=dict)

    def for_role(self, role: CloudRole) -> MqttConfig:
        """This config with the role's own credentials (`[mqtt.<role>]`) in place."""
        own = self.roles.get(role)
        if own is None:
            return self
        return replace(
            self,
            username=own.username or self.username,
            password_file=own.password_file or self.password_file,
            tls_cert=own.tls_cert or self.tls_cert,
            tls_key=own.tls_key or self.tls_key,
            roles={},
        )


@dataclass(frozen=True)
class StoreConfig:
    # the SQLite file (`[store] db`, or the path of a sqlite:/// url); with PostgreSQL, where
    # files the commands write (signed releases, roots) go next to: the config's folder
    db: Path
    artifacts: str  # file:///dir or s3://bucket/prefix
    public_url: str | None = None  # what devices fetch file-store artifacts from
    endpoint_url: str | None = None  # S3-compatible servers
    region: str | None = None
    # presigned URLs live as long as the release, capped at S3's 7-day maximum
    presign_max_s: Annotated[
        int,
        POSITIVE,
        Bound(max=PRESIGN_MAX_S, message="{value} exceeds S3's 7-day presign maximum (604800)"),
    ] = PRESIGN_MAX_S
    url: str = ""  # sqlite:///PATH (the embedded default, from `db`) or postgresql://HOST/DB
    password_file: Path | None = None  # PostgreSQL's password (else PGPASSWORD, ~/.pgpass)

    @property
    def backend(self) -> str:
        return "postgresql" if self.url.startswith(("postgresql:", "postgres:")) else "sqlite"


@dataclass(frozen=True)
class SigningConfig:
    key: Path | None = None


@dataclass(frozen=True)
class HttpConfig:
    """The artifact server (file stores) with `/healthz` and `/metrics`: what devices reach."""

    host: str = "127.0.0.1"
    port: Port = 8081
    enabled: bool = True


@dataclass(frozen=True)
class WebConfig:
    """The dashboard and its JSON API (`cloud.web`): what operators reach, loopback by default.

    `host` and `port` come from one key, `listen = "HOST:PORT"`."""

    host: str = "127.0.0.1"
    port: int = 8080
    enabled: bool = True
    secret_file: Path | None = None  # signs session cookies; default: web-secret beside the db
    session_max_age_s: Positive = 12 * 3600
    login_failures_max: Positive = 5  # failed logins per client and user name in login_window_s
    login_window_s: PositiveS = 300.0

    @property
    def listen(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class IngestConfig:
    queue_max: Positive = 50_000  # messages waiting for the writer; then paho's window holds
    batch_max: Positive = 2_000  # messages per transaction
    batch_wait_s: PositiveS = 0.2  # longest a message waits before its batch is written
    offline_after_s: PositiveS = 180.0  # no message for this long: the device is offline
    # `serve --role ingest` workers share the device topics as $share/<share_group>/...
    share_group: str = "litefleet-ingest"


@dataclass(frozen=True)
class RolloutConfig:
    tick_s: PositiveS = 5.0
    device_timeout_s: PositiveS = 1800.0  # silent this long after its wave started: timed out
    deployment_lifetime_s: Positive = 7 * 24 * 3600
    # deltas are made against this many previous releases
    release_history: Annotated[int, Bound(0, message="must be 0 or more")] = 3
    max_artifact_bytes: Positive = 256 * 1024 * 1024
    # the active controller's lease (`serve --role controller`): a standby takes over at most
    # about 4/3 of this after the active one dies
    lease_s: PositiveS = 6.0


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
        paths = [
            ("password_file", t.password_file),
            ("tls_cert", t.tls_cert),
            ("tls_key", t.tls_key),
        ]
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
    """Each table is read by `localio.tomlcheck.read` from its dataclass above (types, choices,
    bounds); the role tables, the artifact store's URL and the files named are checked here."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise CloudConfigInvalid([f"{source}: not valid TOML: {e}"]) from e
    r = TableReader(source)
    base = base_dir or Path.cwd()
    paths = Paths(base, expand_user=True, check_files=False)  # files: _check_mqtt_files

    def section(key: str) -> dict[str, Any]:
        table: dict[str, Any] = r.get(doc, key, dict, {})
        return table

    r.unknown(doc, {"mqtt", "store", "signing", "http", "web", "ingest", "rollout"})
    m = section("mqtt")
    roles: dict[CloudRole, MqttCredentials] = {}
    for role in CloudRole:
        if role.value in m:
            pre = f"mqtt.{role.value}."
            own: dict[str, Any] = r.get(m, role.value, dict, {}, "mqtt.")
            roles[role] = MqttCredentials(**read(r, MqttCredentials, own, pre, paths))
    mqtt = MqttConfig(
        **read(
            r,
            MqttConfig,
            m,
            "mqtt.",
            paths,
            skip={"roles"},
            extra_keys={role.value for role in CloudRole},
        ),
        roles=roles,
    )
    _check_mqtt_files(r, mqtt)

    store = _store(r, section("store"), paths)

    signing = SigningConfig(**read(r, SigningConfig, section("signing"), "signing.", paths))
    http = HttpConfig(**read(r, HttpConfig, section("http"), "http.", paths))
    web = _web(r, section("web"), paths)
    if (
        web.enabled
        and http.enabled
        and web.port == http.port
        and web.port != 0
        and web.host == http.host
    ):
        r.problem(
            "web.listen",
            f"{web.listen} is also [http]'s address (the artifact server): "
            "give one of them another port",
        )
    ingest = IngestConfig(**read(r, IngestConfig, section("ingest"), "ingest.", paths))
    if not ingest.share_group or any(c in ingest.share_group for c in "/+#"):
        r.problem(
            "ingest.share_group",
            f"{ingest.share_group!r} must be a non-empty name without /, + or #",
        )
    rollout = RolloutConfig(**read(r, RolloutConfig, section("rollout"), "rollout.", paths))

    if r.problems:
        raise CloudConfigInvalid(r.problems)
    return CloudConfig(
        mqtt=mqtt,
        store=store,
        signing=signing,
        http=http,
        web=web,
        ingest=ingest,
        rollout=rollout,
        path=path,
    )


def _store(r: TableReader, s: dict[str, Any], paths: Paths) -> StoreConfig:
    """`[store]`: `db = PATH` or `url` (sqlite:///PATH or postgresql://HOST/DB), the artifacts."""
    values = read(r, StoreConfig, s, "store.", paths, skip={"artifacts", "db", "url"})
    db_value: str | None = r.get(s, "db", str, None, "store.")
    db = paths.resolve(db_value) if db_value is not None else None
    url: str | None = r.get(s, "url", str, None, "store.")
    if url is not None and db is not None:
        r.problem("store.url", "set either url or db (db = PATH is sqlite:///PATH), not both")
    if url is not None and url.startswith("sqlite:///"):
        db = paths.resolve(url.removeprefix("sqlite:///"))
    elif url is not None and not url.startswith(("postgresql://", "postgres://")):
        r.problem("store.url", f"{url!r} is neither sqlite:///PATH nor postgresql://HOST/DB")
    if db is None:
        db = paths.base / "cloud.db"
    if url is None or url.startswith("sqlite:"):
        url = f"sqlite:///{db}"
    store = StoreConfig(**values, db=db, url=url, artifacts=_artifacts(r, s, paths))
    if store.public_url is not None:
        if not store.public_url.startswith(("http://", "https://")):
            r.problem("store.public_url", f"{store.public_url!r} is not an http(s) URL")
        store = replace(store, public_url=store.public_url.rstrip("/"))
    return store


def _web(r: TableReader, w: dict[str, Any], paths: Paths) -> WebConfig:
    """`[web]`: its dataclass's keys, but `listen = "HOST:PORT"` for `host` and `port`."""
    values = read(r, WebConfig, w, "web.", paths, extra_keys={"listen"}, not_keys={"host", "port"})
    listen: str = r.get(w, "listen", str, WebConfig().listen, "web.")
    host, sep, port_text = listen.rpartition(":")
    port = WebConfig.port
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        r.problem("web.listen", f"{listen!r} is not HOST:PORT (for example 127.0.0.1:8080)")
    else:
        port = int(port_text)
    host = host.removeprefix("[").removesuffix("]")  # [::1]:8080
    return WebConfig(host=host or WebConfig.host, port=port, **values)


def _artifacts(r: TableReader, store: dict[str, Any], paths: Paths) -> str:
    """`store.artifacts`: a file:///dir (relative to the config) or s3://bucket/prefix URL."""
    artifacts: str | None = r.get(store, "artifacts", str, None, "store.")
    if artifacts is None:
        return (paths.base / "artifacts").as_uri()
    if artifacts.startswith("file://"):
        return paths.resolve(artifacts.removeprefix("file://")).as_uri()
    if artifacts.startswith("s3://"):
        if not artifacts.removeprefix("s3://").split("/", 1)[0]:
            r.problem("store.artifacts", f"{artifacts!r} names no bucket (s3://bucket/prefix)")
    else:
        r.problem("store.artifacts", f"{artifacts!r} is neither file:///dir nor s3://bucket/prefix")
    return artifacts
