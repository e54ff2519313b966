"""Helpers for update tests: signing keys, agent configs, a release bench, an artifact server."""

from __future__ import annotations

import hashlib
import http.server
import itertools
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.config import AgentConfig, parse_config
from agent.outbox import Outbox
from agent.store import open_store
from agent.update import Updater
from shared.builders import build_deployment, build_release, package_model
from shared.documents import IOSignature, ProbationPolicy, TensorSpec
from shared.keys import SigningKey
from shared.messages import UpdateStatus, decode_message

REPO = Path(__file__).resolve().parents[3]
MODELS = REPO / "examples" / "models"
DIGITS = MODELS / "digits.tflite"
DIGITS_FT = MODELS / "digits-ft.tflite"
DIGITS_BAD = MODELS / "digits-bad.tflite"
VIBRATION = MODELS / "vibration.tflite"
DEVICE = "cam-01"
PROFILE = "x86-gateway"

DIGITS_IO = IOSignature(
    inputs=(TensorSpec("image", (1, 28, 28, 1), "float32"),),
    outputs=(TensorSpec("probs", (1, 10), "float32"),),
)
VIBRATION_IO = IOSignature(
    inputs=(TensorSpec("window", (1, 64, 3), "float32"),),
    outputs=(TensorSpec("probs", (1, 4), "float32"),),
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_config(
    tmp: Path,
    keys: list[SigningKey],
    *,
    threshold: int = 1,
    initial: Path = DIGITS,
    source: str = "synthetic:image",
    extra: str = "",
) -> Path:
    trusted = ", ".join(f'"{k.public.hex}"' for k in keys)
    path = tmp / "agent.toml"
    path.write_text(f"""
device_id = "{DEVICE}"
profile = "{PROFILE}"
state_dir = "{tmp / "state"}"

[mqtt]
host = "127.0.0.1"
port = 1883

[model]
name = "digits"
initial = "{initial}"

[source]
uri = "{source}"

[trust]
keys = [{trusted}]
threshold = {threshold}

[telemetry]
interval_s = 10
{extra}
""")
    return path


def load(path: Path) -> AgentConfig:
    return parse_config(path.read_text(), str(path), path.parent, path)


class SteppedClock:
    """A monotonic clock the test moves by hand (retries, probation): no waiting on wall time."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Device:
    """An agent's update side, opened on a state dir: config, store, outbox, updater."""

    config: AgentConfig
    updater: Updater
    outbox: Outbox
    db: Any
    changes: list[float] = field(default_factory=list)

    def statuses(self) -> list[UpdateStatus]:
        out = []
        for entry in self.outbox.pending(limit=10_000):
            message = decode_message(entry.payload)
            if isinstance(message, UpdateStatus):
                out.append(message)
        return out

    def last_status(self) -> UpdateStatus:
        return self.statuses()[-1]

    def close(self) -> None:
        self.updater.close()
        self.outbox.close()
        self.db.close()


def open_device(config_path: Path, **kwargs: Any) -> Device:
    config = load(config_path)
    db = open_store(config.state_dir)
    outbox = Outbox(db, config.outbox)
    changes: list[float] = []
    updater = Updater(config, db, outbox, lambda: changes.append(0.0), **kwargs)
    return Device(config, updater, outbox, db, changes)


class Bench:
    """Publishes releases the way the cloud does: artifacts in a folder, signed documents."""

    def __init__(self, root: Path, keys: list[SigningKey], base_url: str | None = None) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.keys = keys
        self.base_url = base_url or f"file://{root}"
        self.now = datetime.now(UTC).replace(microsecond=0)

    def put(self, data: bytes) -> tuple[str, str]:
        digest = sha(data)
        (self.root / digest).write_bytes(data)
        return digest, f"{self.base_url}/{digest}"

    def release(
        self,
        model: bytes,
        version: int,
        *,
        bases: list[bytes] | None = None,
        io: IOSignature = DIGITS_IO,
        profile: str = PROFILE,
        name: str = "digits",
        probation: ProbationPolicy | None = None,
        keys: list[SigningKey] | None = None,
        lifetime: timedelta = timedelta(days=30),
        target_size: int | None = None,
        artifact: bytes | None = None,
        mutate: Any = None,
        level: int = 3,
    ) -> dict[str, Any]:
        packaged = package_model(model, bases or [], level=level)
        full = artifact if artifact is not None else packaged.full
        _, full_url = self.put(full)
        urls = {}
        for data in packaged.deltas.values():
            digest, url = self.put(data)
            urls[digest] = url
        art = packaged.artifact(full_url)
        if artifact is not None:
            art = type(art)(full_url, sha(full), len(full))
        target = packaged.target
        if target_size is not None:
            target = type(target)(target.sha256, target_size)
        env = build_release(
            name=name,
            version=version,
            profile=profile,
            target=target,
            artifact=art,
            io=io,
            keys=keys or self.keys,
            now=self.now,
            deltas=packaged.delta_entries(urls),
            lifetime=lifetime,
            probation=probation,
        )
        if mutate is not None:
            mutate(env["signed"])
            from shared.envelope import sign_envelope

            env = sign_envelope(env["signed"], keys or self.keys)
        return env

    def deployment(
        self,
        release: dict[str, Any],
        *,
        device: str = DEVICE,
        keys: list[SigningKey] | None = None,
        rollout: str = "r1",
        lifetime: timedelta = timedelta(days=1),
    ) -> bytes:
        env = build_deployment(
            release=release,
            device_id=device,
            rollout_id=rollout,
            keys=keys or self.keys,
            now=self.now,
            lifetime=lifetime,
        )
        return json.dumps(env).encode()


class ArtifactServer:
    """A loopback HTTP server with Range support that can drop a connection half-way."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sent = 0
        self.requests: list[tuple[str, str | None]] = []
        self.drop_after: int | None = None  # bytes; applies to the next response only
        self.extra: bytes = b""  # appended to every body (endless data)
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                path = server.root / self.path.lstrip("/").split("?")[0]
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes() + server.extra
                start = 0
                if rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                drop, server.drop_after = server.drop_after, None
                if drop is not None:
                    body = body[:drop]
                self.wfile.write(body)
                server.sent += len(body)
                if drop is not None:
                    self.wfile.flush()
                    self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def keys() -> list[SigningKey]:
    return [SigningKey.generate()]


@pytest.fixture
def artifact_server(tmp_path: Path) -> Iterator[ArtifactServer]:
    server = ArtifactServer(tmp_path / "served")
    server.root.mkdir(parents=True, exist_ok=True)
    yield server
    server.close()


@pytest.fixture
def device_factory() -> Iterator[Any]:
    opened: list[Device] = []

    def make(config_path: Path, **kwargs: Any) -> Device:
        device = open_device(config_path, **kwargs)
        opened.append(device)
        return device

    yield make
    for device in opened:
        device.close()


FRAME_FPS = 5  # the live source's pace in loop tests: one frame every 200 ms (robust on a busy box)
FRAME_INTERVAL_S = 1.0 / FRAME_FPS


class LiveDevice:
    """A device with a real inference loop on a paced synthetic camera, updater attached."""

    def __init__(self, device: Device) -> None:
        import threading

        from agent.loop import build_loop
        from agent.runtime import load_model

        self.device = device
        self.updater = device.updater
        path = device.updater.recover()
        self.stop = threading.Event()
        self.loop = build_loop(device.config, load_model(path), self.stop)
        self.times: list[tuple[float, str]] = []  # (monotonic, model sha) per inference
        self.last_tick = (0.0, 0.0)  # when the tick that settled probation ran
        self.loop.add_listener(lambda r: self.times.append((r.ts, r.model_sha256)))
        self.loop.start()
        self.updater.attach(self.loop)
        self.wait_inferences(5)

    def wait_inferences(self, n: int, timeout: float = 30.0) -> None:
        import time

        target = len(self.times) + n
        deadline = time.monotonic() + timeout
        while len(self.times) < target:
            assert time.monotonic() < deadline, f"only {len(self.times)} inferences"
            time.sleep(0.01)

    def max_gap(self, since: float, until: float | None = None) -> float:
        """The longest stretch without a result that overlaps [since, until]."""
        stamps = [t for t, _ in self.times]
        until = stamps[-1] if until is None else until
        inside = [t for t in stamps if since <= t <= until]
        before = [t for t in stamps if t < since][-1:]
        after = [t for t in stamps if t > until][:1]
        window = before + inside + after
        return max((b - a for a, b in itertools.pairwise(window)), default=0.0)

    def serving(self) -> str:
        return self.loop.model.sha256

    def settle(self, timeout: float = 60.0) -> str:
        """Tick until the update leaves probation; return the journal's phase."""
        import time

        deadline = time.monotonic() + timeout
        while self.updater.probation_active():
            assert time.monotonic() < deadline, "probation did not settle"
            before = time.monotonic()
            self.updater.tick()
            self.last_tick = (before, time.monotonic())
            time.sleep(0.02)
        return self.updater.phase()

    def close(self) -> None:
        self.loop.stop()
        self.loop.model.close()


@pytest.fixture
def live_factory(device_factory: Any) -> Iterator[Any]:
    started: list[LiveDevice] = []

    def make(config_path: Path, **kwargs: Any) -> LiveDevice:
        live = LiveDevice(device_factory(config_path, **kwargs))
        started.append(live)
        return live

    yield make
    for live in started:
        live.close()
