"""Shared test fixtures: a real Mosquitto broker per test.

`mosquitto` is a broker on a free loopback port with a generated config and persistence on (in
the test's tmp dir). It can be stopped gracefully, killed with SIGKILL and started again on the
same port, so durability tests see a broker that really goes down:

    def test_x(mosquitto):
        mosquitto.host, mosquitto.port
        mosquitto.stop()      # SIGTERM: the broker saves its persistence file and exits
        mosquitto.kill()      # SIGKILL: whatever it had not saved yet is gone
        mosquitto.start()     # same port, same persistence file
        mosquitto.restart()   # stop() + start()
        mosquitto.freeze()    # SIGSTOP (thaw() resumes): up, but acknowledging nothing

`mqtt_subscriber(broker, topics, ...)` connects a real paho subscriber (QoS 1, optionally a
persistent session) that records every message; `.wait_for(predicate, timeout)` polls it.

`mosquitto_factory(extra_config)` starts more brokers with extra config lines (ACLs, TLS
listeners, password files; `{port}` in the text becomes the broker's port, and a config with its
own `listener` line replaces the default plain listener); each is killed at the end of the test.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

MOSQUITTO_CANDIDATES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in MOSQUITTO_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Mosquitto:
    """One real mosquitto process on a fixed loopback port, restartable."""

    def __init__(self, workdir: Path, extra_config: str = "", port: int | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(exist_ok=True)
        self.log_path = workdir / "mosquitto.log"
        self.config_path = workdir / "mosquitto.conf"
        self.extra_config = extra_config
        self.process: subprocess.Popen[bytes] | None = None
        self._write_config()

    def _write_config(self) -> None:
        has_listener = any(
            line.strip().startswith("listener") for line in self.extra_config.splitlines()
        )
        lines = [
            "per_listener_settings false",
            "persistence true",
            f"persistence_location {self.data_dir}/",
            "persistence_file mosquitto.db",
            "autosave_interval 1",
            "max_queued_messages 0",  # unlimited: the tests count every message
            "max_queued_bytes 0",
            "max_inflight_messages 100",
            "message_size_limit 0",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp true",
            # run as whoever runs the tests (as root, mosquitto would switch to `mosquitto`
            # and could not write into the test's tmp dir)
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
        ]
        if not has_listener:
            lines.append(f"listener {self.port} {self.host}")
        if "allow_anonymous" not in self.extra_config:
            lines.append("allow_anonymous true")
        extra = self.extra_config.replace("{port}", str(self.port))
        self.config_path.write_text("\n".join(lines) + "\n" + extra + "\n")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        self.process = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=self.workdir,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = (
                    self.process.stderr.read().decode(errors="replace")
                    if self.process.stderr
                    else ""
                )
                log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
                raise RuntimeError(f"mosquitto exited at start: {err}\n{log[-2000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"mosquitto did not listen on {self.host}:{self.port} in {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful: SIGTERM, mosquitto writes its persistence file and exits."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close()

    def kill(self) -> None:
        """SIGKILL: anything not yet autosaved is lost, as in a power cut of the broker."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._close()

    def restart(self) -> None:
        self.stop()
        self.start()

    def freeze(self) -> None:
        """SIGSTOP: connections stay open but nothing is read or acknowledged."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def _close(self) -> None:
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    brokers: list[Mosquitto] = []

    def make(extra_config: str = "", port: int | None = None) -> Mosquitto:
        broker = Mosquitto(tmp_path / f"mosquitto-{len(brokers)}", extra_config, port)
        brokers.append(broker)
        broker.start()
        return broker

    yield make
    for broker in brokers:
        broker.kill()


@pytest.fixture
def mosquitto(mosquitto_factory: Callable[..., Mosquitto]) -> Mosquitto:
    """A fresh broker for this test, on a free loopback port, persistence on."""
    return mosquitto_factory()


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    dup: bool


class Subscriber:
    """A real paho subscriber that records what it receives (QoS 1, auto-reconnecting)."""

    def __init__(
        self,
        broker: Mosquitto,
        topics: list[str],
        persistent: bool = False,
        client_id: str | None = None,
    ) -> None:
        self.topics = topics
        self.messages: list[Received] = []
        self.connects = 0
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"sub-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self._client.reconnect_delay_set(1, 1)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        properties = None
        if persistent:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = 3600
        self._client.connect_async(
            broker.host, broker.port, 30, clean_start=not persistent, properties=properties
        )
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("test subscriber could not subscribe")

    def _on_connect(self, client, userdata, flags, reason_code, properties):  # type: ignore[no-untyped-def]
        if reason_code.is_failure:
            return
        self.connects += 1
        client.subscribe([(t, 1) for t in self.topics])

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):  # type: ignore[no-untyped-def]
        self._subscribed.set()

    def _on_message(self, client, userdata, message):  # type: ignore[no-untyped-def]
        with self._lock:
            self.messages.append(
                Received(
                    message.topic, bytes(message.payload), bool(message.retain), bool(message.dup)
                )
            )

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.messages)

    def payloads(self, topic_suffix: str = "") -> list[bytes]:
        return [m.payload for m in self.snapshot() if m.topic.endswith(topic_suffix)]

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.snapshot()):
                return True
            time.sleep(0.02)
        return predicate(self.snapshot())

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture
def mqtt_subscriber() -> Iterator[Callable[..., Subscriber]]:
    made: list[Subscriber] = []

    def make(
        broker: Mosquitto, topics: list[str], persistent: bool = False, client_id: str | None = None
    ) -> Subscriber:
        sub = Subscriber(broker, topics, persistent, client_id)
        made.append(sub)
        return sub

    yield make
    for sub in made:
        sub.close()


REPO = Path(__file__).resolve().parents[1]
DIGITS_MODEL = REPO / "examples" / "models" / "digits.tflite"


class AgentProcess:
    """A real `litefleet-agent run` process with a generated config, restartable.

    `extra_toml` is appended to the config (more tables, e.g. `[outbox]`); `telemetry_s`,
    `heartbeat_s` and `source` set the usual test knobs.
    """

    def __init__(
        self,
        workdir: Path,
        broker: Mosquitto,
        trusted_keys: list[str],
        *,
        device_id: str = "dev-1",
        telemetry_s: float = 10.0,
        heartbeat_s: float = 30.0,
        source: str = "synthetic:image?fps=10",
        extra_toml: str = "",
    ) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.device_id = device_id
        self.state_dir = workdir / "state"
        self.config_path = workdir / "agent.toml"
        self.log_path = workdir / "agent.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        keys = ", ".join(f'"{k}"' for k in trusted_keys)
        self.config_path.write_text(f"""\
