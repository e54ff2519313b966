"""The root of trust each device reports, on the Fleet and Device pages and in the API: from
states stored as the ingester stores them (`write_batch`)."""

from __future__ import annotations

import json
import re
import time

from cloud.ingest import IngestStats, write_batch
from cloud.store import open_store
from shared.messages import DeviceState, decode_message, encode_message
from tests.cloud.web.conftest import Dashboard


def seed(dashboard: Dashboard) -> None:
    """cam-1 and cam-2 on root v2, cam-3 on v1, cam-4 an agent that does not report it."""
    now = time.time()
    payloads = [
        encode_message(DeviceState("cam-1", True, now, root_version=2)),
        encode_message(DeviceState("cam-2", True, now, root_version=2)),
        encode_message(DeviceState("cam-3", True, now, root_version=1)),
        json.dumps(
            {"schema": "litefleet.state/1", "device_id": "cam-4", "online": True, "ts": now}
        ).encode(),
    ]
    db = open_store(dashboard.config.store.db)
    try:
        with db.begin() as conn:
            write_batch(
                conn, [(decode_message(p), p) for p in payloads], time.time(), IngestStats()
            )
    finally:
        db.close()


def test_root_versions_in_the_api_and_on_the_pages(dashboard: Dashboard) -> None:
    seed(dashboard)
    with dashboard.client(dashboard.tokens["viewer"]) as c:
        counts = c.get("/api/v1/fleet").json()
        assert counts["roots"] == [
            {"root_version": 2, "devices": 2},
            {"root_version": 1, "devices": 1},
            {"root_version": 0, "devices": 1},
        ]
        assert c.get("/api/v1/devices/cam-3").json()["root_version"] == 1
        assert c.get("/api/v1/devices/cam-4").json()["root_version"] == 0

    page, _ = dashboard.login("victor")
    try:
        fleet = page.get("/fleet").text
        card = re.search(r'<div class="card" id="count-roots">(.*?)</div>\s*</div>', fleet, re.S)
        assert card, fleet
        items = re.findall(r'<li data-root="(\d+)">(.*?)</li>', card.group(1))
        assert items == [("2", "root v2: 2"), ("1", "root v1: 1"), ("0", "not reported: 1")]
        for device, shown in (("cam-1", "v2"), ("cam-3", "v1"), ("cam-4", "not reported")):
            text = page.get(f"/devices/{device}").text
            root = re.search(r'<dd id="dev-root">(.*?)</dd>', text, re.S)
            assert root and root.group(1).startswith(shown), (device, root)
        # the live part of the device page (what it refreshes every 5 s) says it too
        live = page.get("/devices/cam-1/live", params={"part": "facts"}).text
        assert re.search(r'<dd id="dev-root">v2</dd>', live)
    finally:
        page.close()
