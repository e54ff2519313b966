"""The device store: one SQLite file, `agent.db` in the state dir, in WAL mode, and its only
owner. This module declares every table in it (the outbox, the update journal, the replay
guard of operator commands), migrates older files, and opens every connection to it; the
parts that keep their rows there (`agent.outbox`, `agent.update.journal`,
`agent.link.commands`) take a `DeviceStore` and ask it for a connection.

    store = open_store(state_dir, synchronous)   # creates or migrates the file
    conn = store.connection(autocommit=True)     # a part's own connection to the same file

WAL lets `litefleet-agent status` read while the daemon writes (`open_existing` opens the file
without creating or migrating anything).

Durability is the `synchronous` setting (config `[outbox] synchronous`):

- `NORMAL` (default): in WAL mode a commit is durable once the WAL is checkpointed or the OS
  writes it back. A power cut may lose the last few commits (the most recent records), never
  corrupts the file, and a crash of the process alone (kill -9) loses nothing committed.
- `FULL`: every commit is fsynced before it returns, so it survives a power cut too. Each
  append then costs one fsync, which is slow on SD cards.

Connections are opened with `check_same_thread=False` because the agent's parts run on
several threads; a part that writes from more than one thread serializes its own transactions
(each part on a connection of its own, so their transactions never interleave).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import sqlite_utils

__all__ = [
    "DB_NAME",
    "SYNCHRONOUS",
    "DeviceStore",
    "connect",
    "open_existing",
    "open_store",
    "store_path",
]

DB_NAME = "agent.db"
SYNCHRONOUS = ("NORMAL", "FULL")
BUSY_TIMEOUT_S = 10.0

_TABLES = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    channel TEXT NOT NULL,
    payload BLOB NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox_meta (
    key TEXT PRIMARY KEY,
    value NOT NULL
);
CREATE TABLE IF NOT EXISTS update_journal (
    id INTEGER PRIMARY KEY,
    rollout_id TEXT, model TEXT, version INTEGER, sha256 TEXT, phase TEXT, reason TEXT,
    detail TEXT, via TEXT, from_sha256 TEXT, prev_sha256 TEXT, deployment TEXT,
    started FLOAT, updated FLOAT, probation_started FLOAT, interruptions INTEGER
);
CREATE TABLE IF NOT EXISTS update_models (
    sha256 TEXT PRIMARY KEY,
    name TEXT, version INTEGER, verified FLOAT,
    signers TEXT, distrusted INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS command_nonces (
    nonce TEXT PRIMARY KEY,
    expires REAL NOT NULL
);
"""


def _create_tables(conn: sqlite3.Connection) -> None:
    conn.executescript(_TABLES)


def _journal_interruptions(conn: sqlite3.Connection) -> None:
    """A journal from before probation interruptions were counted."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(update_journal)")}
    if "interruptions" not in columns:
        conn.execute(
            "ALTER TABLE update_journal ADD COLUMN interruptions INTEGER NOT NULL DEFAULT 0"
        )


def _model_signers(conn: sqlite3.Connection) -> None:
    """Models from before the release's signers were kept (`signers` NULL: not recorded)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(update_models)")}
    if "signers" not in columns:
        conn.execute("ALTER TABLE update_models ADD COLUMN signers TEXT")
    if "distrusted" not in columns:
        conn.execute("ALTER TABLE update_models ADD COLUMN distrusted INTEGER NOT NULL DEFAULT 0")


# In order; `PRAGMA user_version` is how many have run on a file. Each one also accepts a file
# that already has what it adds (files from before the version was kept).
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _create_tables,
    _journal_interruptions,
    _model_signers,
)


def store_path(state_dir: Path) -> Path:
    return state_dir / DB_NAME


def connect(
    path: Path, synchronous: str = "NORMAL", autocommit: bool = False
) -> sqlite3.Connection:
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


class DeviceStore(sqlite_utils.Database):
    """`agent.db`: a `sqlite_utils.Database` on the main connection, and the source of every
    other connection to the same file."""

    def __init__(
        self, conn: sqlite3.Connection, path: Path | None, synchronous: str = "NORMAL"
    ) -> None:
        super().__init__(conn)
        self.path = path  # None: in memory (tests)
        self.synchronous = synchronous

    def connection(
        self, *, autocommit: bool = False, synchronous: str | None = None
    ) -> sqlite3.Connection:
        """A connection of the caller's own to the store file (the main one, in memory)."""
        if self.path is None:
            conn: sqlite3.Connection = self.conn  # nothing to open twice: share it
            if autocommit:
                conn.isolation_level = None
            return conn
        return connect(self.path, synchronous or self.synchronous, autocommit=autocommit)

    def database(self) -> sqlite_utils.Database:
        """A `sqlite_utils.Database` on a connection of the caller's own."""
        if self.path is None:
            return self
        return sqlite_utils.Database(self.connection())

    def migrate(self) -> None:
        """Bring the file's tables to this version of the agent (each step is idempotent)."""
        conn = self.conn
        done = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if done >= len(MIGRATIONS):
            return
        with conn:
            for step in MIGRATIONS[done:]:
                step(conn)
            conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")


def open_store(state_dir: Path, synchronous: str = "NORMAL") -> DeviceStore:
    """Open (creating if needed) `state_dir/agent.db` in WAL mode, its tables up to date."""
    path = store_path(state_dir)
    store = DeviceStore(connect(path, synchronous), path, synchronous)
    store.migrate()
    return store


def open_existing(state_dir: Path) -> DeviceStore | None:
    """The store as it is, for reading (`status`): None when there is none; nothing created."""
    path = store_path(state_dir)
    if not path.exists():
        return None
    return DeviceStore(sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S), path)
