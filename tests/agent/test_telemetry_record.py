"""Telemetry records and events as they land in the outbox (real store, real system figures)."""

from __future__ import annotations

import time
from pathlib import Path

from agent.config import OutboxConfig
from agent.loop import LoopSnapshot
from agent.outbox import Outbox
from agent.store import open_store
from agent.system_metrics import SystemMetrics, read_temperature_c
from agent.telemetry import EventRecorder, TelemetryReporter
from shared.messages import Event, ModelIdentity, TelemetryRecord, decode_message
from shared.topics import Channel

MODEL = ModelIdentity("digits", 0, "ab" * 32)


def snapshot(frames: int) -> LoopSnapshot:
    return LoopSnapshot(
        frames=frames,
        inferences=frames - 1,
        errors=1,
        dropped_frames=2,
        fps=29.5,
        latency_p50_ms=3.0,
        latency_p95_ms=5.0,
        latency_p99_ms=9.0,
        outputs={"kind": "classes", "top": [{"label": "7", "count": 3}]},
        source_status="up",
        heartbeat=time.monotonic(),
        model_sha256=MODEL.sha256,
    )


def thermal(tmp_path: Path, *millidegrees: str) -> Path:
    root = tmp_path / "thermal"
    for i, value in enumerate(millidegrees):
        zone = root / f"thermal_zone{i}"
        zone.mkdir(parents=True)
        (zone / "temp").write_text(value + "\n")
    root.mkdir(exist_ok=True)
    return root


def test_a_record_carries_loop_system_and_outbox_figures(tmp_path: Path) -> None:
    outbox = Outbox(open_store(tmp_path / "state"), OutboxConfig(max_rows=3))
    for _ in range(4):  # one record dropped already
        outbox.append(Channel.EVENTS, lambda s: Event("cam-01", s, time.time(), "source", {}))
    reporter = TelemetryReporter(
        "cam-01",
        outbox,
        SystemMetrics(tmp_path, thermal(tmp_path, "41000", "52500", "junk")),
        lambda: MODEL,
        lambda: snapshot(120),
    )
    seq = reporter.report()
    entry = outbox.pending(seq - 1, 1)[0]
    record = decode_message(entry.payload)
    assert isinstance(record, TelemetryRecord)
    assert record.seq == seq == 5
    assert record.model == MODEL
    assert (record.frames, record.inferences, record.errors, record.dropped_frames) == (
        120,
        119,
        1,
        2,
    )
    assert (record.fps, record.latency_p95_ms, record.source_status) == (29.5, 5.0, "up")
    assert record.outputs["top"][0]["label"] == "7"
    assert record.temperature_c == 52.5  # the hottest readable zone
    assert record.rss_mb > 10 and record.disk_free_mb > 0 and record.uptime_s >= 0
    assert record.outbox_dropped == 2  # this append pushed one more out
    assert record.outbox_depth == 2  # the depth when it was made (before its own row)


def test_no_thermal_zone_means_no_temperature(tmp_path: Path) -> None:
    assert read_temperature_c(thermal(tmp_path)) is None
    assert read_temperature_c(tmp_path / "missing") is None


def test_a_record_without_a_running_loop_still_goes_out(tmp_path: Path) -> None:
    outbox = Outbox(open_store(tmp_path))
    reporter = TelemetryReporter(
        "cam-01", outbox, SystemMetrics(tmp_path), lambda: None, lambda: None
    )
    reporter.report()
    record = decode_message(outbox.pending()[0].payload)
    assert isinstance(record, TelemetryRecord) and record.model is None and record.frames == 0


def test_events_are_queued_bounded_and_written_by_flush(tmp_path: Path) -> None:
    outbox = Outbox(open_store(tmp_path))
    recorder = EventRecorder("cam-01", outbox, max_pending=3)
    for i in range(5):
        recorder.offer("inference", {"class": i})
    assert recorder.dropped == 2
    assert outbox.depth() == 0  # nothing written on the caller's thread
    assert recorder.flush() == 3
    events = [decode_message(e.payload) for e in outbox.pending()]
    assert [e.detail["class"] for e in events if isinstance(e, Event)] == [0, 1, 2]
