"""The store on both backends (SQLite and a real PostgreSQL server): schema versions, the
telemetry contract, ingest's writes, the rollout state machine and the fleet's views."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import Connection, inspect, text
from sqlalchemy.exc import DBAPIError

from cloud import audit
from cloud.config import parse_cloud_config
from cloud.fleet import (
    add_to_group,
    device_views,
    group_views,
    remove_from_group,
    rollout_views,
    telemetry_since,
    unknown_devices,
)
from cloud.ingest import Ingester, IngestStats, write_batch
from cloud.rollout import abort_rollout, pause_rollout, resume_rollout, tick_rollouts
from cloud.store import Store, StoreRefused, counter, engine_url, open_store
from cloud.store import rollouts as rs
from cloud.store.migrate import HEAD, _config, current_version, known_versions, migrate
from cloud.store.partitions import KEY_TABLES, is_partition_machinery
from cloud.store.schema import metadata
from shared.messages import (
    DeviceState,
    Event,
    Message,
    ModelIdentity,
    TelemetryRecord,
    UpdateStatus,
    encode_message,
)
from tests.cloud.conftest import CloudEnv

MODEL = ModelIdentity("digits", 1, "ab" * 32)


def write(store: Store, *messages: Message, now: float | None = None) -> IngestStats:
    stats = IngestStats()
    with store.begin() as conn:
        write_batch(
            conn,
            [(m, encode_message(m)) for m in messages],
            time.time() if now is None else now,
            stats,
        )
    return stats


def rows(store: Store, sql: str, **params: object) -> list[tuple[object, ...]]:
    with store.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params)]


@pytest.fixture
def store(store_url: str):
    s = open_store(store_url)
    yield s
    s.close()


# --- schema versions ---------------------------------------------------------------------


def test_head_is_the_newest_migration_script() -> None:
    assert known_versions()[-1] == HEAD


def test_the_migration_scripts_build_the_schema_the_queries_use(store_url: str) -> None:
    """From an empty database, the scripts alone (not the shortcut for empty stores) give
    exactly the tables, columns and indexes of `cloud.store.schema`."""
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    fresh = Store(
        engine_url(
            store_url.replace("cloud.db", "scripts.db")
            if store_url.startswith("sqlite")
            else store_url
        )
    )
    with fresh.begin() as conn:
        for table in [*reversed(metadata.sorted_tables), *KEY_TABLES.values()]:
            conn.execute(text(f"DROP TABLE IF EXISTS {table.name}"))
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    with fresh.begin() as conn:
        command.upgrade(_config(conn), "head")
    with fresh.connect() as conn:
        assert current_version(conn) == HEAD
        context = MigrationContext.configure(
            conn,
            opts={"include_name": lambda name, *_: not is_partition_machinery(str(name))},
        )
        assert compare_metadata(context, metadata) == []
        scripted = _shape(conn)
    fresh.close()
    with open_store(store_url) as created, created.connect() as conn:  # `create_all`'s
        assert _shape(conn) == scripted


def _shape(conn: Connection) -> dict[str, object]:
    """Every table's columns, primary key and indexes, and (PostgreSQL) how it is
    partitioned: what two ways of building a schema must agree on."""
    inspector = inspect(conn)
    shape: dict[str, object] = {}
    for name in sorted(inspector.get_table_names()):
        if name == "alembic_version":
            continue
        shape[name] = (
            sorted((c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(name)),
            inspector.get_pk_constraint(name)["constrained_columns"],
            sorted((i["name"], tuple(i["column_names"])) for i in inspector.get_indexes(name)),
        )
    if conn.dialect.name == "postgresql":
        shape["partitioned"] = sorted(
            conn.exec_driver_sql(
                "SELECT c.relname, pg_get_partkeydef(c.oid) FROM pg_partitioned_table p "
                "JOIN pg_class c ON c.oid = p.partrelid"
            ).all()
        )
    return shape


def test_a_store_newer_than_the_code_is_refused_in_one_sentence(
    store_url: str, tmp_path: Path
) -> None:
    s = open_store(store_url)
    s.execute("UPDATE alembic_version SET version_num = '9999'")
    s.close()
    with pytest.raises(StoreRefused, match="schema version 9999, newer than this LiteFleet") as e:
        migrate(Store(engine_url(store_url)))
    assert "\n" not in str(e.value)
    config = tmp_path / "cloud.toml"
    config.write_text(f'[store]\nurl = "{store_url}"\n')
    for argv in (["devices"], ["store", "migrate"]):
        done = subprocess.run(
            [sys.executable, "-m", "cloud.cli", *argv, "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and "newer than this LiteFleet" in done.stderr


def test_postgresql_is_refused_until_migrated_then_used(postgres, tmp_path: Path) -> None:
    url = postgres.create_database()
    config = tmp_path / "cloud.toml"
    config.write_text(f'[store]\nurl = "{url}"\n')

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cloud.cli", *argv, "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )

    refused = cli("devices", "--json")
    assert refused.returncode == 2 and "run `litefleet store migrate`" in refused.stderr
    assert refused.stderr.count("\n") == 1
    done = cli("store", "migrate")
    assert done.returncode == 0 and f"migrated from schema (none) to {HEAD}" in done.stdout
    assert "up to date" in cli("store", "migrate").stdout
    listed = cli("devices", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == []


def test_a_sqlite_store_from_before_versions_is_adopted_with_its_rows(tmp_path: Path) -> None:
    """What `cloud/store.py` created at each start before migrations existed."""
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE devices (device_id TEXT PRIMARY KEY, online INTEGER NOT NULL DEFAULT 0,
            profile TEXT NOT NULL DEFAULT '', agent_version TEXT NOT NULL DEFAULT '',
            model_name TEXT, model_version INTEGER, model_sha256 TEXT,
            update_phase TEXT NOT NULL DEFAULT '', source_status TEXT NOT NULL DEFAULT '',
            fps REAL NOT NULL DEFAULT 0, p95_ms REAL, state_ts REAL NOT NULL DEFAULT 0,
            last_seen REAL NOT NULL DEFAULT 0);
        INSERT INTO devices (device_id, profile) VALUES ('cam-old', 'rpi4');
    """)
    old.close()
    s = open_store(path)
    with s.connect() as conn:
        assert current_version(conn) == HEAD
    assert rows(s, "SELECT device_id, profile FROM devices") == [("cam-old", "rpi4")]
    write(s, TelemetryRecord("cam-old", 1, time.time()))
    assert rows(s, "SELECT device_id, seq FROM telemetry") == [("cam-old", 1)]
    s.close()


