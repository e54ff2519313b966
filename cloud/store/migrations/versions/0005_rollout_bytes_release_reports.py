"""Download progress per rollout device (`bytes_done`, `bytes_total` from the device's update
reports); the compression report a release was made from (`releases.report`, its JSON); and
each device's latest drift figures and variant choice on its row (`devices.drift`,
`devices.drifting`, `devices.variant`), so the fleet view reads one table; and the version of
the root of trust each device's state reports (`devices.root_version`, 0 until a state that
carries it arrives: stored states never held it, so there is nothing to fill it from).

A store that already holds records gets those columns filled as ingest would have written them
for the same records: each device's drift from its newest `_RECENT` telemetry records (by seq;
a body that does not decode is skipped), settled by `cloud.store.drift` like ingest's, and its
variant from its newest `variant` event (by seq). At this version PostgreSQL's tables are still
plain (0006 partitions them), so the same statements serve both backends.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from alembic import op
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Integer,
    Text,
    bindparam,
    column,
    func,
    select,
    table,
    update,
)

from cloud.store.drift import Drift, ModelSeen, settle
from shared.errors import LiteFleetError
from shared.messages import TelemetryRecord, decode_message

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_RECENT = 300  # telemetry records read per device (its newest by seq)
_BODY_MAX = 1 << 20  # a body over this is skipped (ingest's payload cap is 64 KiB by default)
_HAS_FIGURES = re.compile(r'"drift"\s*:\s*\{')  # what every body with figures contains

# the tables as they are at this version (not `cloud.store.schema`, which is the newest)
_devices = table(
    "devices",
    column("device_id"),
    column("state_ts"),
    column("model_sha256"),
    column("drift"),
    column("drifting"),
    column("variant"),
)
_telemetry = table(
    "telemetry",
    column("device_id"),
    column("seq"),
    column("ts"),
    column("model_sha256"),
    column("body"),
)
_events = table("events", column("device_id"), column("seq"), column("kind"), column("detail"))


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
        batch.add_column(Column("root_version", BigInteger, nullable=False, server_default="0"))
    conn = op.get_bind()
    _fill_drift(conn)
    _fill_variants(conn)


def _fill_drift(conn: Connection) -> None:
    """Each device's drift and drifting, from its newest records and its state."""
    known = conn.execute(
        select(_devices.c.device_id, _devices.c.state_ts, _devices.c.model_sha256)
    ).all()
    newest = (
        select(_telemetry.c.ts, _telemetry.c.model_sha256, _telemetry.c.body)
        .where(_telemetry.c.device_id == bindparam("d"))
        .order_by(_telemetry.c.seq.desc())
        .limit(_RECENT)
    )
    rows = []
    for device_id, state_ts, state_model in known:
        found: Drift | None = None
        seen: list[ModelSeen] = []
        if state_model is not None:
            seen.append(ModelSeen(state_ts, state_model))
        # oldest seq first: between records of one ts the later one wins, as in ingest
        for ts, model, body in reversed(conn.execute(newest, {"d": device_id}).all()):
            if model is not None:
                seen.append(ModelSeen(ts, model))
            summary = _drift_of(body)
            if summary is not None and (found is None or ts >= found.ts):
                found = Drift(ts, summary, model)
        settled = settle(None, found, seen)
        if settled is not None:
            rows.append({"d": device_id, "v": settled.text(), "on": settled.drifting()})
    if rows:
        conn.execute(
            update(_devices)
            .where(_devices.c.device_id == bindparam("d"))
            .values(drift=bindparam("v"), drifting=bindparam("on")),
            rows,
        )


def _drift_of(body: str) -> dict[str, Any] | None:
    """A stored record's drift summary as ingest takes it from the decoded record; None when
    it has none or the body is not a record that decodes (as the contract reads it today)."""
    data = body.encode("utf-8", "replace")
    if len(data) > _BODY_MAX or not _HAS_FIGURES.search(body):
        return None  # most records have none (no reference profile): not decoded
    try:
        record = decode_message(data, _BODY_MAX)
    except (LiteFleetError, ValueError, TypeError, RecursionError):
        return None
    if not isinstance(record, TelemetryRecord) or record.drift is None:
        return None
    return dataclasses.asdict(record.drift)


def _fill_variants(conn: Connection) -> None:
    """Each device's variant: the detail of its newest `variant` event, stored as ingest
    stored the event's detail."""
    newest = (
        select(_events.c.device_id, func.max(_events.c.seq))
        .where(_events.c.kind == "variant")
        .group_by(_events.c.device_id)
    )
    rows = [{"d": d, "s": seq} for d, seq in conn.execute(newest)]
    if not rows:
        return
    detail = (
        select(_events.c.detail)
        .where(_events.c.device_id == bindparam("d"), _events.c.seq == bindparam("s"))
        .scalar_subquery()
    )
    conn.execute(
        update(_devices).where(_devices.c.device_id == bindparam("d")).values(variant=detail),
        rows,
    )


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("root_version")
        batch.drop_column("variant")
        batch.drop_column("drifting")
        batch.drop_column("drift")
    with op.batch_alter_table("releases") as batch:
        batch.drop_column("report")
    with op.batch_alter_table("rollout_devices") as batch:
        batch.drop_column("bytes_total")
        batch.drop_column("bytes_done")
