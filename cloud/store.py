"""The cloud store: one SQLite file (WAL) through sqlite-utils.

Tables:

    releases         one row per (name, version, profile): the signed envelope and its keys
    devices          the last known state of each device, and when it was last heard from
    telemetry        one row per (device_id, seq), stored once
    events           one row per (device_id, seq)
    updates          one row per (device_id, seq): update progress and outcomes
    groups           (group_name, device_id) membership
    rollouts         one row per rollout: release, waves, state, thresholds
    rollout_devices  one row per (rollout_id, device_id): wave, status, reason, deployment
    counters         named integers (ingest: stored, duplicates, quarantined, ...)
    quarantine       dead letters: device messages the ingester refused (cloud/quarantine.py)
    roots            one row per signed root version (`litefleet keys rotate`), the chain
    audit            append-only: who did what, when, and the sha256 of what was signed
                     (triggers refuse UPDATE and DELETE; see `cloud.audit`)
    users            dashboard users: name, role (viewer | operator), password hash (argon2id)
    api_tokens       one row per API token: the token's sha256 (never the token), its user

Each thread opens its own connection with `open_store`; SQLite serialises the writers.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlite_utils

__all__ = ["add_counter", "counter", "open_store"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS releases (
    name TEXT NOT NULL, version INTEGER NOT NULL, profile TEXT NOT NULL,
    created TEXT NOT NULL, expires TEXT NOT NULL,
    target_sha256 TEXT NOT NULL, target_size INTEGER NOT NULL,
    artifact_key TEXT NOT NULL, delta_keys TEXT NOT NULL, envelope TEXT NOT NULL,
    PRIMARY KEY (name, version, profile));
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY, online INTEGER NOT NULL DEFAULT 0, profile TEXT NOT NULL DEFAULT '',
    agent_version TEXT NOT NULL DEFAULT '', model_name TEXT, model_version INTEGER,
    model_sha256 TEXT, update_phase TEXT NOT NULL DEFAULT '', source_status TEXT NOT NULL DEFAULT '',
    fps REAL NOT NULL DEFAULT 0, p95_ms REAL, state_ts REAL NOT NULL DEFAULT 0,
    last_seen REAL NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS telemetry (
    device_id TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL, received REAL NOT NULL,
    model_name TEXT, model_version INTEGER, model_sha256 TEXT,
    fps REAL, latency_p95_ms REAL, inferences INTEGER, errors INTEGER, body TEXT NOT NULL,
    PRIMARY KEY (device_id, seq));
CREATE INDEX IF NOT EXISTS telemetry_received ON telemetry (received);
CREATE TABLE IF NOT EXISTS events (
    device_id TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL, received REAL NOT NULL,
    kind TEXT NOT NULL, detail TEXT NOT NULL, PRIMARY KEY (device_id, seq));
CREATE TABLE IF NOT EXISTS updates (
    device_id TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL, received REAL NOT NULL,
    rollout_id TEXT NOT NULL, phase TEXT NOT NULL, model TEXT NOT NULL, version INTEGER NOT NULL,
    sha256 TEXT NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL, via TEXT NOT NULL,
    PRIMARY KEY (device_id, seq));
CREATE TABLE IF NOT EXISTS groups (
    group_name TEXT NOT NULL, device_id TEXT NOT NULL, PRIMARY KEY (group_name, device_id));
CREATE TABLE IF NOT EXISTS rollouts (
    id TEXT PRIMARY KEY, release_name TEXT NOT NULL, release_version INTEGER NOT NULL,
    state TEXT NOT NULL, waves TEXT NOT NULL, current_wave INTEGER NOT NULL,
    success_threshold_pct INTEGER NOT NULL, max_failures_pct INTEGER NOT NULL,
    created REAL NOT NULL, updated REAL NOT NULL, wave_started REAL NOT NULL,
    reason TEXT NOT NULL DEFAULT '', failures_accepted INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS rollout_devices (
    rollout_id TEXT NOT NULL, device_id TEXT NOT NULL, wave INTEGER NOT NULL,
    status TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', phase TEXT NOT NULL DEFAULT '',
    deployment TEXT NOT NULL, published REAL, updated REAL NOT NULL,
    PRIMARY KEY (rollout_id, device_id));
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS roots (
    version INTEGER PRIMARY KEY, sha256 TEXT NOT NULL, issued TEXT NOT NULL,
    expires TEXT NOT NULL, envelope TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, actor TEXT NOT NULL,
    action TEXT NOT NULL, target TEXT NOT NULL, sha256 TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts);
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY, role TEXT NOT NULL, password_hash TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS api_tokens (
    token_sha256 TEXT PRIMARY KEY, user_name TEXT NOT NULL, created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS api_tokens_user ON api_tokens (user_name);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY, received REAL NOT NULL, topic TEXT NOT NULL,
    device_id TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL, reason TEXT NOT NULL,
    detail TEXT NOT NULL, payload BLOB NOT NULL);
"""


def open_store(path: Path) -> sqlite_utils.Database:
    """Open (creating when needed) the cloud store at `path`, in WAL mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=30.0, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.executescript(_SCHEMA)
    conn.commit()
    return sqlite_utils.Database(conn)


def add_counter(conn: sqlite3.Connection, name: str, delta: int) -> None:
    """Add `delta` to a named counter (inside the caller's transaction)."""
    if delta:
        conn.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            (name, delta),
        )


def counter(db: sqlite_utils.Database, name: str) -> int:
    row = db.execute("SELECT value FROM counters WHERE name = ?", [name]).fetchone()
    return int(row[0]) if row else 0