def test_store_url_and_db_are_synonyms_and_exclusive(tmp_path: Path) -> None:
    by_db = parse_cloud_config('[store]\ndb = "x/cloud.db"\n', base_dir=tmp_path).store
    by_url = parse_cloud_config(
        f'[store]\nurl = "sqlite:///{tmp_path}/x/cloud.db"\n', base_dir=tmp_path
    ).store
    assert by_db.url == by_url.url == f"sqlite:///{tmp_path}/x/cloud.db"
    assert by_db.db == by_url.db == tmp_path / "x" / "cloud.db"
    pg = parse_cloud_config(
        '[store]\nurl = "postgresql://db.example/fleet"\npassword_file = "pg.secret"\n',
        base_dir=tmp_path,
    ).store
    assert pg.backend == "postgresql" and pg.password_file == tmp_path / "pg.secret"
    (tmp_path / "pg.secret").write_text("s3cret\n")
    assert engine_url(pg.url, pg.password_file).password == "s3cret"
    from cloud.config import CloudConfigInvalid

    with pytest.raises(CloudConfigInvalid, match="either url or db"):
        parse_cloud_config('[store]\ndb = "a.db"\nurl = "sqlite:///b.db"\n', base_dir=tmp_path)
    with pytest.raises(CloudConfigInvalid, match="neither sqlite"):
        parse_cloud_config('[store]\nurl = "mysql://x/y"\n', base_dir=tmp_path)


# --- the telemetry contract and ingest's writes -------------------------------------------


