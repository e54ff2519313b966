"""The first versioned schema: the tables every store had before migrations existed.

A store created by an older LiteFleet (CREATE TABLE IF NOT EXISTS at each start) already has
them: the tables are created only where missing, so such a store is adopted as it is.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
)

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

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

_TRIGGERS = {
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


def upgrade() -> None:
    bind = op.get_bind()
    metadata.create_all(bind, checkfirst=True)
    for statement in _TRIGGERS[bind.dialect.name]:
        op.execute(statement)


def downgrade() -> None:
    metadata.drop_all(op.get_bind())
