"""A mirror that drips bytes cannot wedge a device.

A loopback HTTP server announces the artifact's full length, then sends one byte at a time
with a pause between them, for ever: no single socket read ever times out. The download ends
by its overall deadline (`[update] download_grace_s` + size / `min_download_rate`) with a
reported `slow_retrieval`; and while it drips, a real agent answers a signed `report-now` and
takes a newer deployment, which cancels the dripping download (reported as `superseded`).
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared.builders import build_deployment, build_release, package_model
from shared.documents import ProbationPolicy
from shared.keys import SigningKey
from shared.messages import UpdatePhase
from tests.agent.test_daemon_inbound import DEVICE, DIGITS_IO, PREFIX, publish, signed_command

from .conftest import DIGITS_BAD, DIGITS_FT, Bench, write_config

DRIP_EVERY_S = 0.3


class DripServer:
    """Serves any path as `size` bytes of which it sends one every `DRIP_EVERY_S`, never all."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.dripping = 0  # connections being dripped into right now
        self.served = 0  # connections that got at least the headers
        self.ended = threading.Event()  # set when a client hung up on a drip
        self._stop = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(server.size))
                self.end_headers()
                server.served += 1
                server.dripping += 1
                try:
                    while not server._stop.wait(DRIP_EVERY_S):
                        self.wfile.write(b"\x28")
                        self.wfile.flush()
                except OSError:
                    server.ended.set()
                finally:
                    server.dripping -= 1

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def drip() -> Iterator[Any]:
    made: list[DripServer] = []

    def make(size: int) -> DripServer:
        made.append(DripServer(size))
        return made[-1]

    yield make
    for server in made:
        server.close()


def test_a_dripping_download_ends_by_its_deadline_and_is_reported(
    tmp_path, keys, device_factory, drip
):
    # deadline = grace + size / rate: a rate far above the drip makes it about 1 s
    config = write_config(
        tmp_path, keys, extra="[update]\nmin_download_rate = 100000000\ndownload_grace_s = 1\n"
    )
    device = device_factory(config)
    device.updater.recover()
    bench = Bench(tmp_path / "artifacts", keys)
    release = bench.release(DIGITS_FT.read_bytes(), 1)
    server = drip(release["signed"]["artifact"]["size"])
    release = bench.release(
        DIGITS_FT.read_bytes(),
        1,
        mutate=lambda s: s["artifact"].update(url=f"{server.url}/artifact"),
    )

    outcome = device.updater.handle_deployment(bench.deployment(release, rollout="r-drip"))
    assert (outcome.phase, outcome.reason) == (UpdatePhase.IDLE, "slow_retrieval"), outcome
    status = device.last_status()
    assert (status.phase, status.reason, status.rollout_id) == ("idle", "slow_retrieval", "r-drip")
    assert "deadline" in status.detail
    assert server.served == 1
    assert server.ended.wait(10), "the device hung up on the drip"


def _deployment(
    key: SigningKey, version: int, url: str, rollout: str, model: bytes, folder: Path | None = None
) -> bytes:
    package = package_model(model, level=3)
    if folder is not None:
        folder.mkdir(exist_ok=True)
        (folder / package.full_sha256).write_bytes(package.full)
        url = f"file://{folder}/{package.full_sha256}"
    now = datetime.now(UTC).replace(microsecond=0)
    release = build_release(
        name="digits",
        version=version,
        profile="x86-gateway",
        target=package.target,
        artifact=package.artifact(url),
        io=DIGITS_IO,
        keys=[key],
        now=now,
        probation=ProbationPolicy(min_inferences=1_000_000, max_duration_s=600),
    )
    return json.dumps(
        build_deployment(release=release, device_id=DEVICE, rollout_id=rollout, keys=[key], now=now)
    ).encode()


