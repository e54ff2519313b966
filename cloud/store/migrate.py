"""Schema versions: Alembic migrations in `cloud/store/migrations/versions`, one file each.

The store records its version in Alembic's `alembic_version` table. On opening a store:

  * at this code's version: used as it is;
  * newer than this code (written by a later LiteFleet): refused with one sentence;
  * older, or empty: an embedded SQLite store is migrated on the spot (one process, one file:
    nothing to coordinate); a PostgreSQL store is refused until `litefleet store migrate`
    runs, so that an operator upgrades a shared database once, on purpose.

An empty store gets the newest schema at once (`schema.create_all`) and is stamped with
`HEAD`. A store made before versions existed (the tables, no `alembic_version`) is adopted by
the first migration, which creates only the missing tables.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, inspect, text

from cloud.store.engine import Store, StoreRefused
from cloud.store.schema import create_all

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["HEAD", "check_version", "current_version", "known_versions", "migrate"]

log = logging.getLogger(__name__)
HEAD = "0006"  # the newest migration: a test checks it against the scripts
_SCRIPTS = Path(__file__).with_name("migrations")
_VERSION_TABLE = "alembic_version"
_PG_MIGRATION_LOCK = 0x4C46_5354  # an advisory lock: one migration at a time per database


def _config(conn: Connection | None = None) -> Config:
    from alembic.config import Config  # imported only to migrate: it takes a while

    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    config.attributes["connection"] = conn
    return config


def known_versions() -> list[str]:
    """Every revision this code has, oldest first."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(_config())
    return [s.revision for s in reversed(list(scripts.walk_revisions()))]


def current_version(conn: Connection) -> str | None:
    """The store's schema version, or None before the first migration."""
    if not inspect(conn).has_table(_VERSION_TABLE):
        return None
    return conn.execute(text(f"SELECT version_num FROM {_VERSION_TABLE}")).scalar()


def migrate(store: Store) -> tuple[str | None, str]:
    """Bring the store to `HEAD`; (version before, version after). Refuses a newer store."""
    conn = store.connect().execution_options(immediate=True)
    try:
        with conn.begin():
            if not store.is_sqlite:
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            before = current_version(conn)
            _refuse_newer(store, before)
            if before is None and not inspect(conn).get_table_names():
                _create(conn)  # an empty store: the newest schema at once, stamped
            elif before != HEAD:
                from alembic import command

                command.upgrade(_config(conn), "head")
                log.info(
                    "store %s migrated from schema %s to %s",
                    store.location,
                    before or "(none)",
                    HEAD,
                )
    finally:
        conn.close()
    return before, HEAD


def _create(conn: Connection) -> None:
    create_all(conn)
    conn.execute(
        text(f"CREATE TABLE {_VERSION_TABLE} (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
    )
    conn.execute(text(f"INSERT INTO {_VERSION_TABLE} (version_num) VALUES (:v)"), {"v": HEAD})


def _refuse_newer(store: Store, version: str | None) -> None:
    if version is not None and version != HEAD and version not in known_versions():
        raise StoreRefused(
            f"the store {store.location} has schema version {version}, newer than this "
            f"LiteFleet knows (up to {HEAD}): upgrade LiteFleet to use it"
        )


def check_version(store: Store) -> None:
    """Use the store as it is, migrate it (SQLite), or refuse it with one sentence."""
    with store.connect() as conn:
        version = current_version(conn)
    if version == HEAD:
        return
    _refuse_newer(store, version)
    if store.is_sqlite:
        migrate(store)
        return
    raise StoreRefused(
        f"the store {store.location} is at schema version {version or '(none: empty)'}, "
        f"this LiteFleet needs {HEAD}: run `litefleet store migrate`"
    )
