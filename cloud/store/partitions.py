"""Daily partitions of telemetry and events on PostgreSQL (SQLite keeps plain tables).

On PostgreSQL `telemetry` and `events` are partitioned by RANGE of `received` (the cloud's
clock, never the device's), one partition per UTC day named `telemetry_p20261130`, and a
DEFAULT partition (`telemetry_default`) that takes any row whose day has no partition yet, so
ingest never fails for a missing day. Pruning drops whole days: `DROP TABLE` of a partition
instead of a DELETE of its rows.

PostgreSQL's unique keys on a partitioned table must include the partition key, and a
redelivered record can arrive on another day than the first copy. So the contract "unique on
(device_id, seq)" is kept by a narrow key table per partitioned table (`telemetry_keys`,
`event_keys`: device_id, seq, day) whose primary key is (device_id, seq), and a trigger
before each insert into the partitioned table: it records the row's key, or skips the row
when its key is there already (as ON CONFLICT DO NOTHING would), whoever inserts. Ingest,
the hot path, writes keys and rows in one statement instead (`records.insert_new`: the rows
whose key insert was new) and tells the trigger so (`KEYS_WRITTEN`): a third cheaper per
record than the trigger's own insert. The key table holds exactly the keys of the rows
stored: prune deletes the keys of the days it drops.

Partitions are made ahead (`ensure_partitions`: yesterday to `AHEAD_DAYS` on) by the
migration, by every `serve` at start and by the active controller each hour. A partition made
for a day that already has rows in the DEFAULT partition takes them over.
"""

from __future__ import annotations

import logging
import re
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import BigInteger, Column, Connection, Index, MetaData, Table, Text
from sqlalchemy.schema import CreateColumn, CreateIndex

from cloud.store.schema import events, telemetry

if TYPE_CHECKING:
    from cloud.store.engine import Store

__all__ = [
    "AHEAD_DAYS",
    "DAY_S",
    "KEYS_WRITTEN",
    "KEY_TABLES",
    "PARTITIONED",
    "create_partition",
    "create_partitioned",
    "day_of",
    "ensure_partitions",
    "is_partition_machinery",
    "make_ahead",
    "partitions",
    "prune_days",
]

log = logging.getLogger(__name__)
DAY_S = 86400
AHEAD_DAYS = 3
# set (SET LOCAL) by a transaction that writes the keys itself, in the same statement as the
# rows (ingest: `records.insert_new`): the trigger then lets its rows through unchecked
KEYS_WRITTEN = "litefleet.keys_written"
LOCK_TIMEOUT = "5s"  # waiting longer for a busy table than this: try again at the next round
PARTITIONED: dict[str, Table] = {"telemetry": telemetry, "events": events}

key_metadata = MetaData()  # PostgreSQL only: the key tables of the partitioned tables
KEY_TABLES: dict[str, Table] = {
    kind: Table(
        name,
        key_metadata,
        Column("device_id", Text, primary_key=True),
        Column("seq", BigInteger, primary_key=True, autoincrement=False),
        Column("day", BigInteger, nullable=False),
        Index(f"{name}_day", "day"),
    )
    for kind, name in (("telemetry", "telemetry_keys"), ("events", "event_keys"))
}
_PARTITION_NAME = re.compile(r"^(telemetry|events)_p(\d{8})$")


