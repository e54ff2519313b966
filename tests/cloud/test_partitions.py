"""PostgreSQL's daily partitions of telemetry and events (`cloud.store.partitions`): the
migration that makes them, days made ahead, rows that arrive before their day's partition,
redeliveries across days, and prune dropping whole days."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import text

from cloud.ingest import IngestStats, write_batch
from cloud.store import Store, engine_url, open_store
from cloud.store.migrate import HEAD, _config, current_version, migrate
from cloud.store.partitions import (
    AHEAD_DAYS,
    DAY_S,
    day_of,
    ensure_partitions,
    partitions,
)
from cloud.store.records import prune
from shared.messages import Event, Message, TelemetryRecord, encode_message
from tests.postgres_server import PostgresServer

NOW = time.time()
TODAY = day_of(NOW)


def write(store: Store, *messages: Message, now: float) -> IngestStats:
    stats = IngestStats()
    with store.begin() as conn:
        write_batch(conn, [(m, encode_message(m)) for m in messages], now, stats)
    return stats


def values(store: Store, sql: str, **params: object) -> list[tuple[object, ...]]:
    with store.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params)]


def partitions_of(store: Store, kind: str = "telemetry") -> dict[int, str]:
    with store.connect() as conn:
        return partitions(conn, kind)


def tables(store: Store) -> set[str]:
    return {str(r[0]) for r in values(store, "SELECT tablename FROM pg_tables")}


@pytest.fixture
def pg(postgres: PostgresServer):
    store = Store(engine_url(postgres.create_database()))
    migrate(store)
    yield store
    store.close()


def test_a_new_store_has_a_partition_per_day_from_yesterday_on_and_a_default(pg: Store) -> None:
    with pg.connect() as conn:
        for kind in ("telemetry", "events"):
            days = sorted(partitions(conn, kind))
            assert days == list(range(TODAY - 1, TODAY + AHEAD_DAYS + 1))
    assert {"telemetry_default", "events_default", "telemetry_keys", "event_keys"} <= tables(pg)
    write(pg, TelemetryRecord("cam-1", 1, NOW), Event("cam-1", 2, NOW, "source"), now=NOW)
    name = partitions_of(pg)[TODAY]
    assert values(pg, f"SELECT device_id, seq FROM {name}") == [("cam-1", 1)]
    assert values(pg, "SELECT device_id, seq, day FROM telemetry_keys") == [("cam-1", 1, TODAY)]


def test_a_redelivery_on_another_day_is_stored_once(pg: Store) -> None:
    record = TelemetryRecord("cam-1", 7, NOW - 60)
    first = write(pg, record, TelemetryRecord("cam-1", 8, NOW), now=NOW)
    again = write(pg, record, TelemetryRecord("cam-1", 9, NOW), now=NOW + 2 * DAY_S)
    twice = write(pg, record, record, now=NOW + 3 * DAY_S)  # twice in one batch, too
    assert first.stored["telemetry"] == 2
    assert (again.stored["telemetry"], again.duplicates) == (1, 1)
    assert (twice.stored["telemetry"], twice.duplicates) == (0, 2)
    assert values(pg, "SELECT seq, received FROM telemetry ORDER BY seq") == [
        (7, NOW),
        (8, NOW),
        (9, NOW + 2 * DAY_S),
    ]


def test_rows_before_their_days_partition_wait_in_the_default_and_move_into_it(
    pg: Store,
) -> None:
    later = (TODAY + AHEAD_DAYS + 5) * DAY_S + 10.0  # no partition made yet for that day
    write(pg, TelemetryRecord("cam-1", 1, NOW), now=later)
    assert values(pg, "SELECT seq FROM telemetry_default") == [(1,)]
    with pg.begin() as conn:
        made = ensure_partitions(conn, later)
    name = partitions_of(pg)[day_of(later)]
    assert name in made
    assert values(pg, "SELECT seq FROM telemetry_default") == []
    assert values(pg, f"SELECT seq, received FROM {name}") == [(1, later)]
    # the moved row's key stayed: its redelivery is still a duplicate
    assert write(pg, TelemetryRecord("cam-1", 1, NOW), now=later).duplicates == 1
    with pg.begin() as conn:
        assert ensure_partitions(conn, later) == []  # nothing left to make


def test_prune_drops_whole_days_and_their_keys(pg: Store) -> None:
    old = (TODAY - 40) * DAY_S + 3600.0
    with pg.begin() as conn:
        ensure_partitions(conn, old)  # the day 40 days ago has its partition
    write(pg, TelemetryRecord("cam-1", 1, NOW), Event("cam-1", 2, NOW, "source"), now=old)
    write(pg, TelemetryRecord("cam-1", 3, NOW), now=(TODAY - 45) * DAY_S)  # in the default
    write(pg, TelemetryRecord("cam-1", 4, NOW), now=NOW)
    old_partition = partitions_of(pg)[TODAY - 40]
    assert old_partition in tables(pg)

    removed = prune(pg, NOW - 30 * DAY_S)

    assert removed == {"telemetry": 2, "events": 1}
    assert old_partition not in tables(pg)
    assert values(pg, "SELECT seq FROM telemetry") == [(4,)]
    assert values(pg, "SELECT seq FROM telemetry_keys") == [(4,)]
    assert values(pg, "SELECT COUNT(*) FROM events") == [(0,)]
    # whole days only: a record a little older than the cutoff, on the cutoff's day, stays
    edge = (day_of(NOW - 30 * DAY_S)) * DAY_S + 1.0
    write(pg, TelemetryRecord("cam-2", 1, NOW), now=edge)
    assert prune(pg, max(edge + 1.0, NOW - 30 * DAY_S))["telemetry"] == 0
    assert values(pg, "SELECT seq FROM telemetry WHERE device_id = 'cam-2'") == [(1,)]


def test_the_migration_partitions_a_store_with_rows_and_keeps_every_row(
    postgres: PostgresServer,
) -> None:
    from alembic import command

    url = postgres.create_database()
    store = Store(engine_url(url))
    with store.begin() as conn:
        command.upgrade(_config(conn), "0005")  # the plain tables of the last version
    days = [TODAY - 3, TODAY - 3, TODAY - 1, TODAY]
    with store.begin() as conn:
        for seq, day in enumerate(days, 1):
            conn.execute(
                text(
                    "INSERT INTO telemetry (device_id, seq, ts, received, body) "
                    "VALUES ('cam-1', :seq, :ts, :ts, '{}')"
                ),
                {"seq": seq, "ts": day * DAY_S + 60.0 * seq},
            )
            conn.execute(
                text(
                    "INSERT INTO events (device_id, seq, ts, received, kind, detail) "
                    "VALUES ('cam-1', :seq, :ts, :ts, 'source', '{}')"
                ),
                {"seq": 100 + seq, "ts": day * DAY_S + 60.0 * seq},
            )
    assert "telemetry_keys" not in tables(store)

    migrate(store)

    with store.connect() as conn:
        assert current_version(conn) == HEAD
        assert set(partitions(conn, "telemetry")) >= {TODAY - 3, TODAY - 1, TODAY}
    assert values(store, "SELECT seq FROM telemetry ORDER BY seq") == [(1,), (2,), (3,), (4,)]
    assert values(store, "SELECT COUNT(*) FROM event_keys") == [(4,)]
    name = partitions_of(store)[TODAY - 3]
    assert values(store, f"SELECT seq FROM {name} ORDER BY seq") == [(1,), (2,)]
    assert write(store, TelemetryRecord("cam-1", 2, NOW), now=NOW).duplicates == 1
    store.close()
    with open_store(url) as reopened:  # the migrated store is used as it is
        assert values(reopened, "SELECT COUNT(*) FROM telemetry") == [(4,)]


def test_the_active_controller_makes_the_coming_days_and_a_standby_does_not(
    pg: Store, tmp_path
) -> None:
    from cloud.config import load_cloud_config
    from cloud.service import CloudService, ServeRole
    from tests.cloud.conftest import write_config

    config = write_config(tmp_path, mqtt_port=1)
    config.write_text(
        config.read_text().replace(
            'db = "cloud.db"',
            f'url = "{pg.url.set(drivername="postgresql").render_as_string(False)}"',
        )
    )
    last = TODAY + AHEAD_DAYS
    name = partitions_of(pg)[last]
    pg.execute(f"DROP TABLE {name}")
    service = CloudService(
        load_cloud_config(config), role=ServeRole.CONTROLLER, http=False, web=False
    )
    assert service.lease is not None
    service.make_partitions()  # a standby: the lease is not held
    assert last not in partitions_of(pg)
    service.lease._renew()  # takes the free lease, as `start` does
    assert service.lease.held
    service.make_partitions()
    assert name in tables(pg)


def test_two_processes_making_the_same_days_at_once_both_succeed(pg: Store) -> None:
    """Every `serve` makes the coming days at start: the second waits for the first's lock,
    then finds the days made (the positive control: they were missing when it looked)."""
    later = NOW + 20 * DAY_S
    first, second = pg.connect(), pg.connect()
    try:
        pid = second.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        second.rollback()
        one, two = first.begin(), second.begin()
        assert ensure_partitions(first, later)  # holds the lock until it commits
        results: list[object] = []

        def make() -> None:
            try:
                results.append(ensure_partitions(second, later))
            except Exception as e:  # the assertion below shows it
                results.append(e)

        waiter = threading.Thread(target=make)
        waiter.start()

        def waiting_for_the_lock() -> bool:
            return bool(
                pg.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'",
                    (pid,),
                ).all()
            )

        deadline = time.monotonic() + 30
        while not waiting_for_the_lock() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert waiting_for_the_lock()  # it has looked, found the days missing, and waits
        one.commit()
        waiter.join(30)
        two.commit()
        assert results == [[]]
    finally:
        first.close()
        second.close()
    assert day_of(later) in partitions_of(pg)
