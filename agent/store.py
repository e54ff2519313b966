"""The device store: one SQLite file, `agent.db` in the state dir, in WAL mode.

Each part of the agent creates its own tables in it (the outbox, the update journal, counters).
WAL lets `litefleet-agent status` read while the daemon writes.

Durability is the `synchronous` setting (config `[outbox] synchronous`):

- `NORMAL` (default): in WAL mode a commit is durable once the WAL is checkpointed or the OS
  writes it back. A power cut may lose the last few commits (the most recent records), never
  corrupts the file, and a crash of the process alone (kill -9) loses nothing committed.
- `FULL`: every commit is fsynced before it returns, so it survives a power cut too. Each
  append then costs one fsync, which is slow on SD cards.

The connection is opened with `check_same_thread=False` because the agent's parts run on
several threads; a part that writes from more than one thread serializes its own transactions.
The outbox keeps a connection of its own (see `agent.outbox`).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlite_utils

__all__ = ["DB_NAME", "SYNCHRONOUS", "connect", "open_store", "store_path"]

DB_NAME = "agent.db"
SYNCHRONOUS = ("NORMAL", "FULL")
BUSY_TIMEOUT_S = 10.0


def store_path(state_dir: Path) -> Path:
    return state_dir / DB_NAME


def connect(path: Path, synchronous: str = "NORMAL", autocommit: bool = False) -> sqlite3.Connection:
    """A connection to the store file with WAL, the durability setting and a busy timeout.

    With `autocommit`, Python opens no implicit transactions: the caller issues `BEGIN
    IMMEDIATE` / `COMMIT` itself.
    """
    if synchronous not in SYNCHRONOUS:
        raise ValueError(f"synchronous must be one of {SYNCHRONOUS}, not {synchronous!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        str(path),
        timeout=BUSY_TIMEOUT_S,
        check_same_thread=False,
        isolation_level=None if autocommit else "DEFERRED",
    )
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def open_store(state_dir: Path, synchronous: str = "NORMAL") -> sqlite_utils.Database:
    """Open (creating if needed) `state_dir/agent.db` in WAL mode."""
    return sqlite_utils.Database(connect(store_path(state_dir), synchronous))
