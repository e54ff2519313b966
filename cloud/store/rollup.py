"""The per-device, per-minute telemetry rollup (`telemetry_minutes`), kept by ingest.

Each batch's records add to their (device, minute of the device's `ts`) rows in the batch's
own transaction: records, the sums of fps and p95 latency, the highest seq. A batch with a
duplicate (a redelivered record, stored before) recomputes its minutes from `telemetry`
instead, so a record counts once however often it arrives.

Read back by `buckets`: per device, per whole number of minutes (`litefleet telemetry
--every`, and the dashboard's long charts), without reading the records themselves.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, bindparam, case, delete, func, literal, select, tuple_

from cloud.store.dialect import upsert
from cloud.store.schema import telemetry
from cloud.store.schema import telemetry_minutes as tm

if TYPE_CHECKING:
    from cloud.store.engine import Store

__all__ = ["Bucket", "BucketCursor", "add_records", "buckets", "prune_minutes", "recompute"]

Key = tuple[str, int]  # (device_id, minute)
BucketCursor = tuple[int, str]  # (bucket, device_id) of the last bucket a reader saw


def _minutes(
    rows: Iterable[tuple[str, int, float, float | None, float | None]],
) -> dict[Key, list[float]]:
    out: dict[Key, list[float]] = {}
    for device_id, seq, ts, fps, p95 in rows:
        agg = out.setdefault((device_id, math.floor(ts / 60)), [0, 0.0, 0.0, -1])
        agg[0] += 1
        agg[1] += fps or 0.0
        agg[2] += p95 or 0.0
        agg[3] = max(agg[3], seq)
    return out


def add_records(conn: Connection, rows: list[tuple[Any, ...]], all_new: bool) -> None:
    """Telemetry rows as ingest inserts them (`records.columns("telemetry")` order)."""
    if not rows:
        return
    keyed = _minutes((r[0], r[1], r[2], r[7], r[8]) for r in rows)
    if not all_new:
        recompute(conn, keyed)
        return
    stmt = upsert(
        conn,
        tm,
        ["device_id", "minute"],
        {
            "records": lambda ex: tm.c.records + ex.records,
            "fps_sum": lambda ex: tm.c.fps_sum + ex.fps_sum,
            "p95_sum": lambda ex: tm.c.p95_sum + ex.p95_sum,
            "last_seq": lambda ex: case(
                (ex.last_seq > tm.c.last_seq, ex.last_seq), else_=tm.c.last_seq
            ),
        },
    )
    conn.execute(
        stmt,
        [
            {
                "device_id": d,
                "minute": m,
                "records": a[0],
                "fps_sum": a[1],
                "p95_sum": a[2],
                "last_seq": a[3],
            }
            for (d, m), a in keyed.items()
        ],
    )


def recompute(conn: Connection, keys: Iterable[Key]) -> None:
    """Set these minutes' rows from the telemetry stored for them."""
    t = telemetry
    query = select(
        func.count(),
        func.coalesce(func.sum(t.c.fps), 0.0),
        func.coalesce(func.sum(t.c.latency_p95_ms), 0.0),
        func.max(t.c.seq),
    ).where(
        and_(t.c.device_id == bindparam("d"), t.c.ts >= bindparam("lo"), t.c.ts < bindparam("hi"))
    )
    stmt = upsert(
        conn,
        tm,
        ["device_id", "minute"],
        {
            "records": lambda ex: ex.records,
            "fps_sum": lambda ex: ex.fps_sum,
            "p95_sum": lambda ex: ex.p95_sum,
            "last_seq": lambda ex: ex.last_seq,
        },
    )
    for device_id, minute in keys:
        n, fps, p95, last = conn.execute(
            query, {"d": device_id, "lo": minute * 60.0, "hi": (minute + 1) * 60.0}
        ).one()
        if n:
            conn.execute(
                stmt,
                {
                    "device_id": device_id,
                    "minute": minute,
                    "records": n,
                    "fps_sum": fps,
                    "p95_sum": p95,
                    "last_seq": last,
                },
            )


@dataclass(frozen=True)
class Bucket:
    """One device's records in one bucket of `every_s` seconds of device time, starting at
    `bucket * every_s` (epoch seconds)."""

    bucket: int
    device_id: str
    records: int
    fps_sum: float
    p95_sum: float
    last_seq: int

    @property
    def cursor(self) -> BucketCursor:
        return (self.bucket, self.device_id)

    @property
    def fps(self) -> float:
        return self.fps_sum / self.records

    @property
    def p95_ms(self) -> float:
        return self.p95_sum / self.records


def buckets(
    store: Store,
    since: float,
    every_s: int,
    device_id: str | None = None,
    after: BucketCursor | None = None,
    limit: int = 10_000,
) -> list[Bucket]:
    """Each device's buckets of `every_s` seconds (a whole number of minutes) from the minute
    holding `since` (device time), ordered by (bucket, device_id), after `after`. The first
    bucket holds only the minutes from `since` on. Integer arithmetic only, so SQLite and
    PostgreSQL agree: `minute - ((minute % m) + m) % m` is the bucket's first minute."""
    if every_s < 60 or every_s % 60:
        raise ValueError(f"a rollup bucket is a whole number of minutes, not {every_s} s")
    m = literal(every_s // 60)
    inner = select(
        tm.c.device_id,
        (tm.c.minute - ((tm.c.minute % m) + m) % m).label("start"),
        tm.c.records,
        tm.c.fps_sum,
        tm.c.p95_sum,
        tm.c.last_seq,
    ).where(tm.c.minute >= math.floor(since / 60))
    if device_id is not None:
        inner = inner.where(tm.c.device_id == device_id)
    part = inner.subquery()
    query = select(
        part.c.start,
        part.c.device_id,
        func.sum(part.c.records),
        func.sum(part.c.fps_sum),
        func.sum(part.c.p95_sum),
        func.max(part.c.last_seq),
    )
    if after is not None:
        query = query.where(
            tuple_(part.c.start, part.c.device_id) > tuple_(after[0] * (every_s // 60), after[1])
        )
    query = (
        query.group_by(part.c.start, part.c.device_id)
        .order_by(part.c.start, part.c.device_id)
        .limit(limit)
    )
    with store.connect() as conn:
        return [
            Bucket(int(start) // (every_s // 60), d, int(n), float(fps), float(p95), int(last))
            for start, d, n, fps, p95, last in conn.execute(query)
        ]


def prune_minutes(store: Store, before: float) -> int:
    """Delete the rollup's minutes (of device time) before `before`; how many rows."""
    with store.begin() as conn:
        return int(conn.execute(delete(tm).where(tm.c.minute < math.floor(before / 60))).rowcount)