def test_each_record_is_stored_once_per_device_and_seq(store: Store) -> None:
    now = time.time()
    first = write(
        store,
        *(TelemetryRecord("cam-1", s, now, model=MODEL) for s in (1, 2, 3)),
        TelemetryRecord("cam-2", 1, now),
    )
    again = write(store, TelemetryRecord("cam-1", 2, now), TelemetryRecord("cam-1", 4, now))
    assert first.stored["telemetry"] == 4 and first.duplicates == 0
    assert again.stored["telemetry"] == 1 and again.duplicates == 1
    assert rows(store, "SELECT device_id, seq FROM telemetry ORDER BY device_id, seq") == [
        ("cam-1", 1),
        ("cam-1", 2),
        ("cam-1", 3),
        ("cam-1", 4),
        ("cam-2", 1),
    ]
    assert counter(store, "stored.telemetry") == 5 and counter(store, "duplicates") == 1
    # the contract for outside tools: unique (device_id, seq), whoever inserts, even on
    # another day (PostgreSQL's day partitions: its key table's trigger skips the row)
    again_later = (
        "INSERT INTO telemetry (device_id, seq, ts, received, body) "
        "VALUES ('cam-2', 1, 0, {received}, '{{}}')"
    )
    for received in (now, now + 3 * 86400, 0):
        try:
            store.execute(again_later.format(received=received))
        except DBAPIError as e:
            assert store.is_sqlite and "UNIQUE" in str(e)
    fresh = again_later.replace("'cam-2', 1", "'cam-2', 2").format(received=now + 3 * 86400)
    store.execute(fresh)  # a positive control: a new key on another day is stored
    assert rows(
        store,
        "SELECT seq, received > :later FROM telemetry WHERE device_id = 'cam-2' ORDER BY seq",
        later=now + 86400,
    ) == [(1, False), (2, True)]


def test_states_events_updates_and_a_last_will(store: Store) -> None:
    now = time.time()
    write(
        store,
        DeviceState("cam-1", True, now, profile="rpi4", model=MODEL, fps=9.5),
        TelemetryRecord("cam-1", 1, now, fps=12.0, latency_p95_ms=4.5),
        Event("cam-1", 2, now, "source", {"status": "up"}),
        UpdateStatus("cam-1", 3, now, "", "committed", "digits", 2, "cd" * 32),
    )
    write(store, DeviceState("cam-1", True, now - 10, profile="stale"))  # older: ignored
    view = device_views(store, 180.0)[0]
    assert view["online"] and view["profile"] == "rpi4"
    assert view["model"] == {"name": "digits", "version": 1, "sha256": "ab" * 32}
    assert view["fps"] == 12.0 and view["p95_ms"] == 4.5
    assert rows(store, "SELECT kind, detail FROM events") == [("source", '{"status": "up"}')]
    assert rows(store, "SELECT phase, version FROM updates") == [("committed", 2)]
    write(store, DeviceState("cam-1", False, now - 60))  # a will: ts of its connection's start
    assert not device_views(store, 180.0)[0]["online"]


def test_a_value_the_store_cannot_hold_is_quarantined_alone(
    store_url: str, cloud_env: CloudEnv
) -> None:
    """The savepoint path on both backends: a seq past 64 bits is refused by the store; that
    one message is quarantined and the rest of its batch stored."""
    from cloud.config import load_cloud_config

    ingester = Ingester(load_cloud_config(cloud_env.config))  # not started: no broker needed
    s = open_store(store_url)
    good, huge = TelemetryRecord("dev-a", 1, time.time()), TelemetryRecord("dev-a", 2**64, 0.0)
    written = ingester._commit(
        s,
        [(good, encode_message(good)), (huge, encode_message(huge))],
        [b"t/good", b"t/huge"],
        [],
        time.time(),
    )
    assert written.stored["telemetry"] == 1
    assert rows(s, "SELECT seq FROM telemetry") == [(1,)]
    assert rows(s, "SELECT topic, reason FROM quarantine") == [("t/huge", "store_error")]
    assert counter(s, "quarantined.store_error") == 1
    s.close()


# --- the rollout state machine -------------------------------------------------------------


