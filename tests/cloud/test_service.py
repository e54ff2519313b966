"""Offline detection by heartbeat age: devices silent for `ingest.offline_after_s` go offline."""

from __future__ import annotations

import time

from cloud.config import load_cloud_config
from cloud.service import CloudService, mark_offline
from cloud.store import open_store
from tests.cloud.conftest import CloudEnv, write_config
from tests.cloud.test_ingest import wait_for


def seed(db_path, devices: dict[str, tuple[int, float]]) -> None:
    db = open_store(db_path)
    for device_id, (online, last_seen) in devices.items():
        db.execute(
            "INSERT INTO devices (device_id, online, last_seen) VALUES (?, ?, ?)",
            (device_id, online, last_seen),
        )
    db.close()


def online(db_path) -> dict[str, int]:
    db = open_store(db_path)
    try:
        return dict(db.execute("SELECT device_id, online FROM devices").fetchall())
    finally:
        db.close()


def test_mark_offline_by_heartbeat_age(cloud_env: CloudEnv) -> None:
    now = 1_000_000.0
    seed(
        cloud_env.db,
        {
            "fresh": (1, now - 10),  # heard from 10 s ago
            "edge": (1, now - 180),  # exactly at the limit: not yet silent for longer
            "silent": (1, now - 181),
            "long-gone": (1, now - 86_400),
            "already-off": (0, now - 86_400),
        },
    )
    db = open_store(cloud_env.db)
    assert mark_offline(db, now, 180.0) == 2
    assert online(cloud_env.db) == {
        "fresh": 1,
        "edge": 1,
        "silent": 0,
        "long-gone": 0,
        "already-off": 0,
    }
    assert mark_offline(db, now, 180.0) == 0  # nothing left to change
    assert mark_offline(db, now + 171, 180.0) == 2  # time passes: the rest fall silent too
    assert set(online(cloud_env.db).values()) == {0}
    db.close()


def test_the_controller_tick_uses_the_configured_age(cloud_env: CloudEnv) -> None:
    write_config(cloud_env.root, extra="[ingest]\noffline_after_s = 30\n")
    config = load_cloud_config(cloud_env.config)
    now = time.time()
    seed(cloud_env.db, {"quiet": (1, now - 45), "chatty": (1, now - 5)})
    service = CloudService(config, http=False)  # no broker: the tick skips the rollouts
    service.tick()  # a controller that does not hold the lease does nothing (control)
    assert online(cloud_env.db) == {"quiet": 1, "chatty": 1}
    assert service.lease is not None
    service.lease.start()  # the only controller: takes the lease at once, and ticks
    try:
        service.tick()  # (or this one does, if the takeover's tick is not running)
        wait_for(
            lambda: online(cloud_env.db) == {"quiet": 0, "chatty": 1},
            10,
            "the quiet device marked offline",
        )
    finally:
        service.lease.stop()


def test_a_device_marked_offline_is_back_when_it_talks_and_a_last_will_wins(
    cloud_env: CloudEnv,
) -> None:
    from cloud.ingest import IngestStats, write_batch
    from shared.messages import DeviceState, TelemetryRecord, encode_message

    now = time.time()
    seed(cloud_env.db, {"quiet": (0, now - 500), "leaving": (1, now - 1)})
    db = open_store(cloud_env.db)
    record = TelemetryRecord("quiet", 1, now)
    will = DeviceState("leaving", False, now)
    last_words = TelemetryRecord("leaving", 7, now - 1)
    with db.begin() as conn:
        write_batch(
            conn, [(m, encode_message(m)) for m in (record, last_words, will)], now, IngestStats()
        )
    db.close()
    assert online(cloud_env.db) == {"quiet": 1, "leaving": 0}
