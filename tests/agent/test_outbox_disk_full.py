"""A full disk under a running agent: telemetry is held in memory, then stored and delivered.

A real agent process whose state dir is a small tmpfs, a real mosquitto and subscriber. The
tmpfs is filled to the last byte while the agent runs, then freed. Records measured while the
disk was full arrive once it has room again (with seqs that continue without a gap), or, past
`[outbox] memory_rows`, are counted in `outbox_dropped`; the log says so at most once a minute
and holds no traceback. Needs root (mount); skipped otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from shared.keys import SigningKey

DEVICE = "dev-1"
REFUSED = "the disk refuses outbox writes"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mount") is None, reason="mounting a tmpfs needs root"
)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def fill(folder: Path) -> Path:
    """Write zeros into `folder` until its file system refuses more; the filler file."""
    filler = folder / "filler"
    block = b"\0" * 4096
    with filler.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(block)
        except OSError:
            pass
    with (folder / "filler2").open("wb", buffering=0) as f:  # the last partial block
        try:
            while True:
                f.write(b"\0")
        except OSError:
            pass
    return filler


@pytest.fixture
def small_state_dir(tmp_path: Path):  # type: ignore[no-untyped-def]
    state = tmp_path / "agent-0" / "state"
    state.mkdir(parents=True)
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(state)],
            check=True,
            capture_output=True,
        )
    except (subprocess.CalledProcessError, OSError) as e:
        pytest.skip(f"cannot mount a tmpfs here: {e}")
    yield state
    subprocess.run(["umount", "-l", str(state)], check=False)


def telemetry(sub) -> list[dict]:  # type: ignore[no-untyped-def]
    return [json.loads(m.payload) for m in sub.snapshot() if m.topic.endswith("/telemetry")]


@pytest.mark.parametrize("memory_rows", [1000, 5])
def test_records_made_while_the_disk_is_full_arrive_or_count_as_dropped(  # type: ignore[no-untyped-def]
    mosquitto, mqtt_subscriber, agent_process, small_state_dir: Path, memory_rows: int
) -> None:
    sub = mqtt_subscriber(
        mosquitto,
        [f"litefleet/v1/devices/{DEVICE}/+"],
        persistent=True,
        client_id="disk-full-subscriber",
    )
    agent = agent_process(
        mosquitto,
        [SigningKey.generate().public.hex],
        telemetry_s=0.2,
        start=False,
        extra_toml=f"[outbox]\nmemory_rows = {memory_rows}\n",
    )
    assert agent.state_dir == small_state_dir
    agent.start()
    wait_until(lambda: len(telemetry(sub)) >= 5, 60, "telemetry before the disk fills")

    filler = fill(small_state_dir)
    full_from = time.time()
    wait_until(lambda: REFUSED in agent.log(), 60, "the agent noticing the full disk")
    noticed = time.time()
    time.sleep(3.0)  # records keep being measured while the disk stays full
    filler.unlink()
    (small_state_dir / "filler2").unlink()
    full_until = time.time()

    def measured_while_full() -> list[dict]:
        return [r for r in telemetry(sub) if noticed < r["ts"] < full_until]

    wait_until(
        lambda: any(r["ts"] > full_until + 1 for r in telemetry(sub)),
        60,
        "telemetry after the disk has room again",
    )
    records = telemetry(sub)
    seqs = sorted(
        {json.loads(m.payload)["seq"] for m in sub.snapshot() if not m.topic.endswith("/state")}
    )  # every outbox channel shares the seqs
    assert seqs == list(range(seqs[0], seqs[-1] + 1)), "a gap in the seqs"
    held = measured_while_full()
    assert held, "no record measured while the disk was full arrived"
    after = [r for r in records if r["ts"] > full_until + 1]
    if memory_rows == 5:
        assert len(held) <= memory_rows + 1  # at most the ring (and one stored at the edge)
        assert after[0]["outbox_dropped"] > 0
    else:
        assert after[0]["outbox_dropped"] == 0

    log = agent.log()
    minutes = (time.time() - full_from) / 60
    assert log.count(REFUSED) <= 1 + int(minutes)
    assert "the disk takes outbox writes again" in log
    assert "Traceback" not in log
    assert agent.terminate() == 0
