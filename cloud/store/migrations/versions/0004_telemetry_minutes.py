"""A per-device, per-minute rollup of telemetry, kept by ingest (`cloud.store.rollup`).

Filled from the telemetry already stored, so a store migrated with records has its rollup.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import BigInteger, Column, Double, PrimaryKeyConstraint, Text

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "telemetry_minutes",
        Column("device_id", Text, nullable=False),
        Column("minute", BigInteger, nullable=False),
        Column("records", BigInteger, nullable=False),
        Column("fps_sum", Double, nullable=False),
        Column("p95_sum", Double, nullable=False),
        Column("last_seq", BigInteger, nullable=False),
        PrimaryKeyConstraint("device_id", "minute"),
    )
    # floor(ts / 60) for positive ts on both backends (CAST truncates on SQLite, rounds on
    # PostgreSQL: the CASE corrects the rounding)
    minute = (
        "(CAST(ts / 60 AS BIGINT) - CASE WHEN CAST(ts / 60 AS BIGINT) > ts / 60 THEN 1 ELSE 0 END)"
    )
    op.execute(
        f"INSERT INTO telemetry_minutes (device_id, minute, records, fps_sum, p95_sum, last_seq) "
        f"SELECT device_id, {minute}, COUNT(*), SUM(COALESCE(fps, 0)), "
        f"SUM(COALESCE(latency_p95_ms, 0)), MAX(seq) FROM telemetry "
        f"GROUP BY device_id, {minute}"
    )


def downgrade() -> None:
    op.drop_table("telemetry_minutes")
