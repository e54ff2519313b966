"""The daemon's periodic jobs: on time, independent of each other, survive their own errors."""

from __future__ import annotations

import threading
import time

import pytest

from agent.periodic import PeriodicJobs


def wait_for(condition, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_slow_or_failing_job_does_not_hold_up_another() -> None:
    jobs = PeriodicJobs()
    release = threading.Event()
    runs = {"slow": 0, "failing": 0, "fast": 0}

    def slow() -> None:
        runs["slow"] += 1
        release.wait(30)

    def failing() -> None:
        runs["failing"] += 1
        raise RuntimeError("boom")

    def fast() -> None:
        runs["fast"] += 1

    jobs.every(0.01, slow, "slow")
    jobs.every(0.01, failing, "failing")
    jobs.every(0.01, fast, "fast")
    jobs.start()
    try:
        wait_for(lambda: runs["fast"] >= 20 and runs["failing"] >= 20)
        assert runs["slow"] == 1  # still in its first run: never two at once
    finally:
        release.set()
        jobs.shutdown()
    stopped = dict(runs)
    time.sleep(0.1)
    assert runs == stopped  # nothing runs after shutdown


def test_an_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        PeriodicJobs().every(0, lambda: None, "never")
