"""Leases: one holder at a time for a singleton job (the active rollout controller).

A lease row names its holder and when it expires. `hold` takes the lease when it is free or
expired, or renews it for its holder, in one statement (INSERT ... ON CONFLICT DO UPDATE
... WHERE), so two processes racing for it cannot both win. Expiry is compared with the
callers' clocks: the machines keep time (NTP), and the lease's length is well above the skew.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import delete, or_, select

from cloud.store.dialect import upsert
from cloud.store.schema import leases

if TYPE_CHECKING:
    from cloud.store.engine import Store

__all__ = ["hold", "holder", "release"]


def hold(store: Store, name: str, me: str, ttl_s: float, now: float) -> bool:
    """Take or renew lease `name` for `me` until `now + ttl_s`; True when `me` holds it."""
    with store.begin() as conn:
        stmt = upsert(
            conn,
            leases,
            ["name"],
            {"holder": lambda ex: ex.holder, "expires": lambda ex: ex.expires},
            where=or_(leases.c.holder == me, leases.c.expires < now),
        )
        conn.execute(stmt, {"name": name, "holder": me, "expires": now + ttl_s})
        current = conn.scalar(select(leases.c.holder).where(leases.c.name == name))
    return current == me


def holder(store: Store, name: str) -> tuple[str, float] | None:
    with store.connect() as conn:
        row = conn.execute(
            select(leases.c.holder, leases.c.expires).where(leases.c.name == name)
        ).first()
    return None if row is None else (str(row[0]), float(row[1]))


def release(store: Store, name: str, me: str) -> None:
    """Give the lease up at once (a clean stop), so a standby need not wait for it to expire."""
    with store.begin() as conn:
        conn.execute(delete(leases).where(leases.c.name == name, leases.c.holder == me))