device_id = "{device_id}"
profile = "x86-gateway"
state_dir = "{self.state_dir}"
log_format = "text"

[mqtt]
host = "{broker.host}"
port = {broker.port}
reconnect_min_s = 0.2
reconnect_max_s = 1.0

[model]
name = "digits"
initial = "{DIGITS_MODEL}"

[source]
uri = "{source}"

[trust]
keys = [{keys}]

[telemetry]
interval_s = {telemetry_s}
heartbeat_s = {heartbeat_s}
{extra_toml}
""")

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"---- start {self.starts}\n".encode())
            self.process = subprocess.Popen(
                [sys.executable, "-m", "agent.cli", "run", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def last_seq(self) -> int:
        """The highest seq the agent has stored (read from its store while it runs)."""
        import sqlite3

        path = self.state_dir / "agent.db"
        if not path.exists():
            return 0
        conn = sqlite3.connect(str(path), timeout=10)
        try:
            row = conn.execute("SELECT value FROM outbox_meta WHERE key = 'last_seq'").fetchone()
        except sqlite3.OperationalError:
            return 0
        finally:
            conn.close()
        return int(row[0]) if row else 0


@pytest.fixture
def agent_process(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    """`agent_process(broker, trusted_keys, **options)` -> a started `AgentProcess`."""
    made: list[AgentProcess] = []

    def make(
        broker: Mosquitto, trusted_keys: list[str], start: bool = True, **options: Any
    ) -> AgentProcess:
        proc = AgentProcess(tmp_path / f"agent-{len(made)}", broker, trusted_keys, **options)
        made.append(proc)
        if start:
            proc.start()
        return proc

    yield make
    for proc in made:
        if proc.alive():
            try:
                proc.resume()
            except ProcessLookupError:
                pass
            proc.kill()


# --- a real browser: Debian's headless Chromium driven by Playwright (tests/browser.py) ------


@pytest.fixture
def browser() -> Iterator[Any]:
    from tests.browser import chromium

    with chromium() as b:
        yield b


# --- PostgreSQL: one server per test session, a fresh database per test ---------------------

from postgres_server import PostgresServer, postgres_bin  # noqa: E402


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of its own (initdb in a temp folder, a free loopback port). `.ci/run`
    installs Debian's postgresql; a machine without it fails here, naming the package."""
    bindir = postgres_bin()
    if bindir is None:
        pytest.fail("PostgreSQL is not installed: apt-get install postgresql (`.ci/run` does)")
    server = PostgresServer(bindir)
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, migrated store on each backend: `sqlite:///...` or `postgresql://...`."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store' / 'cloud.db'}"
    else:
        url = request.getfixturevalue("postgres").create_database()
    from cloud.store import open_store
    from cloud.store.migrate import migrate

    store = open_store(url) if request.param == "sqlite" else _migrated(url, migrate)
    store.close()
    return url


def _migrated(url: str, migrate: Any) -> Any:
    from cloud.store.engine import Store, engine_url

    store = Store(engine_url(url))
    migrate(store)
    return store