def test_while_a_mirror_drips_commands_are_answered_and_a_newer_deployment_takes_over(
    tmp_path, mosquitto, mqtt_subscriber, agent_process, drip
):
    key = SigningKey.generate()
    sub = mqtt_subscriber(mosquitto, [f"{PREFIX}/+"])
    agent = agent_process(
        mosquitto,
        [key.public.hex],
        telemetry_s=3600,
        extra_toml="[update]\ndownload_grace_s = 600\n",
    )
    assert sub.wait_for(
        lambda ms: any(m.topic.endswith("/state") and json.loads(m.payload)["online"] for m in ms),
        30,
    ), agent.log()[-3000:]

    def updates(rollout: str) -> list[dict]:  # type: ignore[type-arg]
        return [
            u
            for u in (json.loads(p) for p in sub.payloads("/update"))
            if u["rollout_id"] == rollout
        ]

    server = drip(len(package_model(DIGITS_BAD.read_bytes(), level=3).full))
    publish(
        mosquitto,
        f"{PREFIX}/desired",
        _deployment(key, 1, f"{server.url}/artifact", "r-slow", DIGITS_BAD.read_bytes()),
        retain=True,
    )
    assert sub.wait_for(
        lambda ms: any(
            u["phase"] == "downloading" and u["bytes_done"] > 0 for u in updates("r-slow")
        ),
        30,
    ), agent.log()[-3000:]

    publish(mosquitto, f"{PREFIX}/cmd", signed_command(key, "report-now"))
    assert sub.wait_for(lambda ms: bool(sub.payloads("/telemetry")), 20), agent.log()[-3000:]
    assert server.dripping == 1  # answered while the download was still dripping

    publish(
        mosquitto,
        f"{PREFIX}/desired",
        _deployment(key, 2, "", "r-new", DIGITS_FT.read_bytes(), tmp_path / "store"),
        retain=True,
    )
    assert sub.wait_for(lambda ms: any(u["phase"] == "probation" for u in updates("r-new")), 60), (
        updates("r-slow"),
        agent.log()[-3000:],
    )
    slow = updates("r-slow")[-1]
    assert (slow["phase"], slow["reason"]) == ("idle", "superseded"), slow
    assert "r-new" in slow["detail"]
    assert server.ended.wait(10), "the superseded download's connection was closed"
    assert not list((agent.state_dir / "downloads").glob("*.part"))  # superseded: deleted

    def answered(ms: object) -> bool:
        events = [json.loads(p) for p in sub.payloads("/events")]
        return any(
            e["kind"] == "command"
            and e["detail"].get("command") == "report-now"
            and e["detail"]["outcome"] == "done"
            for e in events
        )

    assert sub.wait_for(answered, 20), sub.payloads("/events")
    assert agent.alive()
    assert agent.terminate() == 0


def test_the_agent_stops_cleanly_while_a_mirror_drips_and_keeps_the_part(
    mosquitto, mqtt_subscriber, agent_process, drip
):
    key = SigningKey.generate()
    sub = mqtt_subscriber(mosquitto, [f"{PREFIX}/+"])
    agent = agent_process(
        mosquitto,
        [key.public.hex],
        telemetry_s=3600,
        extra_toml="[update]\ndownload_grace_s = 600\n",
    )
    assert sub.wait_for(
        lambda ms: any(m.topic.endswith("/state") and json.loads(m.payload)["online"] for m in ms),
        30,
    ), agent.log()[-3000:]
    server = drip(len(package_model(DIGITS_BAD.read_bytes(), level=3).full))
    publish(
        mosquitto,
        f"{PREFIX}/desired",
        _deployment(key, 1, f"{server.url}/artifact", "r-slow", DIGITS_BAD.read_bytes()),
        retain=True,
    )
    assert sub.wait_for(
        lambda ms: any(
            json.loads(p)["phase"] == "downloading" and json.loads(p)["bytes_done"] > 0
            for p in sub.payloads("/update")
        ),
        30,
    ), agent.log()[-3000:]
    assert server.dripping == 1
    assert agent.terminate(timeout=30) == 0  # not held by the download (a give-up bound)
    parts = list((agent.state_dir / "downloads").glob("*.part"))
    assert len(parts) == 1 and parts[0].stat().st_size > 0  # kept, to resume
