"""Devices and groups: what each device last said, when it was last heard from, and which
groups it belongs to.

Ingest also keeps on each device's row what the fleet view would otherwise dig out of raw
records for every device: `drift`, the drift figures of its newest telemetry record (by the
record's ts) that had any, as JSON with that `ts` and the model they were measured on, cleared
when a newer record or state names another model (`cloud.store.drift`); `drifting`, 1 when
that score is over its threshold; `variant`, the detail (JSON) of its newest `variant` event
(by seq). A record or event older than what the row holds (a resend, a redelivery) changes
nothing. A state also brings the version of the root of trust the device verifies with
(`root_version`, 0 from agents that do not report it), read back per version by
`root_versions` and `devices_behind` for `litefleet trust status`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, bindparam, case, delete, exists, func, select, update

from cloud.store.dialect import insert_ignore
from cloud.store.drift import Drift, ModelSeen, held_drift, settle
from cloud.store.schema import devices, events, groups

if TYPE_CHECKING:
    from cloud.store.engine import Store

__all__ = [
    "add_to_group",
    "apply_drift",
    "apply_fps",
    "apply_states",
    "apply_variants",
    "device_rows",
    "devices_behind",
    "group_members",
    "group_rows",
    "known_ids",
    "liveness_counts",
    "mark_offline",
    "remove_from_group",
    "root_version_counts",
    "root_versions",
    "touch_devices",
]


def device_rows(store: Store) -> list[dict[str, Any]]:
    with store.connect() as conn:
        return [
            dict(r) for r in conn.execute(select(devices).order_by(devices.c.device_id)).mappings()
        ]


def root_versions(store: Store) -> dict[int, int]:
    """How many devices report each root version (0: not reported), lowest version first."""
    with store.connect() as conn:
        return root_version_counts(conn)


def root_version_counts(conn: Connection) -> dict[int, int]:
    """`root_versions` inside the caller's connection."""
    query = (
        select(devices.c.root_version, func.count())
        .group_by(devices.c.root_version)
        .order_by(devices.c.root_version)
    )
    return {int(v): int(n) for v, n in conn.execute(query)}


def devices_behind(store: Store, version: int, limit: int) -> list[dict[str, Any]]:
    """Up to `limit` devices reporting a root version below `version` (0, not reported,
    included), the furthest behind first, then by id: id, root version, online, last seen."""
    query = (
        select(devices.c.device_id, devices.c.root_version, devices.c.online, devices.c.last_seen)
        .where(devices.c.root_version < version)
        .order_by(devices.c.root_version, devices.c.device_id)
        .limit(limit)
    )
    with store.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def known_ids(store: Store) -> set[str]:
    with store.connect() as conn:
        return {d for (d,) in conn.execute(select(devices.c.device_id))}


def group_rows(store: Store) -> list[tuple[str, str]]:
    """(group, device) pairs by group and device."""
    with store.connect() as conn:
        return [
            (g, d)
            for g, d in conn.execute(
                select(groups.c.group_name, groups.c.device_id).order_by(
                    groups.c.group_name, groups.c.device_id
                )
            )
        ]


def group_members(store: Store, group: str) -> list[str]:
    with store.connect() as conn:
        return [
            d
            for (d,) in conn.execute(
                select(groups.c.device_id)
                .where(groups.c.group_name == group)
                .order_by(groups.c.device_id)
            )
        ]


def add_to_group(store: Store, group: str, device_ids: list[str]) -> int:
    """How many memberships were new."""
    if not device_ids:
        return 0
    with store.begin() as conn:
        result = conn.execute(
            insert_ignore(conn, groups).returning(groups.c.device_id),
            [{"group_name": group, "device_id": d} for d in device_ids],
        )
        return len(result.all())  # the rows inserted (executemany's rowcount is not portable)


def remove_from_group(store: Store, group: str, device_ids: list[str]) -> int:
    with store.begin() as conn:
        result = conn.execute(
            delete(groups).where(groups.c.group_name == group, groups.c.device_id.in_(device_ids))
        )
        return int(result.rowcount)


def mark_offline(store: Store, silent_since: float) -> int:
    """Devices online but not heard from since `silent_since` go offline; how many."""
    with store.begin() as conn:
        result = conn.execute(
            update(devices)
            .where(devices.c.online == 1, devices.c.last_seen < silent_since)
            .values(online=0)
        )
        return int(result.rowcount)


def liveness_counts(conn: Connection, heard_since: float) -> tuple[int, int]:
    """(online, known) devices; online needs a recent message too."""
    online = conn.scalar(
        select(func.count())
        .select_from(devices)
        .where(devices.c.online == 1, devices.c.last_seen >= heard_since)
    )
    known = conn.scalar(select(func.count()).select_from(devices))
    return int(online or 0), int(known or 0)


# --- ingest's writes, inside its batch transaction -------------------------------------------


