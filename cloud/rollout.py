"""Staged rollouts: one signed deployment per device, released in waves.

A rollout has waves given as device counts or shares of the targeted devices (`1,10%,50%,100%`,
cumulative: the last wave always covers every device). Each device's row in `rollout_devices`
moves through

    waiting -> pending (deployment published) -> committed | failed | timed_out | superseded

(`cloud.store.rollouts` holds every transition.) `failed` carries the device's reason
(`probation_failed`, `hash_mismatch`, ...), reported by the device with this rollout's id even
when it refused the deployment unread (the id is then the device's claim, applied to that
device's row only); a pending device silent for `device_timeout_s` after its deployment went
out is `timed_out` and counts as a failure. A device that dropped this deployment for a newer
one (another rollout) is `superseded`: it no longer counts in this rollout, neither way. On
each tick, a running rollout:

  * pauses when failures exceed `max_failures_pct` of the devices released so far (in the manner
    of hawkBit's error threshold), recording the reasons;
  * starts the next wave once `success_threshold_pct` of the devices released so far committed;
  * completes when the last wave has reached the threshold and nothing is pending.

`resume` accepts the failures seen so far and lets the rollout go on; `abort` clears the
retained deployments of devices that have not started.

Deployments are signed once, when the rollout is created (`litefleet deploy`, the dashboard),
and stored; the controller only publishes them, wave by wave, and signs nothing. A root rotated
meanwhile may no longer list the key that signed them: given the current root, `start_wave`
checks the wave's deployments (and the releases in them) by the devices' rule first, and pauses
the rollout with that reason instead of publishing what every device would refuse.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cloud.signers import UntrustedSigner, check_signed
from cloud.store import Store
from cloud.store import rollouts as rs
from cloud.store.rollouts import RolloutState
from shared.documents import Deployment, Release, format_time
from shared.envelope import sign_envelope
from shared.keys import SigningKey
from shared.root import Root
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
STATES = tuple(RolloutState)
_MARK_EVERY = 100  # deployments published between two writes of their pending status


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
    return (
        f"{release.name}-{release.version}-{time.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(2)}"
    )


def create_rollout(
    store: Store,
    builds: dict[str, tuple[Release, dict[str, Any]]],
    targets: dict[str, str],
    waves: list[str],
    key: SigningKey,
    now: datetime,
    *,
    lifetime_s: int,
    success_threshold_pct: int = 95,
    max_failures_pct: int = 5,
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
    rows: list[tuple[str, int, str]] = []
    wave_of = 0
    for index, device_id in enumerate(devices):
        while index >= sizes[wave_of]:
            wave_of += 1
        build, build_envelope = builds[targets[device_id]]
        expires = min(now + timedelta(seconds=lifetime_s), build.expires_at)
        deployment = Deployment(
            rollout_id=rollout_id,
            device_id=device_id,
            issued=format_time(now),
            expires=format_time(expires),
            release=build_envelope,
        )
        envelope = sign_envelope(deployment.to_signed(), [key])
        deployments[device_id] = envelope
        rows.append((device_id, wave_of, json.dumps(envelope)))
    with store.begin() as conn:
        rs.insert_rollout(
            conn,
            {
                "id": rollout_id,
                "release_name": release.name,
                "release_version": release.version,
                "waves": json.dumps(waves),
                "success_threshold_pct": success_threshold_pct,
                "max_failures_pct": max_failures_pct,
            },
            rows,
            now.timestamp(),
        )
    log.info("rollout %s: %s devices in waves %s", rollout_id, len(devices), sizes)
    return RolloutPlan(rollout_id, release, tuple(devices), tuple(waves), tuple(sizes), deployments)


def _untrusted_wave(rows: list[tuple[str, str]], root: Root, wave: int) -> str | None:
    """Why devices would refuse the stored deployments of a wave under `root`, or None."""
    seen: set[tuple[tuple[str, ...], ...]] = set()
    remedy = "abort this rollout and deploy again"
    for _device_id, text in rows:
        envelope = json.loads(text)
        release = envelope["signed"]["release"]
        signers = (_keyids(envelope), _keyids(release))
        if signers in seen:  # signed by the same keys as a deployment checked already
            continue
        seen.add(signers)
        try:
            check_signed(root, envelope, f"each deployment of wave {wave + 1}", remedy)
            check_signed(root, release, f"the release in wave {wave + 1}", remedy)
        except UntrustedSigner as e:
            return str(e)
    return None


def _keyids(envelope: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(s.get("keyid")) for s in envelope.get("signatures", []))


def start_wave(
    store: Store,
    rollout_id: str,
    wave: int,
    publish: Publish,
    now: float,
    root: Root | None = None,
) -> int:
    """Publish the deployments of `wave` and mark them pending; returns how many went out.

    With `root` (the current one), a wave whose deployments devices would refuse under it
    publishes nothing: the rollout pauses with the reason."""
    rows = rs.waiting_in_wave(store, rollout_id, wave)
    problem = _untrusted_wave(rows, root, wave) if root is not None else None
    if problem is not None:
        rs.set_state(store, rollout_id, RolloutState.PAUSED, problem, now)
        log.warning("rollout %s paused before wave %s: %s", rollout_id, wave + 1, problem)
        return 0
    # published, then marked pending, 100 at a time: a controller that dies in between leaves
    # them waiting, and the next one publishes them again (the same retained deployment)
    for start in range(0, len(rows), _MARK_EVERY):
        chunk = rows[start : start + _MARK_EVERY]
        for device_id, deployment in chunk:
            publish(device_id, deployment.encode("utf-8"))
        rs.mark_pending(store, rollout_id, [d for d, _ in chunk], now)
    rs.wave_started(store, rollout_id, wave, now)
    log.info("rollout %s: wave %s started (%s devices)", rollout_id, wave + 1, len(rows))
    return len(rows)


def _failure_summary(store: Store, rollout_id: str) -> str:
    reasons = rs.failure_reasons(store, rollout_id)
    return ", ".join(f"{reason}: {n}" for reason, n in reasons.most_common())


def _tick_one(
    store: Store,
    row: dict[str, Any],
    publish: Publish,
    now: float,
    device_timeout_s: float,
    root: Root | None,
) -> None:
    rid, wave = row["id"], row["current_wave"]
    if wave < 0:
        start_wave(store, rid, 0, publish, now, root)
        return
    rs.time_out_pending(store, rid, now - device_timeout_s, now)
    counts = rs.status_counts(store, rid, up_to_wave=wave)
    released = sum(counts.values()) - counts[rs.DeviceStatus.SUPERSEDED]
    failed = counts[rs.DeviceStatus.FAILED] + counts[rs.DeviceStatus.TIMED_OUT]
    accepted = int(row["failures_accepted"])
    new_failures = failed - accepted
    if new_failures > 0 and new_failures * 100 > row["max_failures_pct"] * released:
        reason = (
            f"{failed} of {released} devices failed, over the {row['max_failures_pct']}% "
            f"threshold ({_failure_summary(store, rid)})"
        )
        rs.set_state(store, rid, RolloutState.PAUSED, reason, now)
        log.warning("rollout %s paused: %s", rid, reason)
        return
    committed, pending = counts[rs.DeviceStatus.COMMITTED], counts[rs.DeviceStatus.PENDING]
    # failures the operator accepted (resume) no longer count against the success threshold
    if committed * 100 < row["success_threshold_pct"] * (released - accepted):
        if pending == 0:
            reason = (
                f"{committed} of {released} devices committed, under the "
                f"{row['success_threshold_pct']}% success threshold "
                f"({_failure_summary(store, rid)})"
            )
            rs.set_state(store, rid, RolloutState.PAUSED, reason, now)
            log.warning("rollout %s paused: %s", rid, reason)
        return
    if wave < rs.last_wave(store, rid):
        start_wave(store, rid, wave + 1, publish, now, root)
    elif pending == 0:
        rs.set_state(
            store, rid, RolloutState.COMPLETED, f"{committed} of {released} committed", now
        )
        log.info("rollout %s completed", rid)


def tick_rollouts(
    store: Store,
    publish: Publish,
    now: float | None = None,
    device_timeout_s: float = 1800.0,
    root: Root | None = None,
) -> None:
    """One controller step over every running rollout; with `root` (the current root), no
    wave goes out that devices would refuse under it (see `start_wave`)."""
    now = time.time() if now is None else now
    for row in rs.running_rollouts(store):
        try:
            _tick_one(store, row, publish, now, device_timeout_s, root)
        except Exception:
            log.exception("rollout %s: tick failed; trying again next tick", row["id"])


def _get(store: Store, rollout_id: str) -> dict[str, Any]:
    try:
        return rs.get_rollout(store, rollout_id)
    except rs.UnknownRollout as e:
        raise KeyError(f"no rollout {rollout_id!r}") from e


def pause_rollout(store: Store, rollout_id: str) -> None:
    row = _get(store, rollout_id)
    if row["state"] != RolloutState.RUNNING:
        raise ValueError(f"rollout {rollout_id} is {row['state']}, not running")
    rs.set_state(store, rollout_id, RolloutState.PAUSED, "paused by the operator", time.time())


def resume_rollout(store: Store, rollout_id: str) -> None:
    """Go on, accepting the failures seen so far (new failures still pause it)."""
    row = _get(store, rollout_id)
    if row["state"] != RolloutState.PAUSED:
        raise ValueError(f"rollout {rollout_id} is {row['state']}, not paused")
    rs.accept_failures(store, rollout_id, time.time())


def abort_rollout(store: Store, rollout_id: str, publish: Publish | None) -> int:
    """Stop for good; clear the retained deployments of devices that have not reported."""
    row = _get(store, rollout_id)
    if row["state"] in (RolloutState.COMPLETED, RolloutState.ABORTED):
        raise ValueError(f"rollout {rollout_id} is already {row['state']}")
    pending = rs.unstarted_pending(store, rollout_id)
    if publish is not None:
        for device_id in pending:
            publish(device_id, b"")
    rs.set_state(store, rollout_id, RolloutState.ABORTED, "aborted by the operator", time.time())
    return len(pending)