def _rollout(store: Store, devices: list[str], waves: list[int]) -> str:
    with store.begin() as conn:
        rs.insert_rollout(
            conn,
            {
                "id": "r-1",
                "release_name": "digits",
                "release_version": 2,
                "waves": json.dumps([str(w) for w in waves]),
                "success_threshold_pct": 100,
                "max_failures_pct": 0,
            },
            [(d, i // 2, f'{{"to": "{d}"}}') for i, d in enumerate(devices)],
            time.time(),
        )
    return "r-1"


def _report(store: Store, device: str, seq: int, phase: str, reason: str = "") -> None:
    write(
        store,
        UpdateStatus(device, seq, time.time(), "r-1", phase, "digits", 2, "cd" * 32, reason=reason),
    )


def test_a_rollout_goes_wave_by_wave_to_completed(store: Store) -> None:
    published: list[str] = []
    rid = _rollout(store, ["a", "b", "c", "d"], [2, 4])

    def publish(device_id: str, payload: bytes) -> None:
        published.append(device_id)

    tick_rollouts(store, publish)
    assert published == ["a", "b"]
    _report(store, "a", 1, "downloading")
    assert rs.device_rows(store, rid)[0]["phase"] == "downloading"
    _report(store, "a", 2, "committed")
    _report(store, "b", 1, "committed")
    tick_rollouts(store, publish)
    assert published == ["a", "b", "c", "d"]
    _report(store, "c", 1, "committed")
    _report(store, "d", 1, "committed")
    tick_rollouts(store, publish)
    view = rollout_views(store, rid)[0]
    assert view["state"] == rs.RolloutState.COMPLETED and view["committed"] == 4


def test_each_failure_is_shown_with_the_devices_last_words_in_that_rollout(
    store: Store,
) -> None:
    rid = _rollout(store, ["a", "b", "c", "d"], [4])
    tick_rollouts(store, lambda d, p: None)
    write(
        store,
        UpdateStatus("a", 1, time.time(), rid, "downloading", detail="fetching"),
        UpdateStatus("a", 2, time.time(), rid, "rejected", reason="bad_signature", detail="k1"),
        UpdateStatus("b", 1, time.time(), rid, "rolled_back", reason="probation_failed"),
        UpdateStatus("c", 1, time.time(), rid, "committed", detail="fine"),
        UpdateStatus("d", 7, time.time(), "another-rollout", "rejected", detail="not this one"),
    )
    assert rs.failure_details(store, rid) == {"a": "k1", "b": ""}
    failures = rollout_views(store, rid)[0]["failures"]
    assert [(f["device_id"], f["reason"], f["detail"]) for f in failures] == [
        ("a", "bad_signature", "k1"),
        ("b", "probation_failed", ""),
    ]


def test_a_failure_pauses_resume_accepts_it_abort_clears(store: Store) -> None:
    published: list[tuple[str, bytes]] = []
    rid = _rollout(store, ["a", "b", "c", "d"], [2, 4])
    tick_rollouts(store, lambda d, p: published.append((d, p)))
    _report(store, "a", 1, "rolled_back", "probation_failed")
    tick_rollouts(store, lambda d, p: published.append((d, p)))
    view = rollout_views(store, rid)[0]
    assert view["state"] == "paused" and view["failure_reasons"] == {"probation_failed": 1}
    with pytest.raises(ValueError, match="not running"):
        pause_rollout(store, rid)
    resume_rollout(store, rid)
    assert rs.get_rollout(store, rid)["failures_accepted"] == 1
    assert abort_rollout(store, rid, lambda d, p: published.append((d, p))) == 1
    assert published[-1] == ("b", b"")  # pending, no report yet: its deployment cleared
    assert rs.get_rollout(store, rid)["state"] == rs.RolloutState.ABORTED


def test_a_silent_device_times_out_and_a_late_report_still_counts(store: Store) -> None:
    rid = _rollout(store, ["a", "b"], [2])
    now = time.time()
    tick_rollouts(store, lambda d, p: None, now=now)
    tick_rollouts(store, lambda d, p: None, now=now + 100, device_timeout_s=50)
    assert {r["status"] for r in rs.device_rows(store, rid)} == {"timed_out"}
    _report(store, "a", 1, "committed")
    assert rs.status_counts(store, rid) == {"committed": 1, "timed_out": 1}


# --- the fleet's views, groups, the audit trail -------------------------------------------


def test_groups_and_telemetry_pages(store: Store) -> None:
    now = time.time()
    write(store, *(TelemetryRecord("cam-1", s, now) for s in range(1, 6)))
    write(store, TelemetryRecord("cam-2", 1, now), now=now + 1)
    assert add_to_group(store, "lobby", ["cam-1", "cam-2", "cam-1", "cam-9"]) == 3
    assert add_to_group(store, "lobby", ["cam-1"]) == 0
    assert unknown_devices(store, ["cam-9", "cam-1"]) == ["cam-9"]
    assert remove_from_group(store, "lobby", ["cam-9"]) == 1
    assert group_views(store) == [{"group": "lobby", "devices": ["cam-1", "cam-2"]}]
    assert device_views(store, 180.0)[0]["groups"] == ["lobby"]
    first = telemetry_since(store, now - 1, limit=4)
    rest = telemetry_since(store, now - 1, after=first[-1][0], limit=4)
    seen = [(r["device_id"], r["seq"]) for _, r in first + rest]
    assert seen == [("cam-1", s) for s in range(1, 6)] + [("cam-2", 1)]
    assert [r["seq"] for _, r in telemetry_since(store, now - 1, "cam-2")] == [1]


def test_the_audit_trail_is_append_only(store: Store) -> None:
    audit.record(store, audit.Action.DEPLOY, "r-1/cam-1", sha256="ab", actor="ops")
    assert [(e.actor, e.action, e.target) for e in audit.entries(store)] == [
        ("ops", "deploy", "r-1/cam-1")
    ]
    for statement in ("UPDATE audit SET actor = 'someone-else'", "DELETE FROM audit"):
        with pytest.raises(DBAPIError, match="append-only"):
            store.execute(statement)
    assert len(audit.entries(store)) == 1


def test_prune_drops_old_telemetry_and_events_and_keeps_the_rest(
    store_url: str, tmp_path: Path
) -> None:
    s = open_store(store_url)
    now = time.time()
    write(
        s,
        TelemetryRecord("cam-1", 1, now - 40 * 86400),
        Event("cam-1", 2, now, "source"),
        UpdateStatus("cam-1", 3, now, "", "committed"),
        now=now - 40 * 86400,
    )
    write(s, TelemetryRecord("cam-1", 4, now), now=now)
    config = tmp_path / "cloud.toml"
    config.write_text(f'[store]\nurl = "{store_url}"\n')
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cloud.cli",
            "store",
            "prune",
            "--older-than",
            "30d",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "1 telemetry record(s), 1 events record(s) older than 30d deleted" in done.stdout
    # the rollup's minutes are kept longer (90 days by default): both minutes stay
    assert "0 rollup minute(s) older than 90d deleted" in done.stdout
    assert rows(s, "SELECT COUNT(*) FROM telemetry_minutes") == [(2,)]
    assert rows(s, "SELECT seq FROM telemetry") == [(4,)]
    assert rows(s, "SELECT COUNT(*) FROM events") == [(0,)]
    assert rows(s, "SELECT seq FROM updates") == [(3,)]  # the rollouts' history stays
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "cloud.cli",
            "store",
            "prune",
            "--older-than",
            "soon",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    rollup = subprocess.run(
        [
            sys.executable,
            "-m",
            "cloud.cli",
            "store",
            "prune",
            "--older-than",
            "30d",
            "--rollup-older-than",
            "35d",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "1 rollup minute(s) older than 35d deleted" in rollup.stdout, rollup.stderr
    assert rows(s, "SELECT COUNT(*) FROM telemetry_minutes") == [(1,)]  # this minute's
    s.close()


def test_check_config_names_a_postgresql_store_without_its_password(tmp_path: Path) -> None:
    config = tmp_path / "cloud.toml"
    config.write_text(
        '[store]\nurl = "postgresql://fleet:s3cret@db.example:5433/litefleet"\n[mqtt]\nport = 1\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "cloud.cli", "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = done.stdout + done.stderr
    assert "store postgresql://fleet:***@db.example:5433/litefleet" in out, out
    assert "s3cret" not in out


def test_the_minute_rollup_gives_the_long_chart_what_the_raw_records_give(store: Store) -> None:
    """Kept by ingest (a redelivered batch counted once); the 7-day chart's hourly buckets
    read from it equal those computed from every record."""
    from cloud.store import dashboard

    start = 3600.0 * 500_000  # an hour boundary
    records = [
        TelemetryRecord("cam-1", s, start + 37.0 * s, fps=float(s % 7), latency_p95_ms=float(s % 5))
        for s in range(1, 400)
    ]
    for i in range(0, len(records), 50):
        write(store, *records[i : i + 50], now=start + 20_000)
    write(
        store,
        *records[100:160],
        TelemetryRecord("cam-1", 400, start + 37.0 * 400, fps=3.0),
        now=start + 20_000,
    )  # a redelivery, with one new record
    assert rows(store, "SELECT SUM(records) FROM telemetry_minutes") == [(400,)]
    raw = dashboard.device_series(store, "cam-1", start, 3600, rollup=False)
    rolled = dashboard.device_series(store, "cam-1", start, 3600)
    assert len(raw[0]) == 5  # 400 records 37 s apart: 4.1 hours
    for a, b in zip(raw[0], rolled[0], strict=True):
        assert a["bucket"] == b["bucket"] and a["last_seq"] == b["last_seq"]
        assert a["fps"] == pytest.approx(b["fps"]) and a["p95_ms"] == pytest.approx(b["p95_ms"])
    assert raw[1] == rolled[1]
