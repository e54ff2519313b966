"""Dashboard users and API tokens (`cloud.web`, `litefleet users`).

A SQLite store that the dashboard's first version opened already has them (it created them at
each start, before migrations): they are created only where missing.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import Column, Double, Index, MetaData, Table, Text

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

metadata = MetaData()
Table(
    "users",
    metadata,
    Column("name", Text, primary_key=True),
    Column("role", Text, nullable=False),
    Column("password_hash", Text, nullable=False, server_default=""),
    Column("created", Double, nullable=False),
)
Table(
    "api_tokens",
    metadata,
    Column("token_sha256", Text, primary_key=True),
    Column("user_name", Text, nullable=False),
    Column("created", Double, nullable=False),
    Index("api_tokens_user", "user_name"),
)


def upgrade() -> None:
    metadata.create_all(op.get_bind(), checkfirst=True)


def downgrade() -> None:
    metadata.drop_all(op.get_bind())
