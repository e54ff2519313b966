"""Download bytes on the Rollouts pages and API, drift and variant on the Fleet and Device pages
and API: from messages stored as the ingester stores them (`write_batch`)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx

from cloud.ingest import IngestStats, write_batch
from cloud.rollout import tick_rollouts
from cloud.store import open_store
from cloud.store import rollouts as rs
from shared.messages import (
    DriftSummary,
    Event,
    Message,
    ModelIdentity,
    TelemetryRecord,
    UpdateStatus,
    encode_message,
)
from tests.cloud.web.conftest import Dashboard

MIB = 1 << 20
VARIANT = {
    "release": "digits@2",
    "chosen": "fast",
    "sha256": "ef" * 32,
    "reason": "fast is the fastest here (1.250 ms p50) of 2 measured within the quality budget",
    "figures": {"release": {"p50_ms": 3.5}, "fast": {"p50_ms": 1.25}},
}


def _write(db_path: Path, messages: list[Message]) -> None:
    db = open_store(db_path)
    try:
        with db.begin() as conn:
            write_batch(
                conn, [(m, encode_message(m)) for m in messages], time.time(), IngestStats()
            )
    finally:
        db.close()


def seed(db_path: Path) -> None:
    """Rollout r-1 of digits@2 to cam-1..cam-4 in two waves (two devices each, both out):
    cam-1 and cam-3 downloading, cam-2 committed, cam-4 silent. cam-1 drifts, cam-2 does not,
    cam-1 chose the `fast` variant."""
    now = time.time()
    db = open_store(db_path)
    try:
        with db.begin() as conn:
            rs.insert_rollout(
                conn,
                {
                    "id": "r-1",
                    "release_name": "digits",
                    "release_version": 2,
                    "waves": json.dumps(["50%", "100%"]),
                    "success_threshold_pct": 0,
                    "max_failures_pct": 100,
                },
                [("cam-1", 0, "{}"), ("cam-2", 0, "{}"), ("cam-3", 1, "{}"), ("cam-4", 1, "{}")],
                now,
            )
        tick_rollouts(db, lambda d, p: None)  # wave 1 out
        tick_rollouts(db, lambda d, p: None)  # success threshold 0: wave 2 out too
    finally:
        db.close()

    def report(device: str, seq: int, phase: str, done: int = 0, total: int = 0) -> UpdateStatus:
        return UpdateStatus(
            device,
            seq,
            now,
            "r-1",
            phase,
            "digits",
            2,
            "cd" * 32,
            bytes_done=done,
            bytes_total=total,
        )

    _write(
        db_path,
        [
            report("cam-1", 1, "downloading", 0, 4 * MIB),
            report("cam-1", 2, "downloading", MIB, 4 * MIB),
            report("cam-2", 1, "downloading", 2 * MIB, 2 * MIB),
            report("cam-2", 2, "committed"),
            report("cam-3", 1, "downloading", MIB // 2, 2 * MIB),
            TelemetryRecord("cam-1", 3, now, drift=DriftSummary(1.42, "input.c0", 0.25, 300)),
            TelemetryRecord("cam-2", 3, now, drift=DriftSummary(0.03, "input.c0", 0.25, 300)),
            Event("cam-1", 4, now, "variant", VARIANT),
        ],
    )


def test_rollout_bytes_in_the_api_and_on_the_pages(dashboard: Dashboard) -> None:
    seed(dashboard.config.store.db)
    with dashboard.client(dashboard.tokens["viewer"]) as c:
        (summary,) = c.get("/api/v1/rollouts").json()
        assert (summary["downloading"], summary["bytes_done"], summary["bytes_total"]) == (
            2,
            MIB + MIB // 2,
            6 * MIB,
        )
        detail = c.get("/api/v1/rollouts/r-1").json()
        waves = {w["wave"]: w for w in detail["wave_progress"]}
        assert (waves[1]["downloading"], waves[1]["bytes_done"], waves[1]["bytes_total"]) == (
            1,
            MIB,
            4 * MIB,
        )
        assert (waves[2]["downloading"], waves[2]["bytes_done"], waves[2]["bytes_total"]) == (
            1,
            MIB // 2,
            2 * MIB,
        )
        devices = {d["device_id"]: d for d in detail["device_list"]}
        assert (devices["cam-2"]["status"], devices["cam-2"]["bytes_done"]) == (
            "committed",
            2 * MIB,
        )
        assert (devices["cam-4"]["bytes_done"], devices["cam-4"]["bytes_total"]) == (0, 0)
        # those under way first
        assert [d["device_id"] for d in detail["device_list"]] == [
            "cam-1",
            "cam-3",
            "cam-4",
            "cam-2",
        ]

    page, _ = dashboard.login("victor")
    try:
        listing = page.get("/rollouts/live").text
        row = re.search(r'<tr data-rollout="r-1">.*?</tr>', listing, re.S)
        assert row and '2 <span class="muted">(1.5 MiB of 6.0 MiB)</span>' in row.group(0)
        one = page.get("/rollouts/r-1").text
        assert "(1.0 MiB of 4.0 MiB)" in one and "(512.0 KiB of 2.0 MiB)" in one  # per wave
        cam1 = re.search(r'<tr data-device="cam-1">.*?</tr>', one, re.S)
        assert cam1 and "1.0 MiB of 4.0 MiB" in cam1.group(0) and "25.0%" in cam1.group(0)
        cam4 = re.search(r'<tr data-device="cam-4">.*?</tr>', one, re.S)
        assert cam4 and "MiB" not in cam4.group(0)  # nothing reported yet
    finally:
        page.close()


def test_drift_and_variant_in_the_api_and_on_the_pages(dashboard: Dashboard) -> None:
    seed(dashboard.config.store.db)
    with dashboard.client(dashboard.tokens["viewer"]) as c:
        counts = c.get("/api/v1/fleet").json()
        assert (counts["total"], counts["drifting"]) == (3, 1)  # cam-4 never reported
        drifting = c.get("/api/v1/devices", params={"state": "drifting"}).json()
        assert [d["device_id"] for d in drifting["devices"]] == ["cam-1"]
        every = c.get("/api/v1/devices").json()["devices"]
        assert [d["drifting"] for d in every] == [True, False, False]
        cam1 = c.get("/api/v1/devices/cam-1").json()
        assert cam1["variant"] == VARIANT
        assert cam1["drift"]["score"] == 1.42 and cam1["drift"]["feature"] == "input.c0"
        assert c.get("/api/v1/devices/cam-3").json()["variant"] is None

    page, _ = dashboard.login("victor")
    try:
        fleet = page.get("/fleet").text
        assert re.search(r'id="count-drifting">1<', fleet)
        assert '<option value="drifting"' in fleet
        only = page.get("/fleet/live", params={"state": "drifting"}).text
        assert 'data-device="cam-1"' in only and 'data-device="cam-2"' not in only
        device = page.get("/devices/cam-1").text
        drift = re.search(r'<dd id="dev-drift">(.*?)</dd>', device, re.S)
        assert drift and "1.42" in drift.group(1) and "drifting" in drift.group(1)
        assert "input.c0" in drift.group(1)
        variant = re.search(r'<dd id="dev-variant">(.*?)</dd>', device, re.S)
        assert variant and "fast of digits@2" in variant.group(1)
        assert "fastest here" in variant.group(1) and "1.250 ms p50" in variant.group(1)
        calm = page.get("/devices/cam-2").text
        calm_drift = re.search(r'<dd id="dev-drift">(.*?)</dd>', calm, re.S)
        assert calm_drift and "0.03" in calm_drift.group(1)
        assert "drifting" not in calm_drift.group(1)
    finally:
        page.close()


def cam1_row(page: httpx.Client) -> str:
    row = re.search(r'<tr data-device="cam-1">.*?</tr>', page.get("/fleet/live").text, re.S)
    assert row
    return row.group(0)


def test_a_device_that_left_the_drifting_model_shows_no_drift(dashboard: Dashboard) -> None:
    seed(dashboard.config.store.db)  # cam-1 drifting (the test above shows it everywhere)
    page, _ = dashboard.login("victor")
    try:
        assert "bad drifting" in cam1_row(page)
        # cam-1 now runs another model, which has no reference profile: no figures of its own
        other = ModelIdentity("digits", 3, "bb" * 32)
        _write(dashboard.config.store.db, [TelemetryRecord("cam-1", 5, time.time(), model=other)])

        with dashboard.client(dashboard.tokens["viewer"]) as c:
            assert c.get("/api/v1/fleet").json()["drifting"] == 0
            assert c.get("/api/v1/devices", params={"state": "drifting"}).json()["devices"] == []
            cam1 = c.get("/api/v1/devices/cam-1").json()
            assert (cam1["drift"], cam1["drifting"]) == (None, False)
            assert c.get("/api/v1/devices/cam-2").json()["drift"]["score"] == 0.03  # untouched
        assert re.search(r'id="count-drifting">0<', page.get("/fleet").text)
        assert "drifting" not in cam1_row(page)
        device = page.get("/devices/cam-1").text
        drift = re.search(r'<dd id="dev-drift">(.*?)</dd>', device, re.S)
        assert drift and drift.group(1) == "-"
    finally:
        page.close()
