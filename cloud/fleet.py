"""The fleet as the operator sees it: devices, telemetry, rollouts and groups, from the store."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import sqlite_utils

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


def device_views(db: sqlite_utils.Database, offline_after_s: float,
                 now: float | None = None) -> list[dict[str, Any]]:
    """One object per known device; `online` needs both its state and a recent message."""
    now = time.time() if now is None else now
    groups: dict[str, list[str]] = {}
    for g, d in db.execute("SELECT group_name, device_id FROM groups ORDER BY group_name"):
        groups.setdefault(d, []).append(g)
    out = []
    for r in db.query("SELECT * FROM devices ORDER BY device_id"):
        model = None
        if r["model_name"] is not None:
            model = {"name": r["model_name"], "version": r["model_version"],
                     "sha256": r["model_sha256"]}
        out.append({
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
            "drift": latest_drift(db, r["device_id"]),
            "variant": latest_variant(db, r["device_id"]),
        })
    return out


def latest_variant(db: sqlite_utils.Database, device_id: str) -> dict[str, Any] | None:
    """Which variant of a release the device chose to run, and why (its latest `variant`
    event: chosen, sha256, reason, figures per candidate), or None."""
    row = db.execute("SELECT detail FROM events WHERE device_id = ? AND kind = 'variant' "
                     "ORDER BY seq DESC LIMIT 1", [device_id]).fetchone()
    if row is None:
        return None
    try:
        detail = json.loads(row[0])
    except ValueError:
        return None
    return detail if isinstance(detail, dict) else None


def latest_drift(db: sqlite_utils.Database, device_id: str) -> dict[str, Any] | None:
    """The drift figures of the device's latest telemetry record (None when it has none)."""
    row = db.execute("SELECT body FROM telemetry WHERE device_id = ? ORDER BY seq DESC LIMIT 1",
                     [device_id]).fetchone()
    if row is None:
        return None
    try:
        drift = json.loads(row[0]).get("drift")
    except (ValueError, AttributeError):
        return None
    return drift if isinstance(drift, dict) else None


def telemetry_since(db: sqlite_utils.Database, since: float, device_id: str | None = None,
                    after_rowid: int = 0, limit: int = 10_000) -> list[tuple[int, dict[str, Any]]]:
    """(rowid, record) pairs received since `since` (and after `after_rowid`), oldest first."""
    sql = "SELECT rowid, body, received FROM telemetry WHERE received >= ? AND rowid > ?"
    params: list[Any] = [since, after_rowid]
    if device_id is not None:
        sql += " AND device_id = ?"
        params.append(device_id)
    sql += " ORDER BY rowid LIMIT ?"
    params.append(limit)
    out = []
    for rowid, body, received in db.execute(sql, params):
        record = json.loads(body)
        record["received"] = received
        out.append((int(rowid), record))
    return out


def _outcome_detail(db: sqlite_utils.Database, rollout_id: str, device_id: str) -> str:
    """The device's own words on its last update report in this rollout (why it failed)."""
    row = db.execute(
        "SELECT detail FROM updates WHERE rollout_id = ? AND device_id = ? "
        "ORDER BY seq DESC LIMIT 1", [rollout_id, device_id]).fetchone()
    return str(row[0]) if row and row[0] else ""


def rollout_views(db: sqlite_utils.Database, rollout_id: str | None = None) -> list[dict[str, Any]]:
    sql, params = "SELECT * FROM rollouts", []
    if rollout_id is not None:
        sql += " WHERE id = ?"
        params.append(rollout_id)
    out = []
    for r in db.query(sql + " ORDER BY created", params):
        rows = list(db.execute(
            "SELECT device_id, wave, status, reason, phase FROM rollout_devices "
            "WHERE rollout_id = ? ORDER BY wave, device_id", [r["id"]]))
        statuses = Counter(s for _, _, s, _, _ in rows)
        reasons = Counter((reason or status) for _, _, status, reason, _ in rows
                          if status in ("failed", "timed_out"))
        out.append({
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
            "failures": [{"device_id": d, "reason": reason or status, "wave": w + 1,
                          "detail": _outcome_detail(db, r["id"], d)}
                         for d, w, status, reason, _ in rows
                         if status in ("failed", "timed_out")],
            "success_threshold_pct": r["success_threshold_pct"],
            "max_failures_pct": r["max_failures_pct"],
            "created": r["created"],
            "updated": r["updated"],
        })
    return out


def group_views(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    groups: dict[str, list[str]] = {}
    for g, d in db.execute("SELECT group_name, device_id FROM groups ORDER BY group_name, "
                           "device_id"):
        groups.setdefault(g, []).append(d)
    return [{"group": g, "devices": ds} for g, ds in groups.items()]


def _check_group(name: str) -> None:
    if not name or len(name) > 64 or not all(c.isalnum() or c in "_.-" for c in name):
        raise ValueError(f"group name {name!r} is not [A-Za-z0-9_.-]{{1,64}}")


def add_to_group(db: sqlite_utils.Database, group: str, devices: list[str]) -> int:
    _check_group(group)
    for d in devices:
        validate_device_id(d)
    with db.conn:
        before = db.conn.total_changes
        db.conn.executemany("INSERT OR IGNORE INTO groups (group_name, device_id) VALUES (?, ?)",
                            [(group, d) for d in devices])
        return db.conn.total_changes - before


def unknown_devices(db: sqlite_utils.Database, devices: list[str]) -> list[str]:
    """The ids in `devices` that the store has never heard from, in the given order."""
    known = {r[0] for r in db.execute("SELECT device_id FROM devices")}
    return [d for d in devices if d not in known]


def remove_from_group(db: sqlite_utils.Database, group: str, devices: list[str]) -> int:
    with db.conn:
        before = db.conn.total_changes
        db.conn.executemany("DELETE FROM groups WHERE group_name = ? AND device_id = ?",
                            [(group, d) for d in devices])
        return db.conn.total_changes - before
