"""The two statements SQLite and PostgreSQL spell alike but SQLAlchemy builds per dialect."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite

__all__ = ["insert_ignore", "upsert"]


def _insert(conn: Connection, table: Table) -> Any:
    return sqlite.insert(table) if conn.dialect.name == "sqlite" else postgresql.insert(table)


def insert_ignore(conn: Connection, table: Table) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING: a row whose key is stored already is skipped."""
    return _insert(conn, table).on_conflict_do_nothing()


def upsert(
    conn: Connection, table: Table, keys: list[str], set_: dict[str, Any], where: Any = None
) -> Any:
    """INSERT ... ON CONFLICT (keys) DO UPDATE SET set_ [WHERE where]; a value may be a
    function of the row that was to be inserted (`excluded`)."""
    stmt = _insert(conn, table)
    values = {k: (v(stmt.excluded) if callable(v) else v) for k, v in set_.items()}
    return stmt.on_conflict_do_update(index_elements=keys, set_=values, where=where)
