"""What devices report, each record stored once per (device_id, seq): telemetry, events and
update reports; and reading them back in arrival order.

Reading in arrival order pages by a cursor `(received, device_id, seq)`: the last row a
reader saw; the next page starts after it (both backends compare row values). `received` is
taken before the batch's transaction, so a row can commit behind a reader's cursor (another
ingest worker's batch, a slow transaction): a follower reads the keys of a trailing window
again (`telemetry_keys`) and fetches what it had not seen (`telemetry_rows`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Double, Table, delete, func, select, tuple_, union_all

from cloud.store.partitions import DAY_S, KEY_TABLES, KEYS_WRITTEN, PARTITIONED, prune_days
from cloud.store.schema import events, telemetry, updates

if TYPE_CHECKING:
    from cloud.store.engine import Store

__all__ = [
    "RECORD_TABLES",
    "Cursor",
    "columns",
    "events_since",
    "insert_new",
    "newest_lag",
    "prune",
    "seq_gaps",
    "stored_count",
    "telemetry_keys",
    "telemetry_rows",
    "telemetry_since",
]

Cursor = tuple[float, str, int]  # (received, device_id, seq) of the last row seen
START: Cursor = (float("-inf"), "", -1)
RECORD_TABLES: dict[str, Table] = {"telemetry": telemetry, "events": events, "updates": updates}
_INSERT_SQL: dict[tuple[str, str], str] = {}


def columns(kind: str) -> tuple[str, ...]:
    """The column order of `insert_new`'s row tuples for this kind of record."""
    return tuple(c.name for c in RECORD_TABLES[kind].columns)


def insert_new(conn: Connection, kind: str, rows: list[tuple[Any, ...]]) -> int:
    """Insert the records (tuples in `columns(kind)` order) whose (device_id, seq) is not
    stored yet; how many were new (the rest are duplicates: a redelivery or a resend).

    Ingest's hot path: one driver-level statement of plain tuples (SQLAlchemy's per-row
    parameter processing would cost as much again as SQLite's own work). On PostgreSQL the
    day-partitioned kinds go through their key table (`cloud.store.partitions`)."""
    if not rows:
        return 0
    dialect = conn.dialect.name
    if dialect == "postgresql" and kind in PARTITIONED:
        return _insert_keyed(conn, kind, rows)
    sql = _INSERT_SQL.get((dialect, kind))
    if sql is None:
        names = columns(kind)
        mark = "?" if dialect == "sqlite" else "%s"
        sql = (
            f"INSERT INTO {kind} ({', '.join(names)}) VALUES "
            f"({', '.join([mark] * len(names))}) ON CONFLICT DO NOTHING"
        )
        _INSERT_SQL[(dialect, kind)] = sql
    return int(conn.exec_driver_sql(sql, rows).rowcount)


def _insert_keyed(conn: Connection, kind: str, rows: list[tuple[Any, ...]]) -> int:
    """PostgreSQL, a day-partitioned kind: one statement inserts the rows' keys into the key
    table and, of the rows, those whose key was new. Each column goes as one array in binary
    (`%b`: a text array literal would cost the escaping of every record's JSON)."""
    table = RECORD_TABLES[kind]
    sql = _INSERT_SQL.get(("keyed", kind))
    if sql is None:
        names = ", ".join(columns(kind))
        casts = ", ".join(f"%b::{c.type.compile(dialect=conn.dialect)}[]" for c in table.columns)
        sql = (
            f"WITH r ({names}) AS (SELECT * FROM unnest({casts})), "
            f"new AS (INSERT INTO {KEY_TABLES[kind].name} (device_id, seq, day) "
            f"SELECT device_id, seq, floor(received / {DAY_S})::bigint FROM r "
            f"ON CONFLICT DO NOTHING RETURNING device_id, seq) "
            f"INSERT INTO {kind} ({names}) SELECT r.* FROM r "
            f"JOIN new ON new.device_id = r.device_id AND new.seq = r.seq"
        )
        _INSERT_SQL[("keyed", kind)] = sql
    # the trigger is told that this transaction writes its keys itself; and a plan for these
    # arrays' real lengths, never a prepared statement's generic guess of a few rows
    conn.exec_driver_sql(
        f"SELECT set_config('{KEYS_WRITTEN}', 'on', true), "
        "set_config('plan_cache_mode', 'force_custom_plan', true)"
    )
    firsts = list({(r[0], r[1]): r for r in reversed(rows)}.values())  # one row per key
    arrays = [list(values) for values in zip(*firsts, strict=True)]
    for i, column in enumerate(table.columns):
        if isinstance(column.type, Double):  # a JSON number may be an int: one type per array
            arrays[i] = [None if v is None else float(v) for v in arrays[i]]
    return int(conn.exec_driver_sql(sql, tuple(arrays)).rowcount)


