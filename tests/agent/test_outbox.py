"""The durable outbox on a real SQLite file: seq, order, bounds, drops, crash safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.config import OutboxConfig
from agent.outbox import Outbox, read_outbox_stats
from agent.store import open_store
from shared.errors import PayloadTooLarge
from shared.messages import DeviceState, Event, TelemetryRecord, decode_message
from shared.topics import Channel


def telemetry(outbox: Outbox, **extra: Any) -> Callable[[int], TelemetryRecord]:
    def make(seq: int) -> TelemetryRecord:
        return TelemetryRecord(
            device_id="dev-1", seq=seq, ts=time.time(), outbox_dropped=outbox.dropped, **extra
        )

    return make


def open_outbox(state_dir: Path, **limits: object) -> Outbox:
    return Outbox(open_store(state_dir), OutboxConfig(**limits))  # type: ignore[arg-type]


def test_append_assigns_increasing_seq_and_stores_the_encoded_record(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path)
    seqs = [outbox.append(Channel.TELEMETRY, telemetry(outbox, frames=i)) for i in range(5)]
    seqs.append(
        outbox.append(Channel.EVENTS, lambda s: Event("dev-1", s, time.time(), "source", {"up": 1}))
    )
    assert seqs == [1, 2, 3, 4, 5, 6]
    entries = outbox.pending()
    assert [e.seq for e in entries] == seqs
    assert [e.channel for e in entries] == [Channel.TELEMETRY] * 5 + [Channel.EVENTS]
    records = [decode_message(e.payload) for e in entries]
    assert [r.frames for r in records[:5]] == [0, 1, 2, 3, 4]  # type: ignore[union-attr]
    assert isinstance(records[5], Event) and records[5].detail == {"up": 1}
    assert outbox.depth() == 6
    # the rows are really in the file
    db = open_store(tmp_path)
    assert db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 6


def test_pending_is_oldest_first_and_remove_deletes_acked_rows(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path)
    for _ in range(10):
        outbox.append(Channel.TELEMETRY, telemetry(outbox))
    assert [e.seq for e in outbox.pending(after_seq=3, limit=4)] == [4, 5, 6, 7]
    assert outbox.stats().last_publish is None
    assert outbox.remove([1, 2, 5, 99]) == 3
    assert [e.seq for e in outbox.pending()] == [3, 4, 6, 7, 8, 9, 10]
    assert outbox.depth() == 7
    assert outbox.stats().last_publish is not None
    stats = read_outbox_stats(open_store(tmp_path))
    assert (stats.depth, stats.last_seq, stats.dropped) == (7, 10, 0)
    assert stats.bytes == sum(len(e.payload) for e in outbox.pending())


def test_seq_is_persisted_and_never_reused_after_the_outbox_empties(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path)
    for _ in range(3):
        outbox.append(Channel.TELEMETRY, telemetry(outbox))
    outbox.remove([1, 2, 3])
    outbox.close()
    reopened = open_outbox(tmp_path)
    assert reopened.depth() == 0
    assert reopened.append(Channel.TELEMETRY, telemetry(reopened)) == 4


def test_row_bound_drops_oldest_and_the_next_record_carries_the_count(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path, max_rows=10)
    for _ in range(100):
        outbox.append(Channel.TELEMETRY, telemetry(outbox))
    entries = outbox.pending(limit=1000)
    assert [e.seq for e in entries] == list(range(91, 101))
    assert outbox.depth() == 10
    assert outbox.dropped == 90
    last = decode_message(entries[-1].payload)
    assert isinstance(last, TelemetryRecord) and last.outbox_dropped == 90
    # the count survives a restart
    outbox.close()
    assert open_outbox(tmp_path, max_rows=10).dropped == 90


def test_byte_bound_drops_oldest(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path, max_bytes=4000)
    for _ in range(200):
        outbox.append(Channel.TELEMETRY, telemetry(outbox, outputs={"pad": "x" * 100}))
    stats = outbox.stats()
    assert stats.bytes <= 4000
    assert stats.depth + stats.dropped == 200
    assert stats.dropped > 150
    on_disk = open_store(tmp_path).execute("SELECT SUM(size), COUNT(*) FROM outbox").fetchone()
    assert tuple(on_disk) == (stats.bytes, stats.depth)
    assert [e.seq for e in outbox.pending(limit=1000)] == list(range(201 - stats.depth, 201))


def test_a_failing_make_consumes_no_seq_and_stores_nothing(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path)
    outbox.append(Channel.TELEMETRY, telemetry(outbox))

    def broken(seq: int) -> TelemetryRecord:
        raise RuntimeError("sensor read failed")

    with pytest.raises(RuntimeError):
        outbox.append(Channel.TELEMETRY, broken)
    with pytest.raises(ValueError, match="seq=2"):
        outbox.append(Channel.TELEMETRY, lambda s: TelemetryRecord("dev-1", s + 1, 0.0))
    with pytest.raises(PayloadTooLarge):
        outbox.append(Channel.TELEMETRY, telemetry(outbox, outputs={"big": "x" * 100_000}))
    with pytest.raises(ValueError, match="does not go through the outbox"):
        outbox.append(Channel.STATE, lambda s: DeviceState("dev-1", True, 0.0))
    assert outbox.append(Channel.TELEMETRY, telemetry(outbox)) == 2
    assert [e.seq for e in outbox.pending()] == [1, 2]


def test_concurrent_appends_get_unique_contiguous_seqs(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path)
    got: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(200):
            seq = outbox.append(Channel.TELEMETRY, telemetry(outbox))
            with lock:
                got.append(seq)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1, 801))
    assert [e.seq for e in outbox.pending(limit=1000)] == list(range(1, 801))


def test_a_process_killed_mid_append_leaves_a_consistent_outbox(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from agent.outbox import Outbox
        from agent.store import open_store
        from shared.messages import TelemetryRecord
        from shared.topics import Channel
        outbox = Outbox(open_store(Path({str(tmp_path)!r})))
        n = 0
        while True:
            outbox.append(Channel.TELEMETRY, lambda s: TelemetryRecord("dev-1", s, time.time()))
            n += 1
            if n == 200:
                print("ready", flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    outbox = open_outbox(tmp_path)
    seqs = [e.seq for e in outbox.pending(limit=10**7)]
    assert len(seqs) >= 200
    assert seqs == list(range(1, len(seqs) + 1))
    for entry in outbox.pending(after_seq=len(seqs) - 5):
        json.loads(entry.payload)  # every committed row is whole
    assert outbox.append(Channel.TELEMETRY, telemetry(outbox)) == len(seqs) + 1


def test_rows_in_flight_are_never_dropped(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path, max_rows=5)
    for _ in range(5):
        outbox.append(Channel.TELEMETRY, telemetry(outbox))
    in_flight = [e.seq for e in outbox.pending(0, 2, hold=True)]
    assert in_flight == [1, 2]
    outbox.append(Channel.TELEMETRY, telemetry(outbox))
    # the oldest row not in flight went, so `dropped` counts only records never sent
    assert [e.seq for e in outbox.pending(limit=100)] == [1, 2, 4, 5, 6]
    assert outbox.dropped == 1
    outbox.remove([1, 2])  # acknowledged: the holds go with the rows
    for _ in range(3):
        outbox.append(Channel.TELEMETRY, telemetry(outbox))
    assert [e.seq for e in outbox.pending(limit=100)] == [5, 6, 7, 8, 9]
    assert outbox.dropped == 2
