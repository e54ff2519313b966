"""The root chain (`roots`) and the append-only audit trail (`audit`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from cloud.store.releases import AlreadyStored
from cloud.store.schema import audit, roots

if TYPE_CHECKING:
    from cloud.store.engine import Store

__all__ = ["append_audit", "audit_rows", "insert_root", "root_envelopes"]


def root_envelopes(store: Store, newest_first: bool = False) -> list[str]:
    order = roots.c.version.desc() if newest_first else roots.c.version
    with store.connect() as conn:
        return [e for (e,) in conn.execute(select(roots.c.envelope).order_by(order))]


def insert_root(store: Store, row: dict[str, Any]) -> None:
    """AlreadyStored when this version exists (a concurrent rotation)."""
    try:
        with store.begin() as conn:
            conn.execute(roots.insert(), row)
    except IntegrityError as e:
        raise AlreadyStored(str(e.orig)) from e


def append_audit(store: Store, row: dict[str, Any]) -> None:
    with store.begin() as conn:
        conn.execute(audit.insert(), row)


def audit_rows(store: Store, since: float, limit: int) -> list[tuple[Any, ...]]:
    """(id, ts, actor, action, target, sha256, detail) at or after `since`, oldest first, at
    most the newest `limit`."""
    newest = (
        select(audit).where(audit.c.ts >= since).order_by(audit.c.id.desc()).limit(limit).subquery()
    )
    with store.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                select(
                    newest.c.id,
                    newest.c.ts,
                    newest.c.actor,
                    newest.c.action,
                    newest.c.target,
                    newest.c.sha256,
                    newest.c.detail,
                ).order_by(newest.c.id)
            )
        ]