def _since(
    table: Table,
    columns: list[Any],
    since: float,
    after: Cursor | None,
    device_id: str | None,
    limit: int,
) -> Any:
    key = tuple_(table.c.received, table.c.device_id, table.c.seq)
    query = select(*columns).where(table.c.received >= since)
    if after is not None:
        query = query.where(key > tuple_(*after))
    if device_id is not None:
        query = query.where(table.c.device_id == device_id)
    return query.order_by(table.c.received, table.c.device_id, table.c.seq).limit(limit)


def telemetry_since(
    store: Store,
    since: float,
    device_id: str | None = None,
    after: Cursor | None = None,
    limit: int = 10_000,
) -> list[tuple[Cursor, str, float]]:
    """(cursor, body, received) of records received since `since` (after `after`), oldest
    first."""
    t = telemetry
    query = _since(
        t, [t.c.received, t.c.device_id, t.c.seq, t.c.body], since, after, device_id, limit
    )
    with store.connect() as conn:
        return [((r, d, s), body, r) for r, d, s, body in conn.execute(query)]


def telemetry_keys(
    store: Store,
    since: float,
    until: Cursor,
    device_id: str | None = None,
    after: Cursor | None = None,
    limit: int = 10_000,
) -> list[Cursor]:
    """The cursors (no bodies) of records received since `since`, up to `until` included
    (after `after`), oldest first: what a follower has passed, to find rows that committed
    behind it."""
    t = telemetry
    key = tuple_(t.c.received, t.c.device_id, t.c.seq)
    query = _since(t, [t.c.received, t.c.device_id, t.c.seq], since, after, device_id, limit)
    query = query.where(key <= tuple_(*until))
    with store.connect() as conn:
        return [(r, d, s) for r, d, s in conn.execute(query)]


def telemetry_rows(store: Store, keys: list[tuple[str, int]]) -> list[tuple[Cursor, str, float]]:
    """(cursor, body, received) of the records with these (device_id, seq), oldest first."""
    t = telemetry
    if not keys:
        return []
    query = (
        select(t.c.received, t.c.device_id, t.c.seq, t.c.body)
        .where(tuple_(t.c.device_id, t.c.seq).in_(keys))
        .order_by(t.c.received, t.c.device_id, t.c.seq)
    )
    with store.connect() as conn:
        return [((r, d, s), body, r) for r, d, s, body in conn.execute(query)]


def events_since(
    store: Store,
    since: float,
    device_id: str | None = None,
    kind: str | None = None,
    after: Cursor | None = None,
    limit: int = 1000,
) -> list[tuple[Cursor, dict[str, Any]]]:
    """(cursor, row) of events received since `since` (after `after`), oldest first."""
    e = events
    query = _since(
        e,
        [e.c.received, e.c.device_id, e.c.seq, e.c.ts, e.c.kind, e.c.detail],
        since,
        after,
        device_id,
        limit,
    )
    if kind is not None:
        query = query.where(e.c.kind == kind)
    with store.connect() as conn:
        return [
            ((r["received"], r["device_id"], r["seq"]), dict(r))
            for r in conn.execute(query).mappings()
        ]


def newest_lag(conn: Connection) -> float | None:
    """Seconds from the newest stored record's device timestamp to its storage."""
    row = conn.execute(
        select(telemetry.c.received - telemetry.c.ts).order_by(telemetry.c.received.desc()).limit(1)
    ).first()
    return float(row[0]) if row else None


def stored_count(store: Store) -> int:
    """Telemetry, events and update reports stored, all devices."""
    with store.connect() as conn:
        return sum(
            int(conn.scalar(select(func.count()).select_from(t)) or 0)
            for t in RECORD_TABLES.values()
        )


def seq_gaps(store: Store, id_prefix: str = "") -> dict[str, int]:
    """Devices (whose id starts with `id_prefix`) with seqs missing in the store, and how
    many each: a device numbers everything it sends (telemetry, events, update reports) with
    one increasing seq from 1, so a highest stored seq H with fewer than H seqs stored means
    the difference was lost."""
    pattern = id_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    parts = union_all(
        *(
            select(t.c.device_id, t.c.seq).where(t.c.device_id.like(pattern, escape="\\"))
            for t in RECORD_TABLES.values()
        )
    ).subquery()
    query = select(
        parts.c.device_id, func.max(parts.c.seq), func.count(parts.c.seq.distinct())
    ).group_by(parts.c.device_id)
    with store.connect() as conn:
        return {d: int(top) - int(n) for d, top, n in conn.execute(query) if top != n}


PRUNED = tuple(PARTITIONED)  # telemetry and events; update reports stay: the rollouts' history


def prune(store: Store, received_before: float) -> dict[str, int]:
    """Remove telemetry and events received before `received_before`; how many of each.

    SQLite deletes those rows. PostgreSQL drops whole UTC days, those before the day of
    `received_before` (`partitions.prune_days`): a record stays up to a day longer."""
    with store.begin() as conn:
        if not store.is_sqlite:
            return prune_days(conn, received_before)
        out = {}
        for kind in PRUNED:
            table = RECORD_TABLES[kind]
            out[kind] = int(
                conn.execute(delete(table).where(table.c.received < received_before)).rowcount
            )
    return out
