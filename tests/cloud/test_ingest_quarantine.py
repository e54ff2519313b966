"""The ingest writer's check-and-write step on a real SQLite store, in-process: a message the
store itself refuses is quarantined and the rest of its batch is written; the dead letters are
what `litefleet quarantine` shows."""

from __future__ import annotations

import hashlib
import json
import time

import pytest

from cloud.cli import main
from cloud.config import load_cloud_config
from cloud.ingest import Ingester
from cloud.store import counter, open_store
from shared.messages import TelemetryRecord, encode_message
from shared.topics import Channel, topic
from tests.cloud.conftest import CloudEnv
from tests.cloud.test_ingest import record


def item(device: str, payload: bytes, channel: Channel = Channel.TELEMETRY, mid: int = 1):
    return (topic(device, channel).encode(), payload, mid, 1)


@pytest.fixture
def writer(cloud_env: CloudEnv):
    ingester = Ingester(load_cloud_config(cloud_env.config))  # not started: no broker needed
    db = open_store(cloud_env.db)
    yield ingester, db
    db.close()


def test_a_message_the_store_refuses_is_quarantined_and_the_rest_of_its_batch_stored(
    writer,
) -> None:
    ingester, db = writer
    # the store refuses one device's rows, as it would a value it cannot hold
    db.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON telemetry WHEN "
        "NEW.device_id = 'dev-bad' BEGIN SELECT RAISE(ABORT, 'refused'); END"
    )
    bad = record("dev-bad", 1)
    batch = [
        item("dev-a", record("dev-a", 1)),
        item("dev-bad", bad),
        item("dev-b", record("dev-b", 1)),
        item("dev-a", record("dev-a", 2)),
    ]
    assert ingester.write(db, batch)
    stored = db.execute("SELECT device_id, seq FROM telemetry ORDER BY device_id, seq").fetchall()
    assert stored == [("dev-a", 1), ("dev-a", 2), ("dev-b", 1)]
    rows = db.execute(
        "SELECT topic, device_id, size, sha256, reason, detail, payload FROM quarantine"
    ).fetchall()
    assert rows == [
        (
            topic("dev-bad", Channel.TELEMETRY),
            "dev-bad",
            len(bad),
            hashlib.sha256(bad).hexdigest(),
            "store_error",
            "IntegrityError: refused",
            bad,
        )
    ]
    assert counter(db, "quarantined") == 1 and counter(db, "quarantined.store_error") == 1
    snap = ingester.snapshot()
    assert snap["received"] == 4 and snap["stored"] == 3 and snap["quarantined"] == 1


def test_a_value_sqlite_cannot_hold_is_quarantined_not_fatal(writer) -> None:
    """Past the parser's bounds (as a future schema change might let through), a seq SQLite
    cannot store: the writer quarantines that message and keeps going."""
    ingester, db = writer
    good = TelemetryRecord("dev-a", 1, time.time())
    huge = TelemetryRecord("dev-a", 2**64, time.time())
    now = time.time()
    written = ingester._commit(
        db,
        [(good, encode_message(good)), (huge, encode_message(huge))],
        [b"t/good", b"t/huge"],
        [],
        now,
    )
    assert written.stored["telemetry"] == 1
    assert db.execute("SELECT seq FROM telemetry").fetchall() == [(1,)]
    assert db.execute("SELECT topic, reason FROM quarantine").fetchall() == [
        ("t/huge", "store_error")
    ]


def test_every_refused_message_is_quarantined_with_its_reason_and_listed(
    writer, cloud_env: CloudEnv, capsys
) -> None:
    ingester, db = writer
    big = b'{"schema":"litefleet.telemetry/1","pad":"' + b"x" * 70_000 + b'"}'
    batch = [
        item("dev-a", b"[" * 5000 + b"]" * 5000),
        item(
            "dev-a",
            b'{"schema":"litefleet.telemetry/1","device_id":"dev-a","seq":'
            + b"9" * 5000
            + b',"ts":1}',
        ),
        item("dev-a", b'{"schema": "litefleet.telemetry/99"}'),
        item("dev-a", big),
        item("dev-a", record("dev-b", 1)),  # names another device
        item("dev-a", record("dev-a", 1), Channel.EVENTS),  # wrong kind for the channel
        (b"litefleet/v1/devices/bad id!/telemetry", record("dev-a", 1), 1, 1),
        (b"litefleet/v1/devices/\xff\xfe/state", b"\x00\x01", 1, 1),
        item("dev-a", record("dev-a", 5)),
    ]
    assert ingester.write(db, batch)
    reasons = [r[0] for r in db.execute("SELECT reason FROM quarantine ORDER BY id")]
    assert reasons == [
        "malformed",
        "malformed",
        "unknown_schema",
        "payload_too_large",
        "wrong_device",
        "wrong_channel",
        "invalid_device_id",
        "invalid_device_id",
    ]
    assert db.execute("SELECT seq FROM telemetry").fetchall() == [(5,)]
    assert db.execute(
        "SELECT length(payload), size FROM quarantine WHERE reason = 'payload_too_large'"
    ).fetchone() == (4096, len(big))
    assert counter(db, "quarantined") == 8 and counter(db, "quarantined.malformed") == 2

    assert main(["quarantine", "--json", "--config", str(cloud_env.config)]) == 0
    views = json.loads(capsys.readouterr().out)
    assert [v["reason"] for v in views] == list(reversed(reasons))  # newest first
    assert views[-1]["detail"].startswith("$: nested deeper than 32")
    assert views[-1]["device_id"] == "dev-a" and views[-1]["size"] == 10_000
    assert views[0]["topic"] == "litefleet/v1/devices/\\xff\\xfe/state"
    assert main(["quarantine", "--device", "dev-a", "--config", str(cloud_env.config)]) == 0
    assert "6 quarantined message(s) shown, 8 in all" in capsys.readouterr().out
