"""The fleet as the operator sees it: devices, telemetry, rollouts and groups, from the store."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

from cloud.store import Store
from cloud.store import devices as stored_devices
from cloud.store import rollouts as rs
from cloud.store.records import Cursor
from cloud.store.records import telemetry_since as _telemetry_rows
from shared.topics import validate_device_id

__all__ = [
    "add_to_group",
    "device_views",
    "group_views",
    "json_object",
    "remove_from_group",
    "rollout_views",
    "telemetry_since",
    "unknown_devices",
]


def device_views(
    store: Store, offline_after_s: float, now: float | None = None
) -> list[dict[str, Any]]:
    """One object per known device; `online` needs both its state and a recent message."""
    now = time.time() if now is None else now
    groups: dict[str, list[str]] = {}
    for g, d in stored_devices.group_rows(store):
        groups.setdefault(d, []).append(g)
    out = []
    for r in stored_devices.device_rows(store):
        model = None
        if r["model_name"] is not None:
            model = {
                "name": r["model_name"],
                "version": r["model_version"],
                "sha256": r["model_sha256"],
            }
        out.append(
            {
                "device_id": r["device_id"],
                "online": bool(r["online"]) and now - r["last_seen"] < offline_after_s,
                "profile": r["profile"],
                "model": model,
                "fps": r["fps"],
                "p95_ms": r["p95_ms"],
                "last_seen": r["last_seen"] or None,
                "update_phase": r["update_phase"],
                "agent_version": r["agent_version"],
                "source_status": r["source_status"],
                "root_version": r["root_version"],  # 0: not reported (an older agent)
                "groups": groups.get(r["device_id"], []),
                # kept on the row by ingest (cloud.store.devices): no query per device
                "drift": json_object(r["drift"]),
                "drifting": bool(r["drifting"]),
                "variant": json_object(r["variant"]),
            }
        )
    return out


def json_object(text: str | None) -> dict[str, Any] | None:
    """A stored JSON object (a device row's `drift` or `variant`), None when there is none:
    '' (nothing known yet) or anything but an object."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def telemetry_since(
    store: Store,
    since: float,
    device_id: str | None = None,
    after: Cursor | None = None,
    limit: int = 10_000,
) -> list[tuple[Cursor, dict[str, Any]]]:
    """(cursor, record) pairs received since `since` (and after `after`), oldest first."""
    out = []
    for cursor, body, received in _telemetry_rows(store, since, device_id, after, limit):
        record = json.loads(body)
        record["received"] = received
        out.append((cursor, record))
    return out


def rollout_views(store: Store, rollout_id: str | None = None) -> list[dict[str, Any]]:
    """One object per rollout: counts per status, failures with each device's own sentence,
    and the downloads under way (`downloading` devices, their summed `bytes_done` of
    `bytes_total`, and each of them in `downloads`)."""
    out = []
    for r in rs.rollout_rows(store, rollout_id):
        rows = rs.device_rows(store, r["id"])
        details = (
            rs.failure_details(store, r["id"])
            if any(x["status"] in rs.FAILURES for x in rows)
            else {}
        )
        statuses = Counter(x["status"] for x in rows)
        reasons = Counter(
            (x["reason"] or x["status"]) for x in rows if x["status"] in ("failed", "timed_out")
        )
        downloads = [
            {
                "device_id": x["device_id"],
                "wave": x["wave"] + 1,
                "bytes_done": x["bytes_done"],
                "bytes_total": x["bytes_total"],
            }
            for x in rows
            if x["status"] == "pending" and x["phase"] == "downloading"
        ]
        out.append(
            {
                "id": r["id"],
                "release": f"{r['release_name']}@{r['release_version']}",
                "state": r["state"],
                "reason": r["reason"],
                "waves": json.loads(r["waves"]),
                "current_wave": r["current_wave"] + 1,
                "wave_count": (max((x["wave"] for x in rows), default=0) + 1),
                "devices": len(rows),
                "committed": statuses["committed"],
                "failed": statuses["failed"] + statuses["timed_out"],
                "timed_out": statuses["timed_out"],
                "pending": statuses["pending"],
                "waiting": statuses["waiting"],
                "downloading": len(downloads),
                "bytes_done": sum(d["bytes_done"] for d in downloads),
                "bytes_total": sum(d["bytes_total"] for d in downloads),
                "downloads": downloads,
                "failure_reasons": dict(reasons.most_common()),
                "failures": [
                    {
                        "device_id": x["device_id"],
                        "reason": x["reason"] or x["status"],
                        "wave": x["wave"] + 1,
                        "detail": details.get(x["device_id"], ""),
                    }
                    for x in rows
                    if x["status"] in ("failed", "timed_out")
                ],
                "success_threshold_pct": r["success_threshold_pct"],
                "max_failures_pct": r["max_failures_pct"],
                "created": r["created"],
                "updated": r["updated"],
            }
        )
    return out


def group_views(store: Store) -> list[dict[str, Any]]:
    groups: dict[str, list[str]] = {}
    for g, d in stored_devices.group_rows(store):
        groups.setdefault(g, []).append(d)
    return [{"group": g, "devices": ds} for g, ds in groups.items()]


def _check_group(name: str) -> None:
    if not name or len(name) > 64 or not all(c.isalnum() or c in "_.-" for c in name):
        raise ValueError(f"group name {name!r} is not [A-Za-z0-9_.-]{{1,64}}")


def add_to_group(store: Store, group: str, devices: list[str]) -> int:
    _check_group(group)
    for d in devices:
        validate_device_id(d)
    return stored_devices.add_to_group(store, group, list(dict.fromkeys(devices)))


def unknown_devices(store: Store, devices: list[str]) -> list[str]:
    """The ids in `devices` that the store has never heard from, in the given order."""
    known = stored_devices.known_ids(store)
    return [d for d in devices if d not in known]


def remove_from_group(store: Store, group: str, devices: list[str]) -> int:
    return stored_devices.remove_from_group(store, group, list(dict.fromkeys(devices)))
