"""`litefleet telemetry` over time, on both backends: per-device means per bucket from the
per-minute rollup (a week's window reads no records), and a follow that prints a record
which committed behind its cursor, once."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from cloud.cli import main
from cloud.ingest import IngestStats, write_batch
from cloud.store import Store, open_store
from cloud.store.records import telemetry_since
from cloud.telemetry import TelemetryFollower, telemetry_buckets
from shared.messages import TelemetryRecord, encode_message

HOUR = 3600


def write(store: Store, *records: TelemetryRecord, now: float) -> None:
    """Through ingest's own write path (the rollup is kept there)."""
    with store.begin() as conn:
        write_batch(conn, [(r, encode_message(r)) for r in records], now, IngestStats())


def rec(device: str, seq: int, ts: float, fps: float, p95: float) -> TelemetryRecord:
    return TelemetryRecord(device, seq, ts, fps=fps, latency_p95_ms=p95)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    yield s
    s.close()


@pytest.fixture
def config(store_url: str, tmp_path: Path) -> Path:
    path = tmp_path / "cloud.toml"
    path.write_text(f'[store]\nurl = "{store_url}"\n')
    return path


def two_days_ago(store: Store) -> float:
    """Two hours of two devices, two days back; the first hour starts at `base`."""
    base = math.floor((time.time() - 2 * 86400) / HOUR) * HOUR
    first = [
        rec("cam-1", 1, base + 1, 10.0, 1.0),
        rec("cam-1", 2, base + 20, 20.0, 2.0),
        rec("cam-1", 3, base + 59, 30.0, 3.0),
        rec("cam-2", 1, base + 30, 7.0, 70.0),
        rec("cam-1", 4, base + 5 * 60 + 1, 40.0, 4.0),
    ]
    write(store, *first, now=base + 100)
    # a redelivery of the first with the rest: each record counts once
    write(
        store,
        first[0],
        rec("cam-1", 5, base + 5 * 60 + 2, 60.0, 6.0),
        rec("cam-1", 6, base + HOUR + 3, 5.0, 0.5),
        now=base + HOUR + 10,
    )
    return base


def means(rows: list[dict[str, object]]) -> list[tuple[object, ...]]:
    return [
        (
            r["ts"],
            r["device_id"],
            r["records"],
            pytest.approx(r["fps"]),
            pytest.approx(r["latency_p95_ms"]),
        )
        for r in rows
    ]


def test_the_rollup_gives_per_minute_and_per_hour_means_and_pages(store: Store) -> None:
    base = two_days_ago(store)
    minutes = [r for _, r in telemetry_buckets(store, base - 10, 60)]
    assert means(minutes) == [
        (base, "cam-1", 3, 20.0, 2.0),
        (base, "cam-2", 1, 7.0, 70.0),
        (base + 300, "cam-1", 2, 50.0, 5.0),
        (base + HOUR, "cam-1", 1, 5.0, 0.5),
    ]
    hours = [r for _, r in telemetry_buckets(store, base - 10, HOUR)]
    assert means(hours) == [
        (base, "cam-1", 5, 32.0, 3.2),
        (base, "cam-2", 1, 7.0, 70.0),
        (base + HOUR, "cam-1", 1, 5.0, 0.5),
    ]
    assert {r["every_s"] for r in hours} == {HOUR}
    # one device; and pages that follow on from a cursor
    assert [r["ts"] for _, r in telemetry_buckets(store, base - 10, HOUR, "cam-2")] == [base]
    first = telemetry_buckets(store, base - 10, HOUR, limit=2)
    rest = telemetry_buckets(store, base - 10, HOUR, after=first[-1][0], limit=2)
    assert [r for _, r in first + rest] == hours
    # from `since` on: the first hour's minutes before it are left out
    assert means([r for _, r in telemetry_buckets(store, base + 60, HOUR)])[0] == (
        base,
        "cam-1",
        2,
        50.0,
        5.0,
    )
    with pytest.raises(ValueError, match="whole number of minutes"):
        telemetry_buckets(store, base, 90)


