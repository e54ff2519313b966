"""The store's tables, as SQLAlchemy Core metadata: what every query in `cloud.store` names.

This is the schema at the newest migration (`cloud/store/migrations/versions`); a test compares
the two. Times are epoch seconds (floats) unless the column holds a document's own ISO text.

    releases         one row per (name, version, profile): the signed envelope, its keys and
                     the compression report it was made from (JSON, or '')
    devices          the last known state of each device, and when it was last heard from;
                     its latest drift figures (JSON; drifting: over the threshold) and
                     variant choice (JSON), '' when unknown
    telemetry        one row per (device_id, seq), stored once (a contract for outside tools);
                     on PostgreSQL partitioned by day of `received` (`partitions`)
    events           one row per (device_id, seq); partitioned like telemetry
    updates          one row per (device_id, seq): update progress and outcomes
    groups           (group_name, device_id) membership
    rollouts         one row per rollout: release, waves, state, thresholds
    rollout_devices  one row per (rollout_id, device_id): wave, status, reason, deployment,
                     download progress (bytes_done of bytes_total)
    counters         named integers (ingest: stored, duplicates, quarantined, ...)
    quarantine       dead letters: device messages the ingester refused (cloud/quarantine.py)
    roots            one row per signed root version (`litefleet keys rotate`), the chain
    audit            append-only: who did what, when (triggers refuse UPDATE and DELETE)
    leases           who holds a singleton role (the active controller) and until when
    telemetry_minutes  per device and minute of device time: records, fps and p95 sums, the
                     last seq (kept by ingest in its transaction; serves long chart windows)
    users            dashboard users: name, role (viewer | operator), password hash (argon2id)
    api_tokens       one row per API token: the token's sha256 (never the token), its user
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Double,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
)

__all__ = [
    "AUDIT_TRIGGERS",
    "api_tokens",
    "audit",
    "counters",
    "create_all",
    "devices",
    "events",
    "groups",
    "leases",
    "metadata",
    "quarantine",
    "releases",
    "rollout_devices",
    "rollouts",
    "roots",
    "telemetry",
    "telemetry_minutes",
    "updates",
    "users",
]

metadata = MetaData()

releases = Table(
    "releases",
    metadata,
    Column("name", Text, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("profile", Text, nullable=False),
    Column("created", Text, nullable=False),
    Column("expires", Text, nullable=False),
    Column("target_sha256", Text, nullable=False),
    Column("target_size", BigInteger, nullable=False),
    Column("artifact_key", Text, nullable=False),
    Column("delta_keys", Text, nullable=False),
    Column("envelope", Text, nullable=False),
    Column("report", Text, nullable=False, server_default=""),
    PrimaryKeyConstraint("name", "version", "profile"),
)

devices = Table(
    "devices",
    metadata,
    Column("device_id", Text, primary_key=True),
    Column("online", Integer, nullable=False, server_default="0"),
    Column("profile", Text, nullable=False, server_default=""),
    Column("agent_version", Text, nullable=False, server_default=""),
    Column("model_name", Text),
    Column("model_version", BigInteger),
    Column("model_sha256", Text),
    Column("update_phase", Text, nullable=False, server_default=""),
    Column("source_status", Text, nullable=False, server_default=""),
    Column("fps", Double, nullable=False, server_default="0"),
    Column("p95_ms", Double),
    Column("state_ts", Double, nullable=False, server_default="0"),
    Column("last_seen", Double, nullable=False, server_default="0"),
    Column("drift", Text, nullable=False, server_default=""),
    Column("drifting", Integer, nullable=False, server_default="0"),
    Column("variant", Text, nullable=False, server_default=""),
    # the root version the device's newest state reports; 0: not reported (an older agent)
    Column("root_version", BigInteger, nullable=False, server_default="0"),
)

telemetry = Table(
    "telemetry",
    metadata,
    Column("device_id", Text, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("ts", Double, nullable=False),
    Column("received", Double, nullable=False),
    Column("model_name", Text),
    Column("model_version", BigInteger),
    Column("model_sha256", Text),
    Column("fps", Double),
    Column("latency_p95_ms", Double),
    Column("inferences", BigInteger),
    Column("errors", BigInteger),
    Column("body", Text, nullable=False),
    PrimaryKeyConstraint("device_id", "seq"),
    Index("telemetry_received", "received"),
)

events = Table(
    "events",
    metadata,
    Column("device_id", Text, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("ts", Double, nullable=False),
    Column("received", Double, nullable=False),
    Column("kind", Text, nullable=False),
    Column("detail", Text, nullable=False),
    PrimaryKeyConstraint("device_id", "seq"),
)

updates = Table(
    "updates",
    metadata,
    Column("device_id", Text, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("ts", Double, nullable=False),
    Column("received", Double, nullable=False),
    Column("rollout_id", Text, nullable=False),
    Column("phase", Text, nullable=False),
    Column("model", Text, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("sha256", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("detail", Text, nullable=False),
    Column("via", Text, nullable=False),
    PrimaryKeyConstraint("device_id", "seq"),
)

groups = Table(
    "groups",
    metadata,
    Column("group_name", Text, nullable=False),
    Column("device_id", Text, nullable=False),
    PrimaryKeyConstraint("group_name", "device_id"),
)

rollouts = Table(
    "rollouts",
    metadata,
    Column("id", Text, primary_key=True),
    Column("release_name", Text, nullable=False),
    Column("release_version", BigInteger, nullable=False),
    Column("state", Text, nullable=False),
    Column("waves", Text, nullable=False),
    Column("current_wave", Integer, nullable=False),
    Column("success_threshold_pct", Integer, nullable=False),
    Column("max_failures_pct", Integer, nullable=False),
    Column("created", Double, nullable=False),
    Column("updated", Double, nullable=False),
    Column("wave_started", Double, nullable=False),
    Column("reason", Text, nullable=False, server_default=""),
    Column("failures_accepted", Integer, nullable=False, server_default="0"),
)

rollout_devices = Table(
    "rollout_devices",
    metadata,
    Column("rollout_id", Text, nullable=False),
    Column("device_id", Text, nullable=False),
    Column("wave", Integer, nullable=False),
    Column("status", Text, nullable=False),
    Column("reason", Text, nullable=False, server_default=""),
    Column("phase", Text, nullable=False, server_default=""),
    Column("deployment", Text, nullable=False),
    Column("published", Double),
    Column("updated", Double, nullable=False),
    Column("bytes_done", BigInteger, nullable=False, server_default="0"),
    Column("bytes_total", BigInteger, nullable=False, server_default="0"),
    PrimaryKeyConstraint("rollout_id", "device_id"),
)

counters = Table(
    "counters",
    metadata,
    Column("name", Text, primary_key=True),
    Column("value", BigInteger, nullable=False),
)

roots = Table(
    "roots",
    metadata,
    Column("version", BigInteger, primary_key=True, autoincrement=False),
    Column("sha256", Text, nullable=False),
    Column("issued", Text, nullable=False),
    Column("expires", Text, nullable=False),
    Column("envelope", Text, nullable=False),
    Column("created", Double, nullable=False),
)

audit = Table(
    "audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", Double, nullable=False),
    Column("actor", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("target", Text, nullable=False),
    Column("sha256", Text, nullable=False, server_default=""),
    Column("detail", Text, nullable=False, server_default=""),
    Index("audit_ts", "ts"),
    sqlite_autoincrement=True,
)

quarantine = Table(
    "quarantine",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("received", Double, nullable=False),
    Column("topic", Text, nullable=False),
    Column("device_id", Text, nullable=False),
    Column("size", Integer, nullable=False),
    Column("sha256", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("detail", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("name", Text, primary_key=True),
    Column("role", Text, nullable=False),
    Column("password_hash", Text, nullable=False, server_default=""),
    Column("created", Double, nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("token_sha256", Text, primary_key=True),
    Column("user_name", Text, nullable=False),
    Column("created", Double, nullable=False),
    Index("api_tokens_user", "user_name"),
)

telemetry_minutes = Table(
    "telemetry_minutes",
    metadata,
    Column("device_id", Text, nullable=False),
    Column("minute", BigInteger, nullable=False),
    Column("records", BigInteger, nullable=False),
    Column("fps_sum", Double, nullable=False),
    Column("p95_sum", Double, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    PrimaryKeyConstraint("device_id", "minute"),
    Index("telemetry_minutes_minute", "minute"),
)

leases = Table(
    "leases",
    metadata,
    Column("name", Text, primary_key=True),
    Column("holder", Text, nullable=False),
    Column("expires", Double, nullable=False),
)

# the audit trail refuses changes in the store itself, whoever connects
AUDIT_TRIGGERS = {
    "sqlite": (
        "CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit "
        "BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END",
        "CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit "
        "BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END",
    ),
    "postgresql": (
        "CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'the audit trail is append-only'; END $$",
        "DROP TRIGGER IF EXISTS audit_append_only ON audit",
        "CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()",
    ),
}


def create_all(conn: Connection) -> None:
    """The newest schema in an empty store, at once (what every migration from nothing would
    give; a test checks that both agree). On PostgreSQL telemetry and events are partitioned
    by day (`cloud.store.partitions`)."""
    if conn.dialect.name == "postgresql":
        from cloud.store.partitions import PARTITIONED, create_partitioned, ensure_partitions

        metadata.create_all(
            conn, tables=[t for t in metadata.sorted_tables if t.name not in PARTITIONED]
        )
        create_partitioned(conn)
        ensure_partitions(conn)
    else:
        metadata.create_all(conn)
    for statement in AUDIT_TRIGGERS[conn.dialect.name]:
        conn.exec_driver_sql(statement)
