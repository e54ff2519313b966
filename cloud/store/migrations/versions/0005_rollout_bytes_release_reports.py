"""Download progress per rollout device (`bytes_done`, `bytes_total` from the device's update
reports); the compression report a release was made from (`releases.report`, its JSON); and
each device's latest drift figures and variant choice on its row (`devices.drift`,
`devices.drifting`, `devices.variant`), so the fleet view reads one table.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import BigInteger, Column, Integer, Text

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rollout_devices") as batch:
        batch.add_column(Column("bytes_done", BigInteger, nullable=False, server_default="0"))
        batch.add_column(Column("bytes_total", BigInteger, nullable=False, server_default="0"))
    with op.batch_alter_table("releases") as batch:
        batch.add_column(Column("report", Text, nullable=False, server_default=""))
    with op.batch_alter_table("devices") as batch:
        batch.add_column(Column("drift", Text, nullable=False, server_default=""))
        batch.add_column(Column("drifting", Integer, nullable=False, server_default="0"))
        batch.add_column(Column("variant", Text, nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("variant")
        batch.drop_column("drifting")
        batch.drop_column("drift")
    with op.batch_alter_table("releases") as batch:
        batch.drop_column("report")
    with op.batch_alter_table("rollout_devices") as batch:
        batch.drop_column("bytes_total")
        batch.drop_column("bytes_done")