def touch_devices(
    conn: Connection, seen: Iterable[str], talking: Iterable[str], now: float
) -> None:
    """Every device in the batch exists and was heard from at `now`; those that sent
    something other than state are connected right now (online)."""
    seen_rows = [{"d": d} for d in seen]
    if not seen_rows:
        return
    conn.execute(insert_ignore(conn, devices), [{"device_id": r["d"]} for r in seen_rows])
    conn.execute(
        update(devices)
        .where(devices.c.device_id == bindparam("d"))
        .values(last_seen=case((devices.c.last_seen < now, now), else_=devices.c.last_seen)),
        seen_rows,
    )
    talking_rows = [{"d": d} for d in talking]
    if talking_rows:
        conn.execute(
            update(devices).where(devices.c.device_id == bindparam("d")).values(online=1),
            talking_rows,
        )


_STATE_COLUMNS = (
    "online",
    "profile",
    "agent_version",
    "model_name",
    "model_version",
    "model_sha256",
    "update_phase",
    "source_status",
    "fps",
    "root_version",
)


def apply_states(conn: Connection, states: list[dict[str, Any]]) -> None:
    """Device states in arrival order: each applies when not older than the stored one; an
    offline state (a last will) stands whatever its ts, until the device is heard again."""
    newer = (
        update(devices)
        .where(devices.c.device_id == bindparam("d"), devices.c.state_ts <= bindparam("ts"))
        .values({**{c: bindparam(f"v_{c}") for c in _STATE_COLUMNS}, "state_ts": bindparam("ts")})
    )
    offline = update(devices).where(devices.c.device_id == bindparam("d")).values(online=0)
    for s in states:
        conn.execute(
            newer,
            {"d": s["device_id"], "ts": s["state_ts"], **{f"v_{c}": s[c] for c in _STATE_COLUMNS}},
        )
        if not s["online"]:
            conn.execute(offline, {"d": s["device_id"]})


def apply_fps(conn: Connection, latest: list[dict[str, Any]]) -> None:
    """Each device's newest telemetry figures (`d`, `v_fps`, `v_p95`)."""
    if latest:
        conn.execute(
            update(devices)
            .where(devices.c.device_id == bindparam("d"))
            .values(fps=bindparam("v_fps"), p95_ms=bindparam("v_p95")),
            latest,
        )


_IN_CHUNK = 500  # ids per IN (...) list: well under either backend's parameter limit


def apply_drift(conn: Connection, drifts: dict[str, Drift], seen: dict[str, ModelSeen]) -> None:
    """Each device's newest drift figures in the batch (`drifts`) and the newest model its
    records and states in the batch named (`seen`), settled against what its row holds
    (`cloud.store.drift.settle`): newer figures replace older ones; a newer record or state
    naming another model, in the batch or on the row (its state, applied before this runs),
    clears them.

    The rows are read first: ingest's `touch_devices` already holds their locks in this
    transaction, so no other writer changes them before the update."""
    stored = _drift_rows(conn, list(drifts), held_only=False)
    # a device without figures in the batch matters only when its row holds some
    stored.update(_drift_rows(conn, [d for d in seen if d not in drifts], held_only=True))
    rows = []
    for device_id, (text, state_ts, state_model) in stored.items():
        held = held_drift(text)
        reports = [s for s in (seen.get(device_id),) if s is not None]
        if state_model is not None:
            reports.append(ModelSeen(state_ts, state_model))
        settled = settle(held, drifts.get(device_id), reports)
        if settled == held:
            continue
        rows.append(
            {
                "d": device_id,
                "v_drift": settled.text() if settled else "",
                "v_drifting": settled.drifting() if settled else 0,
            }
        )
    if rows:
        conn.execute(
            update(devices)
            .where(devices.c.device_id == bindparam("d"))
            .values(drift=bindparam("v_drift"), drifting=bindparam("v_drifting")),
            rows,
        )


def _drift_rows(
    conn: Connection, ids: list[str], held_only: bool
) -> dict[str, tuple[str, float, str | None]]:
    """The drift, state ts and state model of these devices' rows (those holding figures)."""
    stored: dict[str, tuple[str, float, str | None]] = {}
    for i in range(0, len(ids), _IN_CHUNK):
        query = select(
            devices.c.device_id, devices.c.drift, devices.c.state_ts, devices.c.model_sha256
        ).where(devices.c.device_id.in_(ids[i : i + _IN_CHUNK]))
        if held_only:
            query = query.where(devices.c.drift != "")
        stored.update({d: (text, ts, sha) for d, text, ts, sha in conn.execute(query)})
    return stored


def apply_variants(conn: Connection, variants: list[dict[str, Any]]) -> None:
    """Each device's newest `variant` event in the batch (`d`, `seq`, `v`: its detail as
    JSON), unless the store holds a newer one of that device (a higher seq); the batch's
    events are stored before this runs."""
    if not variants:
        return
    b = bindparam
    newer = exists().where(
        and_(events.c.device_id == b("d"), events.c.kind == "variant", events.c.seq > b("seq"))
    )
    conn.execute(
        update(devices).where(devices.c.device_id == b("d"), ~newer).values(variant=b("v")),
        variants,
    )
