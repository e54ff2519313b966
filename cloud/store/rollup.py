"""The per-device, per-minute telemetry rollup (`telemetry_minutes`), kept by ingest.

Each batch's records add to their (device, minute of the device's `ts`) rows in the batch's
own transaction: records, the sums of fps and p95 latency, the highest seq. A batch with a
duplicate (a redelivered record, stored before) recomputes its minutes from `telemetry`
instead, so a record counts once however often it arrives.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, and_, bindparam, case, func, select

from cloud.store.dialect import upsert
from cloud.store.schema import telemetry
from cloud.store.schema import telemetry_minutes as tm

__all__ = ["add_records", "recompute"]

Key = tuple[str, int]  # (device_id, minute)


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