def telemetry(config: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["telemetry", *args, "--config", str(config)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_week_window_reads_the_rollup_and_raw_reads_records(
    store: Store, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = two_days_ago(store)
    code, out, err = telemetry(config, capsys, "--since", "7d", "--json")
    assert code == 0, err
    week = json.loads(out)
    assert means(week) == [
        (base, "cam-1", 5, 32.0, 3.2),
        (base, "cam-2", 1, 7.0, 70.0),
        (base + HOUR, "cam-1", 1, 5.0, 0.5),
    ]
    code, out, _ = telemetry(config, capsys, "--since", "7d", "--every", "1m", "--json")
    assert [(r["ts"], r["records"]) for r in json.loads(out)] == [
        (base, 3),
        (base, 1),
        (base + 300, 2),
        (base + HOUR, 1),
    ]
    code, out, _ = telemetry(config, capsys, "--since", "7d", "--raw", "--json")
    assert sorted((r["device_id"], r["seq"]) for r in json.loads(out)) == [
        *(("cam-1", s) for s in range(1, 7)),
        ("cam-2", 1),
    ]

    with store.begin() as conn:  # the records go; the rollup stays
        conn.execute(text("DELETE FROM telemetry"))
    code, out, _ = telemetry(config, capsys, "--since", "7d", "--raw", "--json")
    assert json.loads(out) == []  # the raw path has nothing left to read
    code, out, err = telemetry(config, capsys, "--since", "7d", "--json")
    assert code == 0 and json.loads(out) == week
    code, out, err = telemetry(config, capsys, "--since", "7d", "--device", "cam-1")
    assert "per device and hour, from the per-minute rollup" in err
    lines = out.splitlines()
    assert len(lines) == 2 and "cam-1" in lines[0] and "per 1h" in lines[0]
    assert "records 5" in lines[0] and "fps 32.0" in lines[0] and "p95 3.2 ms" in lines[0]


def test_a_short_window_reads_records_and_bad_flags_are_refused(
    store: Store, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = time.time()
    write(store, rec("cam-1", 1, now, 12.0, 3.0), now=now)
    code, out, err = telemetry(config, capsys, "--since", "6h", "--json")
    assert code == 0 and [r["seq"] for r in json.loads(out)] == [1] and err == ""
    code, out, _ = telemetry(config, capsys, "--since", "1h", "--every", "5m", "--json")
    assert [r["records"] for r in json.loads(out)] == [1]
    for args in (["--every", "90s"], ["--every", "1h", "--follow"], ["--every", "soon"]):
        code, out, err = telemetry(config, capsys, *args)
        assert code == 2 and out == "" and err.count("\n") == 1, (args, err)
    with pytest.raises(SystemExit) as e:  # argparse: one or the other
        main(["telemetry", "--every", "1h", "--raw", "--config", str(config)])
    assert e.value.code == 2


def test_a_record_committed_behind_the_follower_is_printed_once(store: Store) -> None:
    t = time.time()
    write(store, *(rec("cam-1", s, t, 1.0, 1.0) for s in (1, 2, 3)), now=t)
    follower = TelemetryFollower(store, t - 100, page=2)
    assert [r["seq"] for _, r in follower.poll()] == [1, 2] and follower.behind
    assert [r["seq"] for _, r in follower.poll()] == [3] and not follower.behind
    write(store, rec("cam-2", 1, t + 2, 1.0, 1.0), now=t + 2)
    printed = follower.poll()
    assert [(r["device_id"], r["seq"]) for _, r in printed] == [("cam-2", 1)]
    cursor = printed[-1][0]

    # another worker's batch, received before the follower's cursor, commits now
    write(store, rec("cam-3", 1, t + 1, 1.0, 1.0), now=t + 1)
    # positive control: reading on from the cursor alone never sees it
    assert telemetry_since(store, t - 100, after=cursor) == []
    late = follower.poll()
    assert [(r["device_id"], r["seq"], r["received"]) for _, r in late] == [("cam-3", 1, t + 1)]
    write(store, rec("cam-2", 2, t + 3, 1.0, 1.0), now=t + 3)
    assert [(r["device_id"], r["seq"]) for _, r in follower.poll()] == [("cam-2", 2)]
    assert follower.poll() == []  # nothing twice
    # only the window behind the cursor is looked at again (cam-3 above: within it)
    follower.late_s = 0.5
    write(store, rec("cam-4", 1, t, 1.0, 1.0), now=t)  # 3 s behind
    assert follower.poll() == []
