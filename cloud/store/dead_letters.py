"""The quarantine: device messages the ingester refused, kept (bounded) with their reason."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, delete, func, select

from cloud.store.schema import quarantine

if TYPE_CHECKING:
    from cloud.store.engine import Store

__all__ = ["insert_dead_letters", "quarantine_rows"]


def insert_dead_letters(conn: Connection, rows: list[dict[str, Any]], keep: int) -> None:
    """Insert dead letters (inside the caller's transaction); only the newest `keep` stay."""
    conn.execute(quarantine.insert(), rows)
    newest = conn.scalar(select(func.max(quarantine.c.id)))
    if newest is not None and newest > keep:
        conn.execute(delete(quarantine).where(quarantine.c.id <= newest - keep))


def quarantine_rows(
    store: Store, since: float, device_id: str | None, limit: int
) -> list[dict[str, Any]]:
    """The newest first."""
    query = select(quarantine).where(quarantine.c.received >= since)
    if device_id is not None:
        query = query.where(quarantine.c.device_id == device_id)
    with store.connect() as conn:
        return [
            dict(r)
            for r in conn.execute(query.order_by(quarantine.c.id.desc()).limit(limit)).mappings()
        ]
