"""Migration 0005 fills each device's drift, drifting and variant from the records a store
already holds, as ingest would have written them: on both backends, a store brought to 0004
gets records with SQL (as the ingest of that version stored them), is migrated to the newest
schema, and its device rows are compared with a fresh store that took the same records through
`write_batch`."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, text

from cloud.ingest import IngestStats, write_batch
from cloud.store import Store, engine_url
from cloud.store.migrate import HEAD, _config, current_version, migrate
from shared.messages import (
    DeviceState,
    DriftSummary,
    Event,
    Message,
    ModelIdentity,
    TelemetryRecord,
    encode_message,
)

NOW = time.time()
A = ModelIdentity("digits", 2, "aa" * 32)
B = ModelIdentity("digits", 3, "bb" * 32)  # a model with no reference profile: no figures
CHOSEN = {"release": "digits@2", "chosen": "fast", "sha256": "ab" * 32, "reason": "fastest"}
RECENT = 300  # telemetry records the migration reads per device (`_RECENT` in 0005)


def drift(score: float, feature: str = "input.c0") -> DriftSummary:
    return DriftSummary(score=score, feature=feature, threshold=0.25, samples=300)


RECORDS: list[Message] = [
    # the newest figures by the record's ts win, not the highest seq (an outbox resend);
    # a newer record without figures on the same model leaves them
    TelemetryRecord("cam-1", 1, NOW - 30, model=A, drift=drift(0.05)),
    TelemetryRecord("cam-1", 2, NOW - 20, model=A, drift=drift(1.42, "output.class")),
    TelemetryRecord("cam-1", 3, NOW - 25, model=A, drift=drift(0.01)),
    TelemetryRecord("cam-1", 4, NOW - 10, model=A),
    Event("cam-1", 7, NOW - 4, "variant", {**CHOSEN, "chosen": "release"}),
    Event("cam-1", 8, NOW - 3, "variant", CHOSEN),
    Event("cam-1", 9, NOW - 2, "inference", {"label": "7"}),
    # moved to a model without a reference profile: the old model's figures go
    TelemetryRecord("cam-2", 1, NOW - 20, model=A, drift=drift(0.9)),
    TelemetryRecord("cam-2", 2, NOW - 10, model=B),
    # never any figures
    TelemetryRecord("cam-3", 1, NOW - 20, model=A),
    # its state names another model after the figures
    TelemetryRecord("cam-4", 1, NOW - 20, model=A, drift=drift(0.5)),
    DeviceState("cam-4", True, NOW - 5, model=B),
    # figures from a record naming no model; a variant
    TelemetryRecord("cam-5", 1, NOW - 20, drift=drift(0.02)),
    Event("cam-5", 2, NOW - 1, "variant", {**CHOSEN, "chosen": "slow"}),
]
# bodies that do not decode, newer than cam-1's figures: skipped
MALFORMED = [
    '{"schema": "litefleet.telemetry/1", "drift": {"score": 9',
    json.dumps(
        {
            "schema": "litefleet.telemetry/1",
            "device_id": "cam-1",
            "seq": 12,
            "ts": NOW - 1,
            "drift": {"score": "high", "feature": "x", "threshold": 0.25, "samples": 1},
        }
    ),
    "[]",
    json.dumps({"schema": "litefleet.event/1", "device_id": "cam-1", "seq": 13, "ts": NOW}),
]


@pytest.fixture(params=["sqlite", "postgresql"])
def new_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """Makes the URL of a new, empty store on the test's backend."""
    server = request.getfixturevalue("postgres") if request.param == "postgresql" else None

    def make(name: str) -> str:
        return server.create_database() if server else f"sqlite:///{tmp_path / name}.db"

    yield make


def insert_as_0004(store: Store, messages: list[Message]) -> None:
    """Rows as the ingest of schema 0004 stored them: a device row for each device (its state
    when it sent one), each record and event with its columns and body."""
    with store.begin() as conn:
        for d in sorted({m.device_id for m in messages}):
            conn.execute(
                text("INSERT INTO devices (device_id, online, last_seen) VALUES (:d, 1, :now)"),
                {"d": d, "now": NOW},
            )
        for m in messages:
            if isinstance(m, TelemetryRecord):
                insert_telemetry(conn, m, encode_message(m).decode())
            elif isinstance(m, Event):
                conn.execute(
                    text(
                        "INSERT INTO events (device_id, seq, ts, received, kind, detail) "
                        "VALUES (:d, :seq, :ts, :now, :kind, :detail)"
                    ),
                    {
                        "d": m.device_id,
                        "seq": m.seq,
                        "ts": m.ts,
                        "now": NOW,
                        "kind": m.kind,
                        "detail": json.dumps(m.detail),
                    },
                )
            elif isinstance(m, DeviceState) and m.model is not None:
                conn.execute(
                    text(
                        "UPDATE devices SET state_ts = :ts, model_name = :n, "
                        "model_version = :v, model_sha256 = :sha WHERE device_id = :d"
                    ),
                    {
                        "d": m.device_id,
                        "ts": m.ts,
                        "n": m.model.name,
                        "v": m.model.version,
                        "sha": m.model.sha256,
                    },
                )


