"""The JSON API over a seeded store: filters, search, sort, pages, series, rollouts, releases."""

from __future__ import annotations

import time
from pathlib import Path

from cloud.ingest import IngestStats, write_batch
from cloud.store import open_store
from shared.messages import TelemetryRecord, encode_message
from tests.cloud.web.conftest import Dashboard


def seed(db_path: Path, now: float) -> None:
    db = open_store(db_path)
    rows = []
    for i in range(120):
        online = i % 3 != 0
        rows.append(
            (
                f"cam-{i:03d}",
                int(online),
                "rpi5" if i % 2 else "x86-gateway",
                "digits",
                1 + i % 2,
                "rolled_back" if i == 7 else "idle",
                "down: no frames" if i == 8 else "up",
                float(i),
                now - (5 if online else 900),
            )
        )
    for row in rows:
        db.execute(
            "INSERT INTO devices (device_id, online, profile, model_name, model_version, "
            "update_phase, source_status, fps, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            row,
        )
    for i in range(10):
        db.execute(
            "INSERT INTO groups (group_name, device_id) VALUES ('north', ?)", (f"cam-{i:03d}",)
        )
    # cam-001: 30 minutes of telemetry, one record a minute, fps = minute index; stored by
    # ingest's own writer (which also keeps the per-minute rollup the 7-day chart reads)
    records = [
        TelemetryRecord(
            "cam-001",
            m + 1,
            now - (30 - m) * 60,
            fps=float(m),
            latency_p95_ms=5.0,
            cpu_percent=10.0 + m,
            rss_mb=100.0,
            outbox_depth=m % 2,
        )
        for m in range(30)
    ]
    with db.begin() as conn:
        write_batch(conn, [(r, encode_message(r)) for r in records], now, IngestStats())
    db.close()


def test_devices_filtered_searched_sorted_and_paged(dashboard: Dashboard) -> None:
    seed(dashboard.config.store.db, time.time())
    with dashboard.client(dashboard.tokens["viewer"]) as c:
        page = c.get("/api/v1/devices", params={"per_page": 50, "page": 3}).json()
        assert (page["total"], page["pages"], len(page["devices"])) == (120, 3, 20)
        assert page["devices"][0]["device_id"] == "cam-100"
        online = c.get("/api/v1/devices", params={"state": "online"}).json()
        assert online["total"] == 80 and all(d["online"] for d in online["devices"])
        failing = c.get("/api/v1/devices", params={"state": "failing"}).json()
        assert [d["device_id"] for d in failing["devices"]] == ["cam-007", "cam-008"]
        north = c.get("/api/v1/devices", params={"group": "north", "profile": "rpi5"}).json()
        assert [d["device_id"] for d in north["devices"]] == [
            "cam-001",
            "cam-003",
            "cam-005",
            "cam-007",
            "cam-009",
        ]
        found = c.get("/api/v1/devices", params={"q": "CAM-11"}).json()
        assert [d["device_id"] for d in found["devices"]] == [f"cam-11{i}" for i in range(10)]
        fastest = c.get(
            "/api/v1/devices", params={"sort": "fps", "desc": True, "per_page": 2}
        ).json()
        assert [d["device_id"] for d in fastest["devices"]] == ["cam-119", "cam-118"]
        # a sort key that is not a column is the default order, never SQL
        odd = c.get("/api/v1/devices", params={"sort": "fps; DROP TABLE devices"}).json()
        assert odd["devices"][0]["device_id"] == "cam-000"
        counts = c.get("/api/v1/fleet").json()
        assert (counts["total"], counts["online"], counts["offline"], counts["failing"]) == (
            120,
            80,
            40,
            2,
        )
        assert {m["model"]: m["devices"] for m in counts["models"]} == {
            "digits@1": 60,
            "digits@2": 60,
        }
        assert c.get("/api/v1/devices", params={"per_page": 1000}).status_code == 422


def test_device_telemetry_and_series(dashboard: Dashboard) -> None:
    now = time.time()
    seed(dashboard.config.store.db, now)
    with dashboard.client(dashboard.tokens["viewer"]) as c:
        d = c.get("/api/v1/devices/cam-001").json()
        assert d["groups"] == ["north"] and d["facts"]["cpu_percent"] == 39.0  # the last record
        assert c.get("/api/v1/devices/nope").status_code == 404
        recent = c.get(
            "/api/v1/devices/cam-001/telemetry", params={"since": now - 5 * 60 - 1}
        ).json()["records"]
        assert [r["seq"] for r in recent] == [26, 27, 28, 29, 30]
        s = c.get("/api/v1/devices/cam-001/series", params={"window": "15m"}).json()
        # 15 minutes in 10-second buckets: one record a minute, so one point per record
        assert len(s["t"]) in (14, 15) and s["fps"][-1] == 29.0 and s["cpu_percent"][-1] == 39.0
        assert s["t"] == sorted(s["t"]) and s["since"] < s["t"][0] <= s["until"]
        week = c.get("/api/v1/devices/cam-001/series", params={"window": "7d"}).json()
        # hourly buckets: the 30 minutes fall in one or two, fps averaged, gauges the last
        assert 1 <= len(week["t"]) <= 2
        assert sum(week["fps"]) / len(week["fps"]) < 29.0
        assert week["cpu_percent"][-1] == 39.0
        assert c.get("/api/v1/devices/cam-001/series", params={"window": "1y"}).status_code == 422
