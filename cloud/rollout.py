"""Staged rollouts: one signed deployment per device, released in waves.

A rollout has waves given as device counts or shares of the targeted devices (`1,10%,50%,100%`,
cumulative: the last wave always covers every device). Each device's row in `rollout_devices`
moves through

    waiting -> pending (deployment published) -> committed | failed | timed_out | superseded

`failed` carries the device's reason (`probation_failed`, `hash_mismatch`, ...), reported by
the device with this rollout's id even when it refused the deployment unread (the id is then
the device's claim, applied to that device's row only); a pending device silent for
`device_timeout_s` after its deployment went out is `timed_out` and counts as a failure. A
device that dropped this deployment for a newer one (another rollout) is `superseded`: it no
longer counts in this rollout, neither way. On each tick, a running rollout:

  * pauses when failures exceed `max_failures_pct` of the devices released so far (in the manner
    of hawkBit's error threshold), recording the reasons;
  * starts the next wave once `success_threshold_pct` of the devices released so far committed;
  * completes when the last wave has reached the threshold and nothing is pending.

`resume` accepts the failures seen so far and lets the rollout go on; `abort` clears the
retained deployments of devices that have not started.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlite_utils

from shared.documents import Deployment, Release, format_time
from shared.envelope import sign_envelope
from shared.keys import SigningKey
from shared.topics import validate_device_id

__all__ = [
    "Publish",
    "RolloutPlan",
    "abort_rollout",
    "create_rollout",
    "parse_waves",
    "pause_rollout",
    "resume_rollout",
    "tick_rollouts",
    "wave_sizes",
]

log = logging.getLogger(__name__)

# publish(device_id, payload): retained on devices/{id}/desired; b"" clears it
Publish = Callable[[str, bytes], None]
STATES = ("running", "paused", "completed", "aborted")


def parse_waves(text: str) -> list[str]:
    """`1,10%,50%,100%` -> ["1", "10%", "50%", "100%"]; ValueError naming the bad part."""
    waves = [w.strip() for w in text.split(",") if w.strip()]
    if not waves:
        raise ValueError("--waves needs at least one wave")
    for w in waves:
        if w.endswith("%"):
            try:
                pct = float(w[:-1])
            except ValueError as e:
                raise ValueError(f"wave {w!r} is not a count or a percentage") from e
            if not 0 < pct <= 100:
                raise ValueError(f"wave {w!r} must be above 0% and at most 100%")
        elif not w.isdigit() or int(w) < 1:
            raise ValueError(f"wave {w!r} is not a device count (1, 2, ...) or a percentage")
    return waves


def wave_sizes(waves: list[str], total: int) -> list[int]:
    """Cumulative device counts per wave; strictly increasing, the last one `total`."""
    sizes: list[int] = []
    for w in waves:
        n = math.ceil(total * float(w[:-1]) / 100) if w.endswith("%") else int(w)
        n = min(max(n, 1), total)
        if not sizes or n > sizes[-1]:
            sizes.append(n)
    if not sizes or sizes[-1] < total:
        sizes.append(total)
    return sizes


@dataclass(frozen=True)
class RolloutPlan:
    rollout_id: str
    release: Release
    devices: tuple[str, ...]
    waves: tuple[str, ...]
    sizes: tuple[int, ...]
    deployments: dict[str, dict[str, Any]]  # device id -> signed deployment envelope


def _new_id(release: Release) -> str:
    return f"{release.name}-{release.version}-{time.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(2)}"


def create_rollout(
    db: sqlite_utils.Database, builds: dict[str, tuple[Release, dict[str, Any]]],
    targets: dict[str, str], waves: list[str], key: SigningKey, now: datetime, *,
    lifetime_s: int, success_threshold_pct: int = 95, max_failures_pct: int = 5,
) -> RolloutPlan:
    """Record a rollout and sign one deployment per device; nothing is published yet.

    `builds` maps a profile to its release of this model version (document and signed
    envelope); `targets` maps each device to the profile whose build it gets.
    """
    if not targets:
        raise ValueError("no devices to deploy to")
    for d in targets:
        validate_device_id(d)
    devices = list(targets)
    release = next(iter(builds.values()))[0]
    rollout_id = _new_id(release)
    sizes = wave_sizes(waves, len(devices))
    deployments: dict[str, dict[str, Any]] = {}
    rows = []
    wave_of = 0
    for index, device_id in enumerate(devices):
        while index >= sizes[wave_of]:
            wave_of += 1
        build, build_envelope = builds[targets[device_id]]
        expires = min(now + timedelta(seconds=lifetime_s), build.expires_at)
        deployment = Deployment(rollout_id=rollout_id, device_id=device_id,
                                issued=format_time(now), expires=format_time(expires),
                                release=build_envelope)
        envelope = sign_envelope(deployment.to_signed(), [key])
        deployments[device_id] = envelope
        rows.append((rollout_id, device_id, wave_of, "waiting", json.dumps(envelope),
                     now.timestamp()))
    t = now.timestamp()
    with db.conn:
        db.conn.execute(
            "INSERT INTO rollouts (id, release_name, release_version, state, waves, current_wave,"
            " success_threshold_pct, max_failures_pct, created, updated, wave_started, reason)"
            " VALUES (?, ?, ?, 'running', ?, -1, ?, ?, ?, ?, ?, '')",
            (rollout_id, release.name, release.version, json.dumps(waves), success_threshold_pct,
             max_failures_pct, t, t, t))
        db.conn.executemany(
            "INSERT INTO rollout_devices (rollout_id, device_id, wave, status, deployment, "
            "updated) VALUES (?, ?, ?, ?, ?, ?)", rows)
    log.info("rollout %s: %s devices in waves %s", rollout_id, len(devices), sizes)
    return RolloutPlan(rollout_id, release, tuple(devices), tuple(waves), tuple(sizes),
                       deployments)


def start_wave(db: sqlite_utils.Database, rollout_id: str, wave: int, publish: Publish,
               now: float) -> int:
    """Publish the deployments of `wave` and mark them pending; returns how many went out."""
    rows = db.execute(
        "SELECT device_id, deployment FROM rollout_devices WHERE rollout_id = ? AND wave = ? "
        "AND status = 'waiting'", [rollout_id, wave]).fetchall()
    for device_id, deployment in rows:
        publish(device_id, deployment.encode("utf-8"))
        with db.conn:
            db.conn.execute(
                "UPDATE rollout_devices SET status = 'pending', published = ?, updated = ? "
                "WHERE rollout_id = ? AND device_id = ? AND status = 'waiting'",
                (now, now, rollout_id, device_id))
    with db.conn:
        db.conn.execute("UPDATE rollouts SET current_wave = ?, wave_started = ?, updated = ? "
                        "WHERE id = ?", (wave, now, now, rollout_id))
    log.info("rollout %s: wave %s started (%s devices)", rollout_id, wave + 1, len(rows))
    return len(rows)


def _failure_summary(db: sqlite_utils.Database, rollout_id: str) -> str:
    rows = db.execute(
        "SELECT reason, status FROM rollout_devices WHERE rollout_id = ? AND status IN "
        "('failed', 'timed_out')", [rollout_id]).fetchall()
    reasons = Counter((r or s) for r, s in rows)
    return ", ".join(f"{reason}: {n}" for reason, n in reasons.most_common())


def _set_state(db: sqlite_utils.Database, rollout_id: str, state: str, reason: str,
               now: float) -> None:
    with db.conn:
        db.conn.execute("UPDATE rollouts SET state = ?, reason = ?, updated = ? WHERE id = ?",
                        (state, reason, now, rollout_id))


def _tick_one(db: sqlite_utils.Database, row: dict[str, Any], publish: Publish, now: float,
              device_timeout_s: float) -> None:
    rid, wave = row["id"], row["current_wave"]
    last_wave = db.execute("SELECT MAX(wave) FROM rollout_devices WHERE rollout_id = ?",
                           [rid]).fetchone()[0]
    if wave < 0:
        start_wave(db, rid, 0, publish, now)
        return
    with db.conn:
        db.conn.execute(
            "UPDATE rollout_devices SET status = 'timed_out', reason = 'timeout', updated = ? "
            "WHERE rollout_id = ? AND status = 'pending' AND published < ?",
            (now, rid, now - device_timeout_s))
    counts = Counter(dict(db.execute(
        "SELECT status, COUNT(*) FROM rollout_devices WHERE rollout_id = ? AND wave <= ? "
        "GROUP BY status", [rid, wave]).fetchall()))
    released = sum(counts.values()) - counts["superseded"]
    failed = counts["failed"] + counts["timed_out"]
    accepted = int(row["failures_accepted"])
    new_failures = failed - accepted
    if new_failures > 0 and new_failures * 100 > row["max_failures_pct"] * released:
        reason = (f"{failed} of {released} devices failed, over the {row['max_failures_pct']}% "
                  f"threshold ({_failure_summary(db, rid)})")
        _set_state(db, rid, "paused", reason, now)
        log.warning("rollout %s paused: %s", rid, reason)
        return
    # failures the operator accepted (resume) no longer count against the success threshold
    if counts["committed"] * 100 < row["success_threshold_pct"] * (released - accepted):
        if counts["pending"] == 0:
            reason = (f"{counts['committed']} of {released} devices committed, under the "
                      f"{row['success_threshold_pct']}% success threshold "
                      f"({_failure_summary(db, rid)})")
            _set_state(db, rid, "paused", reason, now)
            log.warning("rollout %s paused: %s", rid, reason)
        return
    if wave < last_wave:
        start_wave(db, rid, wave + 1, publish, now)
    elif counts["pending"] == 0:
        _set_state(db, rid, "completed", f"{counts['committed']} of {released} committed", now)
        log.info("rollout %s completed", rid)


def tick_rollouts(db: sqlite_utils.Database, publish: Publish, now: float | None = None,
                  device_timeout_s: float = 1800.0) -> None:
    """One controller step over every running rollout."""
    now = time.time() if now is None else now
    for row in list(db.query("SELECT * FROM rollouts WHERE state = 'running' ORDER BY created")):
        try:
            _tick_one(db, row, publish, now, device_timeout_s)
        except Exception:
            log.exception("rollout %s: tick failed; trying again next tick", row["id"])


def _get(db: sqlite_utils.Database, rollout_id: str) -> dict[str, Any]:
    rows = list(db.query("SELECT * FROM rollouts WHERE id = ?", [rollout_id]))
    if not rows:
        raise KeyError(f"no rollout {rollout_id!r}")
    return rows[0]


def pause_rollout(db: sqlite_utils.Database, rollout_id: str) -> None:
    row = _get(db, rollout_id)
    if row["state"] != "running":
        raise ValueError(f"rollout {rollout_id} is {row['state']}, not running")
    _set_state(db, rollout_id, "paused", "paused by the operator", time.time())


def resume_rollout(db: sqlite_utils.Database, rollout_id: str) -> None:
    """Go on, accepting the failures seen so far (new failures still pause it)."""
    row = _get(db, rollout_id)
    if row["state"] != "paused":
        raise ValueError(f"rollout {rollout_id} is {row['state']}, not paused")
    failed = db.execute(
        "SELECT COUNT(*) FROM rollout_devices WHERE rollout_id = ? AND status IN "
        "('failed', 'timed_out')", [rollout_id]).fetchone()[0]
    with db.conn:
        db.conn.execute("UPDATE rollouts SET state = 'running', reason = 'resumed by the "
                        "operator', failures_accepted = ?, updated = ? WHERE id = ?",
                        (failed, time.time(), rollout_id))


def abort_rollout(db: sqlite_utils.Database, rollout_id: str, publish: Publish | None) -> int:
    """Stop for good; clear the retained deployments of devices that have not reported."""
    row = _get(db, rollout_id)
    if row["state"] in ("completed", "aborted"):
        raise ValueError(f"rollout {rollout_id} is already {row['state']}")
    pending = [r[0] for r in db.execute(
        "SELECT device_id FROM rollout_devices WHERE rollout_id = ? AND status = 'pending' "
        "AND phase = ''", [rollout_id]).fetchall()]
    if publish is not None:
        for device_id in pending:
            publish(device_id, b"")
    _set_state(db, rollout_id, "aborted", "aborted by the operator", time.time())
    return len(pending)
