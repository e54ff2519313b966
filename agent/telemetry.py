"""Telemetry records: the loop's figures, the system's, and the outbox's, every interval.

`TelemetryReporter.report()` builds one `TelemetryRecord` inside the outbox transaction that
assigns its seq (so `outbox_dropped` counts every record this append pushed out) and returns
the seq. `EventRecorder` turns the loop's events (inference over threshold, source up/down) into
`Event` records: the loop hands them over on its own thread and they are written to the outbox
from the scheduler, off the hot path, through a bounded queue. Its `flush` (every second) also
lets the outbox store the records it held in memory while the disk was full.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable
from typing import Any

from agent.loop import LoopSnapshot
from agent.outbox import Outbox
from agent.system_metrics import SystemMetrics
from shared.fields import FreeObject
from shared.messages import DriftSummary, Event, ModelIdentity, TelemetryRecord
from shared.topics import Channel

__all__ = ["EventRecorder", "TelemetryReporter"]

log = logging.getLogger(__name__)


class TelemetryReporter:
    def __init__(
        self,
        device_id: str,
        outbox: Outbox,
        system: SystemMetrics,
        model: Callable[[], ModelIdentity | None],
        loop_figures: Callable[[], LoopSnapshot | None],
        drift: Callable[[], DriftSummary | None] = lambda: None,
    ) -> None:
        self.device_id = device_id
        self.outbox = outbox
        self.system = system
        self._model = model
        self._loop_figures = loop_figures
        self._drift = drift

    def report(self) -> int:
        """Append one telemetry record to the outbox; return its seq (0: held in memory)."""
        figures = self._loop_figures()
        model = self._model()
        sample = self.system.sample()
        drift = self._drift()
        ts = time.time()  # when measured; the record may reach the disk later (disk full)

        def make(seq: int) -> TelemetryRecord:
            loop: dict[str, Any] = {}
            if figures is not None:
                loop = {
                    "frames": figures.frames,
                    "inferences": figures.inferences,
                    "errors": figures.errors,
                    "dropped_frames": figures.dropped_frames,
                    "fps": float(figures.fps),
                    "latency_p50_ms": float(figures.latency_p50_ms),
                    "latency_p95_ms": float(figures.latency_p95_ms),
                    "latency_p99_ms": float(figures.latency_p99_ms),
                    "outputs": dict(figures.outputs),
                    "source_status": figures.source_status,
                }
            return TelemetryRecord(
                device_id=self.device_id,
                seq=seq,
                ts=ts,
                model=model,
                cpu_percent=sample.cpu_percent,
                rss_mb=sample.rss_mb,
                temperature_c=sample.temperature_c,
                disk_free_mb=sample.disk_free_mb,
                outbox_depth=self.outbox.depth(),
                outbox_dropped=self.outbox.dropped,
                uptime_s=sample.uptime_s,
                drift=drift,
                **loop,
            )

        return self.outbox.append(Channel.TELEMETRY, make)


class EventRecorder:
    """Loop events in (any thread, never blocks), `Event` records out (`flush`, scheduler)."""

    def __init__(self, device_id: str, outbox: Outbox, max_pending: int = 256) -> None:
        self.device_id = device_id
        self.outbox = outbox
        self.dropped = 0
        self._pending: queue.Queue[tuple[float, str, FreeObject]] = queue.Queue(max_pending)

    def offer(self, kind: str, detail: FreeObject) -> None:
        try:
            self._pending.put_nowait((time.time(), kind, dict(detail)))
        except queue.Full:
            self.dropped += 1
            log.warning("event queue full; dropped a %s event (%s so far)", kind, self.dropped)

    def flush(self) -> int:
        """Write the queued events; first, store what the outbox holds in memory (disk full)."""
        self.outbox.retry()
        written = 0
        while True:
            try:
                ts, kind, detail = self._pending.get_nowait()
            except queue.Empty:
                return written
            try:
                self.outbox.append(Channel.EVENTS, _event_maker(self.device_id, ts, kind, detail))
                written += 1
            except Exception:
                log.exception("could not store a %s event", kind)


def _event_maker(
    device_id: str, ts: float, kind: str, detail: FreeObject
) -> Callable[[int], Event]:
    return lambda seq: Event(device_id, seq, ts, kind, detail)
