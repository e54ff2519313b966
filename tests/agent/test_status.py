"""`litefleet-agent status`: read from the state dir, with or without a running daemon."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.cli import main
from agent.config import load_config
from agent.outbox import Outbox
from agent.store import open_store
from shared.keys import SigningKey
from shared.messages import TelemetryRecord
from shared.topics import Channel

REPO = Path(__file__).resolve().parents[2]
DIGITS = REPO / "examples" / "models" / "digits.tflite"


def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(f"""
device_id = "cam-01"
profile = "x86-gateway"
state_dir = "{tmp_path / "state"}"
[model]
name = "digits"
initial = "{DIGITS}"
[source]
uri = "synthetic:image"
[trust]
keys = ["{"ab" * 32}"]
""")
    return path


def status_json(path: Path, capsys: pytest.CaptureFixture[str]) -> dict:  # type: ignore[type-arg]
    assert main(["status", "--config", str(path), "--json"]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_status_of_a_device_that_never_ran(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = status_json(config_file(tmp_path), capsys)
    assert report["device_id"] == "cam-01"
    assert report["model"] == {
        "name": "digits",
        "version": 0,
        "sha256": hashlib.sha256(DIGITS.read_bytes()).hexdigest(),
    }
    assert report["journal"] == {"phase": "idle"}
    assert report["outbox"]["depth"] == 0 and report["outbox"]["dropped"] == 0
    assert report["last_publish"] is None


def test_status_shows_the_outbox_and_the_last_publish(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config_file(tmp_path)
    config = load_config(path)
    outbox = Outbox(open_store(config.state_dir))
    for _ in range(5):
        outbox.append(Channel.TELEMETRY, lambda s: TelemetryRecord("cam-01", s, time.time()))
    outbox.remove([1, 2])
    report = status_json(path, capsys)
    assert report["outbox"]["depth"] == 3 and report["outbox"]["last_seq"] == 5
    assert report["last_publish"] is not None and report["last_publish"].endswith("Z")
    assert main(["status", "--config", str(path)]) == 0
    text = capsys.readouterr().out
    assert "3 record(s) waiting" in text and "digits v0" in text


def test_status_while_the_daemon_runs_and_its_broker_is_away(  # type: ignore[no-untyped-def]
    tmp_path: Path, mosquitto, agent_process
) -> None:
    mosquitto.stop()
    agent = agent_process(mosquitto, [SigningKey.generate().public.hex], telemetry_s=0.05)

    def status() -> dict:  # type: ignore[type-arg]
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "agent.cli",
                "status",
                "--config",
                str(agent.config_path),
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
            check=True,
        ).stdout
        return json.loads(out)  # type: ignore[no-any-return]

    deadline = time.monotonic() + 60
    while agent.last_seq() < 20 and time.monotonic() < deadline:
        time.sleep(0.1)
    offline = status()
    assert offline["outbox"]["depth"] >= 20 and offline["last_publish"] is None
    mosquitto.start()
    deadline = time.monotonic() + 60
    online = status()

    def drained() -> bool:  # published, and the backlog is going (new records keep coming)
        return online["last_publish"] is not None and (
            online["outbox"]["depth"] < offline["outbox"]["depth"]
        )

    while not drained() and time.monotonic() < deadline:
        time.sleep(0.2)
        online = status()
    assert online["last_publish"] is not None
    assert online["outbox"]["depth"] < offline["outbox"]["depth"]
    assert agent.alive()
