"""`litefleet deploy --wait`: follow a rollout until it completes, pauses or fails, or time runs out.

The counts come from the store, which `litefleet serve`'s controller keeps current from the
devices' reports; the bytes come live from the devices' update reports on the broker
(`bytes_done` of their downloads for this rollout). What the operator sees:

    a terminal   one rich progress bar per wave (committed / failed / pending, bytes)
    a pipe       one plain line per wave whenever its counts change
    --json       one JSON object per change, the last with "result"
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from enum import IntEnum
from typing import Any

import paho.mqtt.client as mqtt

from cloud.fleet import rollout_views
from cloud.store import Store
from cloud.store.rollouts import device_rows, state_and_reason
from shared.errors import Rejected
from shared.messages import UpdateStatus, decode_message

__all__ = ["DownloadProgress", "WaitResult", "WaveProgress", "follow_rollout", "wave_progress"]

log = logging.getLogger(__name__)


class WaitResult(IntEnum):
    """The exit codes of `deploy --wait`."""

    COMPLETED = 0
    STOPPED = 1  # paused or aborted: the reasons are printed
    TIMED_OUT = 3


@dataclass(frozen=True)
class WaveProgress:
    wave: int  # from 1
    devices: int
    committed: int
    failed: int
    pending: int  # published, no outcome yet
    waiting: int  # not yet published
    bytes_done: int

    def line(self) -> str:
        return (
            f"wave {self.wave}: {self.committed} committed, {self.failed} failed, "
            f"{self.pending + self.waiting} pending of {self.devices}; "
            f"{self.bytes_done} bytes downloaded"
        )


class DownloadProgress:
    """The highest `bytes_done` each device reported for one rollout (fed by paho's thread)."""

    def __init__(self, rollout_id: str) -> None:
        self.rollout_id = rollout_id
        self._bytes: dict[str, int] = {}
        self._lock = threading.Lock()

    def on_message(self, message: mqtt.MQTTMessage) -> None:
        try:
            status = decode_message(bytes(message.payload))
        except Rejected:
            return  # not ours to judge: the ingester quarantines it
        if isinstance(status, UpdateStatus) and status.rollout_id == self.rollout_id:
            with self._lock:
                done = max(0, min(status.bytes_done, status.bytes_total or status.bytes_done))
                self._bytes[status.device_id] = max(self._bytes.get(status.device_id, 0), done)

    def by_device(self) -> dict[str, int]:
        with self._lock:
            return dict(self._bytes)


def wave_progress(store: Store, rollout_id: str, downloaded: dict[str, int]) -> list[WaveProgress]:
    rows = [(r["device_id"], r["wave"], r["status"]) for r in device_rows(store, rollout_id)]
    waves: dict[int, Counter[str]] = {}
    bytes_by_wave: Counter[int] = Counter()
    for device_id, wave, status in rows:
        waves.setdefault(wave, Counter())[status] += 1
        bytes_by_wave[wave] += downloaded.get(device_id, 0)
    return [
        WaveProgress(
            w + 1,
            sum(c.values()),
            c["committed"],
            c["failed"] + c["timed_out"],
            c["pending"],
            c["waiting"],
            bytes_by_wave[w],
        )
        for w, c in sorted(waves.items())
    ]


def follow_rollout(
    db: Store,
    rollout_id: str,
    downloads: DownloadProgress,
    *,
    timeout_s: float,
    as_json: bool,
    poll_s: float = 0.5,
) -> WaitResult:
    """Follow until the rollout leaves `running` or `timeout_s` passes; print as it goes."""
    view = _Display.make(as_json)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            state, reason = state_and_reason(db, rollout_id)
            waves = wave_progress(db, rollout_id, downloads.by_device())
            view.update(state, waves)
            if state != "running" or time.monotonic() >= deadline:
                break
            time.sleep(poll_s)
    finally:
        view.close()
    if state == "completed":
        result = WaitResult.COMPLETED
    elif state == "running":
        result = WaitResult.TIMED_OUT
        reason = (
            f"still running after {timeout_s:g} s; follow it with `litefleet rollouts {rollout_id}`"
        )
    else:
        result = WaitResult.STOPPED
    failures = rollout_views(db, rollout_id)[0]["failures"]
    view.finish(rollout_id, state, reason, failures, result)
    return result


class _Display:
    """Plain lines (a pipe), JSON lines (--json) or rich bars (a terminal)."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self._last: list[WaveProgress] = []
        self._state = ""

    @staticmethod
    def make(as_json: bool) -> _Display:
        if not as_json and sys.stdout.isatty():
            return _Bars()
        return _Display(as_json)

    def update(self, state: str, waves: list[WaveProgress]) -> None:
        if waves == self._last and state == self._state:
            return
        if self.as_json:
            print(json.dumps({"state": state, "waves": [asdict(w) for w in waves]}))
        else:
            changed = [w for w in waves if w not in self._last]
            for w in changed:
                print(w.line())
        self._last, self._state = waves, state
        sys.stdout.flush()

    def close(self) -> None:
        pass

    def finish(
        self,
        rollout_id: str,
        state: str,
        reason: str,
        failures: list[dict[str, Any]],
        result: WaitResult,
    ) -> None:
        if self.as_json:
            print(
                json.dumps(
                    {
                        "id": rollout_id,
                        "state": state,
                        "reason": reason,
                        "failures": failures,
                        "result": result.name.lower(),
                    }
                )
            )
            return
        outcome = "timed out" if result == WaitResult.TIMED_OUT else state
        print(
            f"rollout {rollout_id} {outcome}: {reason}"
            if reason
            else f"rollout {rollout_id} {outcome}"
        )
        for f in failures:
            detail = f": {f['detail']}" if f.get("detail") else ""
            print(f"  {f['device_id']} (wave {f['wave']}) {f['reason']}{detail}")


class _Bars(_Display):
    """One rich progress bar per wave; the bar counts devices with an outcome."""

    def __init__(self) -> None:
        super().__init__(as_json=False)
        from rich.progress import BarColumn, Progress, TextColumn

        self._progress = Progress(
            TextColumn("wave {task.fields[wave]}"), BarColumn(), TextColumn("{task.fields[text]}")
        )
        self._tasks: dict[int, Any] = {}
        self._progress.start()

    def update(self, state: str, waves: list[WaveProgress]) -> None:
        for w in waves:
            text = (
                f"{w.committed} committed, {w.failed} failed, "
                f"{w.pending + w.waiting} pending, {w.bytes_done} B"
            )
            if w.wave not in self._tasks:
                self._tasks[w.wave] = self._progress.add_task(
                    "", total=w.devices, wave=w.wave, text=text
                )
            self._progress.update(self._tasks[w.wave], completed=w.committed + w.failed, text=text)

    def close(self) -> None:
        self._progress.stop()
