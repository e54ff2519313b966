"""The daemon's periodic jobs: each on its own thread, every `seconds`, never two runs at once.

The agent has a handful of fixed-interval jobs (telemetry, state heartbeat, updater tick,
systemd watchdog). Each gets a thread that sleeps on the stop event until its next run is due,
so a slow job (an update run by the tick) never delays another (the watchdog ping). A run that
ends after its next one was due is followed by one run at once, not by every run it missed.
An exception in a job is logged and the job runs again at its next time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["PeriodicJobs"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Job:
    name: str
    seconds: float
    fn: Callable[[], object]


class PeriodicJobs:
    def __init__(self) -> None:
        self._jobs: list[_Job] = []
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    def every(self, seconds: float, fn: Callable[[], object], name: str) -> None:
        """Run `fn` every `seconds` once started (the first run one interval after start)."""
        if seconds <= 0:
            raise ValueError(f"job {name}: the interval must be positive")
        self._jobs.append(_Job(name, seconds, fn))

    def start(self) -> None:
        for job in self._jobs:
            thread = threading.Thread(
                target=self._run, args=(job,), name=f"job-{job.name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop scheduling and wait (up to `timeout` in all) for runs in progress to end."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _run(self, job: _Job) -> None:
        due = time.monotonic() + job.seconds
        while not self._stop.wait(max(0.0, due - time.monotonic())):
            try:
                job.fn()
            except Exception:
                log.exception("periodic job %s failed", job.name)
            due = max(due + job.seconds, time.monotonic())