def day_of(received: float) -> int:
    """The UTC day number (days since 1970-01-01) of a `received` time."""
    return int(received // DAY_S)


def _name(kind: str, day: int) -> str:
    return f"{kind}_p{datetime.fromtimestamp(day * DAY_S, UTC):%Y%m%d}"


def is_partition_machinery(name: str) -> bool:
    """Whether a table name is a partition, a DEFAULT partition or a key table (what the
    PostgreSQL schema has beyond `schema.metadata`)."""
    return bool(
        _PARTITION_NAME.match(name)
        or name in {f"{kind}_default" for kind in PARTITIONED}
        or name in {t.name for t in KEY_TABLES.values()}
    )


def create_partitioned(conn: Connection) -> None:
    """Create telemetry and events as partitioned tables, their DEFAULT partitions and key
    tables (PostgreSQL; the columns and indexes are `schema`'s)."""
    for kind, table in PARTITIONED.items():
        cols = ", ".join(str(CreateColumn(c).compile(dialect=conn.dialect)) for c in table.columns)
        conn.exec_driver_sql(
            f"CREATE TABLE {kind} ({cols}, PRIMARY KEY (device_id, seq, received)) "
            f"PARTITION BY RANGE (received)"
        )
        for index in table.indexes:
            conn.execute(CreateIndex(index))
        conn.exec_driver_sql(f"CREATE TABLE {kind}_default PARTITION OF {kind} DEFAULT")
    key_metadata.create_all(conn)
    for kind, keys in KEY_TABLES.items():
        conn.exec_driver_sql(
            f"CREATE OR REPLACE FUNCTION {keys.name}_record() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN IF current_setting('{KEYS_WRITTEN}', true) = 'on' THEN RETURN NEW; END IF; "
            f"INSERT INTO {keys.name} (device_id, seq, day) VALUES (NEW.device_id, "
            f"NEW.seq, floor(NEW.received / {DAY_S})::bigint) ON CONFLICT DO NOTHING; "
            f"IF FOUND THEN RETURN NEW; END IF; RETURN NULL; END $$"
        )
        conn.exec_driver_sql(
            f"CREATE TRIGGER {keys.name}_record BEFORE INSERT ON {kind} "
            f"FOR EACH ROW EXECUTE FUNCTION {keys.name}_record()"
        )


def partitions(conn: Connection, kind: str) -> dict[int, str]:
    """The day partitions of `kind` (telemetry or events): day number -> table name."""
    names = conn.exec_driver_sql(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s",
        (kind,),
    ).scalars()
    out = {}
    for name in names:
        m = _PARTITION_NAME.match(name)
        if m and m.group(1) == kind:
            day = datetime.strptime(m.group(2), "%Y%m%d").replace(tzinfo=UTC)
            out[day_of(day.timestamp())] = name
    return out


def ensure_partitions(conn: Connection, now: float | None = None) -> list[str]:
    """Create the partitions from yesterday to AHEAD_DAYS from today that are missing; the
    names created. Raises the driver's error when a table stays locked (LOCK_TIMEOUT)."""
    today = day_of(time.time() if now is None else now)
    created = []
    for kind in PARTITIONED:
        have = partitions(conn, kind)
        missing = [d for d in range(today - 1, today + AHEAD_DAYS + 1) if d not in have]
        if not missing:
            continue
        # the parent first, as ingest's inserts take it (then the partitions): no deadlock
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        conn.exec_driver_sql(f"LOCK TABLE {kind} IN ACCESS EXCLUSIVE MODE")
        have = partitions(conn, kind)  # another process may have made them meanwhile
        for day in (d for d in missing if d not in have):
            created.append(create_partition(conn, kind, day))
    return created


def make_ahead(store: Store, now: float | None = None) -> list[str]:
    """`ensure_partitions` in its own transaction (nothing on SQLite); the names made."""
    if store.is_sqlite:
        return []
    with store.begin() as conn:
        made = ensure_partitions(conn, now)
    if made:
        log.info("made partition(s) %s", ", ".join(made))
    return made


def create_partition(conn: Connection, kind: str, day: int) -> str:
    """Make `kind`'s partition for `day` (the caller holds the parent's lock, or is alone:
    a migration); rows of that day waiting in the DEFAULT partition move into it."""
    name, lo, hi = _name(kind, day), day * DAY_S, (day + 1) * DAY_S
    bounds = f"FOR VALUES FROM ({lo}) TO ({hi})"
    waiting = conn.exec_driver_sql(
        f"SELECT 1 FROM {kind}_default WHERE received >= %s AND received < %s LIMIT 1",
        (lo, hi),
    ).first()
    if waiting is None:
        conn.exec_driver_sql(f"CREATE TABLE {name} PARTITION OF {kind} {bounds}")
        return name
    # rows of this day arrived before its partition: move them into it, then attach it
    conn.exec_driver_sql(f"CREATE TABLE {name} (LIKE {kind} INCLUDING DEFAULTS)")
    moved = conn.exec_driver_sql(
        f"WITH moved AS (DELETE FROM {kind}_default WHERE received >= %s AND received < %s "
        f"RETURNING *) INSERT INTO {name} SELECT * FROM moved",
        (lo, hi),
    ).rowcount
    conn.exec_driver_sql(f"ALTER TABLE {kind} ATTACH PARTITION {name} {bounds}")
    log.info("partition %s made, with %d row(s) from %s_default", name, moved, kind)
    return name


def prune_days(conn: Connection, received_before: float) -> dict[str, int]:
    """Drop the whole days before the day of `received_before` (PostgreSQL): their
    partitions, their rows in the DEFAULT partition and their keys; rows removed per kind."""
    first_kept = day_of(received_before)
    conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    out: dict[str, int] = {}
    for kind in PARTITIONED:
        keys: Any = KEY_TABLES[kind]
        out[kind] = int(conn.execute(keys.delete().where(keys.c.day < first_kept)).rowcount)
        conn.exec_driver_sql(
            f"DELETE FROM {kind}_default WHERE received < %s", (first_kept * DAY_S,)
        )
        for day, name in sorted(partitions(conn, kind).items()):
            if day < first_kept:
                conn.exec_driver_sql(f"DROP TABLE {name}")
    return out
