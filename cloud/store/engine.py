"""The connection to the store: SQLite (embedded, one file in WAL mode) or PostgreSQL.

`Store` wraps one SQLAlchemy engine. Every query of the project lives in a module of
`cloud.store` and takes the `Store` (reads, each its own short transaction) or a `Connection`
inside the caller's transaction (`with store.begin() as conn:`), so several writes commit
together.

SQLite: each connection waits up to 30 s for a writer (busy timeout), `synchronous=NORMAL` in
WAL; transactions start with an explicit BEGIN (savepoints nest inside it). PostgreSQL: the
password comes from `[store] password_file`, else from libpq's own sources (PGPASSWORD,
~/.pgpass).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Result, create_engine, event
from sqlalchemy.engine import URL, make_url

__all__ = ["Store", "StoreRefused", "describe_error", "engine_url"]

log = logging.getLogger(__name__)
BUSY_TIMEOUT_S = 30.0


class StoreRefused(Exception):
    """The store cannot be used as it is (a schema this code does not know, a bad URL...)."""


def describe_error(e: BaseException) -> str:
    """`Type: message` in one line; for a store error, the database driver's own (without
    SQLAlchemy's SQL text and link)."""
    cause = getattr(e, "orig", None) or e
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0][:300] if lines else ''}".rstrip(": ")


def engine_url(url: str, password_file: Path | None = None) -> URL:
    """`sqlite:///path` or `postgresql://[user@]host[:port]/db` as SQLAlchemy's URL (the
    psycopg driver for PostgreSQL, the password read from `password_file` when given)."""
    try:
        parsed = make_url(url)
    except Exception as e:  # sqlalchemy's ArgumentError, or a ValueError from the port
        raise StoreRefused(
            f"store url {url!r} is not sqlite:///PATH or postgresql://HOST/DB"
        ) from e
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise StoreRefused(f"store url {url!r} names no file (sqlite:///PATH)")
        return parsed.set(drivername="sqlite")
    if backend in ("postgresql", "postgres"):
        if not parsed.database:
            raise StoreRefused(f"store url {url!r} names no database (postgresql://HOST/DB)")
        parsed = parsed.set(drivername="postgresql+psycopg")
        if password_file is not None:
            try:
                secret = password_file.read_text(encoding="utf-8").strip()
            except OSError as e:
                raise StoreRefused(
                    f"cannot read the store's password_file {password_file}: {e.strerror}"
                ) from e
            parsed = parsed.set(password=secret)
        return parsed
    raise StoreRefused(f"store url {url!r}: only sqlite:/// and postgresql:// stores are known")


def _sqlite_engine(url: URL) -> Engine:
    assert url.database is not None
    Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url, connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False}
    )

    @event.listens_for(engine, "connect")
    def _connect(dbapi: sqlite3.Connection, _record: object) -> None:
        dbapi.isolation_level = None  # we say BEGIN ourselves (below), so savepoints nest
        dbapi.execute("PRAGMA journal_mode=WAL")
        dbapi.execute("PRAGMA synchronous=NORMAL")
        dbapi.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # `immediate` takes the write lock at once (a migration): no upgrade deadlock later
        conn.exec_driver_sql(
            "BEGIN IMMEDIATE" if conn.get_execution_options().get("immediate") else "BEGIN"
        )

    return engine


class Store:
    """One store, SQLite or PostgreSQL. Close it when done (its pooled connections)."""

    def __init__(self, url: URL) -> None:
        self.url = url
        self.dialect = url.get_backend_name()
        if self.dialect == "sqlite":
            self.engine = _sqlite_engine(url)
        else:
            self.engine = create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=8)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @property
    def location(self) -> str:
        """The URL without its password, for messages."""
        return self.url.render_as_string(hide_password=True)

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A connection in a transaction: committed when the block ends, else rolled back."""
        with self.engine.begin() as conn:
            yield conn

    def connect(self) -> Connection:
        return self.engine.connect()

    def ping(self) -> None:
        """Raises (SQLAlchemyError) when the store does not answer."""
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1").scalar()

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Result[Any]:
        """Driver-level SQL in the backend's own parameter style, committed at once; the
        rows are read before it returns. For tests and one-off tools: the project's own
        queries are the functions of `cloud.store`."""
        with self.engine.begin() as conn:
            result = conn.exec_driver_sql(
                sql, params if isinstance(params, dict) else tuple(params)
            )
            if result.returns_rows:
                return result.freeze()()
            return result

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
