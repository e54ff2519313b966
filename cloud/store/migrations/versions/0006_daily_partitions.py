"""PostgreSQL: telemetry and events become partitioned by day of `received`, with their key
tables (`cloud.store.partitions`). Every stored row is kept: it is copied into the new tables
(one partition per day it has), then the old table is dropped. SQLite: nothing changes.

Both: the rollup gets an index on its minute, for `store prune --rollup-older-than`.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

from cloud.store.partitions import (
    DAY_S,
    PARTITIONED,
    create_partition,
    create_partitioned,
    ensure_partitions,
)

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("telemetry_minutes_minute", "telemetry_minutes", ["minute"])
    conn = op.get_bind()
    if conn.dialect.name != "postgresql":
        return
    for kind in PARTITIONED:
        conn.exec_driver_sql(f"ALTER TABLE {kind} RENAME TO {kind}_unpartitioned")
        conn.exec_driver_sql(
            f"ALTER TABLE {kind}_unpartitioned RENAME CONSTRAINT {kind}_pkey "
            f"TO {kind}_unpartitioned_pkey"
        )
    conn.exec_driver_sql("DROP INDEX IF EXISTS telemetry_received")
    create_partitioned(conn)
    for kind in PARTITIONED:
        days = conn.exec_driver_sql(
            f"SELECT DISTINCT floor(received / {DAY_S})::bigint FROM {kind}_unpartitioned"
        ).scalars()
        for day in sorted(days):
            create_partition(conn, kind, int(day))
        # the key table is filled by the insert trigger
        conn.exec_driver_sql(f"INSERT INTO {kind} SELECT * FROM {kind}_unpartitioned")
        conn.exec_driver_sql(f"DROP TABLE {kind}_unpartitioned")
    ensure_partitions(conn)


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "postgresql":
        op.drop_index("telemetry_minutes_minute", "telemetry_minutes")
        return
    raise NotImplementedError("daily partitions are not undone: restore a backup instead")