def insert_telemetry(conn: Connection, m: TelemetryRecord, body: str) -> None:
    model = m.model
    conn.execute(
        text(
            "INSERT INTO telemetry (device_id, seq, ts, received, model_name, model_version, "
            "model_sha256, fps, latency_p95_ms, inferences, errors, body) VALUES "
            "(:d, :seq, :ts, :now, :n, :v, :sha, 0, 0, 0, 0, :body)"
        ),
        {
            "d": m.device_id,
            "seq": m.seq,
            "ts": m.ts,
            "now": NOW,
            "n": model.name if model else None,
            "v": model.version if model else None,
            "sha": model.sha256 if model else None,
            "body": body,
        },
    )


def device_figures(store: Store) -> dict[str, tuple[str, int, str]]:
    with store.connect() as conn:
        rows = conn.execute(
            text("SELECT device_id, drift, drifting, variant FROM devices ORDER BY device_id")
        )
        return {d: (drift, drifting, variant) for d, drift, drifting, variant in rows}


def test_migration_0005_fills_drift_and_variant_as_ingest_writes_them(
    new_url: Callable[[str], str],
) -> None:
    from alembic import command

    old = Store(engine_url(new_url("old")))
    with old.begin() as conn:
        command.upgrade(_config(conn), "0004")
    insert_as_0004(old, RECORDS)
    with old.begin() as conn:
        for seq, body in enumerate(MALFORMED, 10):
            conn.execute(
                text(
                    "INSERT INTO telemetry (device_id, seq, ts, received, body) "
                    "VALUES ('cam-1', :seq, :ts, :ts, :body)"
                ),
                {"seq": seq, "ts": NOW - 1, "body": body},
            )
        # cam-6's figures are older than the newest records the migration reads
        conn.execute(text("INSERT INTO devices (device_id) VALUES ('cam-6')"))
        figures = TelemetryRecord("cam-6", 1, NOW - 500, model=A, drift=drift(2.0))
        insert_telemetry(conn, figures, encode_message(figures).decode())
        for seq in range(2, RECENT + 2):
            record = TelemetryRecord("cam-6", seq, NOW - 500 + seq, model=A)
            insert_telemetry(conn, record, encode_message(record).decode())

    migrate(old)

    with old.connect() as conn:
        assert current_version(conn) == HEAD
    migrated = device_figures(old)
    old.close()

    # the positive control: the same records through ingest, one batch each
    fresh = Store(engine_url(new_url("fresh")))
    migrate(fresh)
    for m in RECORDS:
        with fresh.begin() as conn:
            write_batch(conn, [(m, encode_message(m))], NOW, IngestStats())
    ingested = device_figures(fresh)
    fresh.close()

    for device in ("cam-1", "cam-2", "cam-3", "cam-4", "cam-5"):
        assert migrated[device] == ingested[device], device
    cam1_drift, cam1_drifting, cam1_variant = migrated["cam-1"]
    assert json.loads(cam1_drift) == {
        "score": 1.42,
        "feature": "output.class",
        "threshold": 0.25,
        "samples": 300,
        "ts": NOW - 20,
        "model_sha256": A.sha256,
    }
    assert cam1_drifting == 1 and json.loads(cam1_variant) == CHOSEN
    assert migrated["cam-2"] == ("", 0, "")  # moved to B: A's figures went
    assert migrated["cam-3"] == ("", 0, "")
    assert migrated["cam-4"] == ("", 0, "")  # its state names B
    cam5_drift, cam5_drifting, cam5_variant = migrated["cam-5"]
    assert json.loads(cam5_drift)["model_sha256"] is None and cam5_drifting == 0
    assert json.loads(cam5_variant)["chosen"] == "slow"
    # the work is bounded: figures behind the newest RECENT records are not looked for
    assert migrated["cam-6"] == ("", 0, "")
