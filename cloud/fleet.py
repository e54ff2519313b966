"""The fleet as the operator sees it: devices, telemetry, rollouts and groups, from the store."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

from cloud.store import Store
from cloud.store import devices as stored_devices
from cloud.store import rollouts as rs
from cloud.store.records import Cursor, latest_event_detail, latest_telemetry_body
from cloud.store.records import telemetry_since as _telemetry_rows
from shared.topics import validate_device_id

__all__ = [
    "add_to_group",
    "device_views",
    "group_views",
    "latest_drift",
    "latest_variant",
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
                "groups": groups.get(r["device_id"], []),
                "drift": latest_drift(store, r["device_id"]),
                "variant": latest_variant(store, r["device_id"]),
            }
        )
    return out


def latest_variant(store: Store, device_id: str) -> dict[str, Any] | None:
    """Which variant of a release the device chose to run, and why (its latest `variant`
    event: chosen, sha256, reason, figures per candidate), or None."""
    text = latest_event_detail(store, device_id, "variant")
    if text is None:
        return None
    try:
        detail = json.loads(text)
    except ValueError:
        return None
    return detail if isinstance(detail, dict) else None


def latest_drift(store: Store, device_id: str) -> dict[str, Any] | None:
    """The drift figures of the device's latest telemetry record (None when it has none)."""
    body = latest_telemetry_body(store, device_id)
    if body is None:
        return None
    try:
        drift = json.loads(body).get("drift")
    except (ValueError, AttributeError):
        return None
    return drift if isinstance(drift, dict) else None


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
    out = []
    for r in rs.rollout_rows(store, rollout_id):
        rows = [
            (x["device_id"], x["wave"], x["status"], x["reason"], x["phase"])
            for x in rs.device_rows(store, r["id"])
        ]
        statuses = Counter(s for _, _, s, _, _ in rows)
        reasons = Counter(
            (reason or status)
            for _, _, status, reason, _ in rows
            if status in ("failed", "timed_out")
        )
        out.append(
            {
                "id": r["id"],
                "release": f"{r['release_name']}@{r['release_version']}",
                "state": r["state"],
                "reason": r["reason"],
                "waves": json.loads(r["waves"]),
                "current_wave": r["current_wave"] + 1,
                "wave_count": (max((w for _, w, _, _, _ in rows), default=0) + 1),
                "devices": len(rows),
                "committed": statuses["committed"],
                "failed": statuses["failed"] + statuses["timed_out"],
                "timed_out": statuses["timed_out"],
                "pending": statuses["pending"],
                "waiting": statuses["waiting"],
                "failure_reasons": dict(reasons.most_common()),
                "failures": [
                    {
                        "device_id": d,
                        "reason": reason or status,
                        "wave": w + 1,
                        "detail": rs.last_update_detail(store, r["id"], d),
                    }
                    for d, w, status, reason, _ in rows
                    if status in ("failed", "timed_out")
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
