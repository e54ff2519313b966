"""Named integers (`counters`): what ingest stored, refused and counted twice."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Connection, select

from cloud.store.dialect import upsert
from cloud.store.schema import counters

if TYPE_CHECKING:
    from cloud.store.engine import Store

__all__ = ["add_counter", "all_counters", "counter"]


def add_counter(conn: Connection, name: str, delta: int) -> None:
    """Add `delta` to a named counter (inside the caller's transaction)."""
    if delta:
        conn.execute(
            upsert(conn, counters, ["name"], {"value": lambda ex: counters.c.value + ex.value}),
            {"name": name, "value": delta},
        )


def counter(store: Store, name: str) -> int:
    with store.connect() as conn:
        value = conn.scalar(select(counters.c.value).where(counters.c.name == name))
    return int(value) if value is not None else 0


def all_counters(conn: Connection) -> dict[str, int]:
    return {
        name: int(value) for name, value in conn.execute(select(counters.c.name, counters.c.value))
    }
