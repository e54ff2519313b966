"""The cloud store: schema, migrations and every query of the cloud side.

    engine        `Store`: one SQLAlchemy engine, SQLite (embedded default) or PostgreSQL
    schema        the tables (SQLAlchemy Core); `migrations/` the versioned Alembic scripts
    migrate       schema versions: checked at open, `litefleet store migrate`
    devices       devices and groups; ingest's device writes
    records       telemetry, events, update reports: stored once, read in pages, pruned
    rollouts      the rollout state machine (states as StrEnums, every transition)
    releases      releases; trail: the root chain and the audit trail
    dead_letters  the quarantine; counters: named integers; leases: the active controller
    dashboard     the dashboard's queries (portable SQL through `text()`)
    dialect       the two statements SQLite and PostgreSQL spell alike but SQLAlchemy does not

`open_store` takes the `[store]` config (its `url`), a URL, or a SQLite file path.
"""

from __future__ import annotations

import threading
from pathlib import Path

from cloud.store.counters import add_counter, counter
from cloud.store.engine import Store, StoreRefused, describe_error, engine_url
from cloud.store.migrate import check_version

__all__ = [
    "Store",
    "StoreRefused",
    "add_counter",
    "counter",
    "describe_error",
    "engine_url",
    "open_store",
    "store_url",
]

_checked: set[str] = set()  # URLs whose schema version this process has checked
_lock = threading.Lock()


def store_url(target: object) -> str:
    """The URL text of a `StoreConfig`, a URL, or a SQLite file path."""
    url = getattr(target, "url", None)
    if isinstance(url, str):
        return url
    if isinstance(target, Path) or (isinstance(target, str) and "://" not in target):
        return f"sqlite:///{target}"
    return str(target)


def open_store(target: object) -> Store:
    """Open the store (a `StoreConfig`, a URL or a SQLite path), checking its schema version
    once per process: an older embedded SQLite store is migrated, anything else that does not
    match refused with `StoreRefused`."""
    url = store_url(target)
    store = Store(engine_url(url, getattr(target, "password_file", None)))
    if url not in _checked:
        with _lock:
            if url not in _checked:
                try:
                    check_version(store)
                except BaseException:
                    store.close()
                    raise
                _checked.add(url)
    return store
