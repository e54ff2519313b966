"""`litefleet deploy --wait` beside `serve`'s controller and devices on a real broker: it follows
the rollout wave by wave and its exit code says how the rollout ended."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tests.cloud.test_rollout as rollout_tests
from cloud.cli import main
from shared.messages import UpdateStatus, encode_message
from shared.topics import Channel, topic
from tests.cloud.conftest import CloudEnv
from tests.cloud.test_rollout import PROFILE

fleet = rollout_tests.fleet  # the fixtures of the rollout tests: config, releases, serve, devices
rollout_extra = rollout_tests.rollout_extra

REPO = Path(__file__).resolve().parents[2]
MODEL_BYTES = 4096  # what each simulated device says it downloaded


class DownloadingDevice(rollout_tests.SimulatedDevice):
    """Reports its download's bytes, as the agent does, before the outcome."""

    def _report(self, rollout_id: str, phase: str, version: int, reason: str = "") -> None:
        if phase != "downloading":
            super()._report(rollout_id, phase, version, reason)
            return
        self.seq += 1
        status = UpdateStatus(
            self.device_id,
            self.seq,
            time.time(),
            rollout_id,
            phase,
            "digits",
            version,
            bytes_done=MODEL_BYTES,
            bytes_total=MODEL_BYTES,
            via="full",
        )
        info = self.client.publish(
            topic(self.device_id, Channel.UPDATE), encode_message(status), qos=1
        )
        info.wait_for_publish(10)


@pytest.fixture
def downloading_devices(monkeypatch) -> None:
    monkeypatch.setattr(rollout_tests, "SimulatedDevice", DownloadingDevice)


def deploy_wait(capsys, env: CloudEnv, *extra: str) -> tuple[int, list[dict]]:
    capsys.readouterr()
    code = main(
        [
            "deploy",
            "digits@2",
            "--profile",
            PROFILE,
            "--waves",
            "1,100%",
            "--wait",
            "--json",
            "--config",
            str(env.config),
            *extra,
        ]
    )
    out = capsys.readouterr().out
    return code, [json.loads(line) for line in out.splitlines()]


def test_wait_follows_every_wave_to_committed_and_exits_0(
    downloading_devices, fleet, cloud_env, capsys
) -> None:
    fleet(4, set())
    code, lines = deploy_wait(capsys, cloud_env)
    assert code == 0
    summary, *progress, final = lines
    assert summary["wave_sizes"] == [1, 4]
    assert final["result"] == "completed" and final["state"] == "completed"
    last_waves = progress[-1]["waves"]
    assert [(w["wave"], w["committed"], w["failed"]) for w in last_waves] == [(1, 1, 0), (2, 3, 0)]
    # the bytes the devices reported, per wave (a wave's last line may precede the last report)
    assert max(p["waves"][0]["bytes_done"] for p in progress) == MODEL_BYTES
    assert (
        max(p["waves"][1]["bytes_done"] for p in progress if len(p["waves"]) > 1) == 3 * MODEL_BYTES
    )


def test_wait_exits_1_with_the_reasons_when_the_rollout_pauses(fleet, cloud_env, capsys):
    fleet(3, {0})  # the first wave's only device fails its probation
    code, lines = deploy_wait(capsys, cloud_env)
    assert code == 1
    final = lines[-1]
    assert final["result"] == "stopped" and final["state"] == "paused"
    assert "probation_failed" in final["reason"]
    assert [(f["device_id"], f["reason"]) for f in final["failures"]] == [
        ("dev-00", "probation_failed")
    ]


def test_wait_exits_3_on_timeout_while_the_rollout_runs(fleet, cloud_env, capsys) -> None:
    fleet(2, set(), silent=frozenset({0}))  # the first device never reports
    code, lines = deploy_wait(capsys, cloud_env, "--timeout", "2s")
    assert code == 3
    assert lines[-1]["result"] == "timed_out" and lines[-1]["state"] == "running"
    capsys.readouterr()
    assert main(["rollouts", lines[0]["id"], "--json", "--config", str(cloud_env.config)]) == 0
    assert json.loads(capsys.readouterr().out)[0]["state"] == "running"  # waiting goes on


def test_wait_piped_prints_plain_lines(fleet, cloud_env, capsys) -> None:
    fleet(2, set())
    capsys.readouterr()
    code = main(
        [
            "deploy",
            "digits@2",
            "--profile",
            PROFILE,
            "--waves",
            "1,100%",
            "--wait",
            "--config",
            str(cloud_env.config),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "wave 1: 1 committed, 0 failed, 0 pending of 1" in out
    assert "wave 2: 1 committed, 0 failed, 0 pending of 1" in out
    assert "completed" in out.splitlines()[-1]
    assert "\x1b[" not in out  # no terminal control codes into a pipe


def test_wait_on_a_terminal_draws_a_bar_per_wave(fleet, cloud_env, capsys) -> None:
    fleet(2, set())
    primary, secondary = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "120", "TERM": "xterm"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cloud.cli",
            "deploy",
            "digits@2",
            "--profile",
            PROFILE,
            "--waves",
            "1,100%",
            "--wait",
            "--config",
            str(cloud_env.config),
        ],
        stdout=secondary,
        stderr=subprocess.PIPE,
        env=env,
    )
    out = b""
    try:
        while proc.poll() is None or select.select([primary], [], [], 0.2)[0]:
            if select.select([primary], [], [], 0.2)[0]:
                out += os.read(primary, 65536)
        assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(primary)
        os.close(secondary)
    text = out.decode(errors="replace")
    assert "wave 1" in text and "wave 2" in text and "━" in text  # rich's bars
    assert "1 committed, 0 failed, 0 pending" in text
    assert "completed" in text.splitlines()[-1]
