"""The rollout state machine: every transition of a rollout and of its devices, in the store.

A rollout:     running -> paused (thresholds, operator) -> running (resume) ...
               running -> completed;  running | paused -> aborted
A device in it: waiting -> pending (its deployment published) -> committed | failed
                pending -> timed_out (silent) -> committed | failed (a late report still counts)
                pending | timed_out -> superseded (the device took a newer rollout's
                                       deployment instead: counts neither way)

`cloud.rollout` decides when (waves, thresholds); `cloud.ingest` reports device outcomes
through `record_reports`. Nothing else writes `rollouts` or `rollout_devices`.

Download progress (`bytes_done` of `bytes_total` on a device's row) follows the device's
newest report for the rollout, by its seq (a redelivered or late older report changes
nothing). A report that carries a total sets both figures (done held to at most the total); one
without (`bytes_total` 0: the agent sends none past the download) leaves them alone, except
that a phase past downloading (verifying .. committed, rolled_back) means the download
finished: done becomes the total. `idle` (stopped, superseded) and `rejected` keep the last
figures: how far the download got.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import Connection, and_, bindparam, exists, func, or_, select, update

from cloud.store.schema import rollout_devices as rd
from cloud.store.schema import rollouts, updates
from shared.phases import UpdatePhase

if TYPE_CHECKING:
    from cloud.store.engine import Store

__all__ = [
    "FAILURES",
    "DeviceStatus",
    "Report",
    "RolloutState",
    "UnknownRollout",
    "accept_failures",
    "counts_by_state",
    "device_rows",
    "failure_details",
    "failure_reasons",
    "get_rollout",
    "insert_rollout",
    "last_wave",
    "mark_pending",
    "record_reports",
    "rollout_rows",
    "running_rollouts",
    "set_state",
    "state_and_reason",
    "status_counts",
    "time_out_pending",
    "unstarted_pending",
    "waiting_in_wave",
    "wave_started",
    "waves_of",
]


class RolloutState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    ABORTED = "aborted"


class DeviceStatus(StrEnum):
    WAITING = "waiting"  # its wave has not started
    PENDING = "pending"  # its deployment is published; no outcome yet
    COMMITTED = "committed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"  # silent for device_timeout_s after publication: a failure
    SUPERSEDED = "superseded"  # dropped this deployment for a newer one: not counted


FAILURES = (DeviceStatus.FAILED, DeviceStatus.TIMED_OUT)
# the update phases that end a device's part in a rollout, and the status each gives
OUTCOMES = {
    "committed": DeviceStatus.COMMITTED,
    "rolled_back": DeviceStatus.FAILED,
    "rejected": DeviceStatus.FAILED,
}
# phases a device reaches only with its download complete (a report without bytes then means
# all of them)
DOWNLOADED = frozenset(
    {
        UpdatePhase.VERIFYING,
        UpdatePhase.VALIDATING,
        UpdatePhase.STAGED,
        UpdatePhase.ACTIVATING,
        UpdatePhase.PROBATION,
        UpdatePhase.COMMITTED,
        UpdatePhase.ROLLED_BACK,
    }
)


class Report(NamedTuple):
    """What `record_reports` needs of one device update report."""

    device_id: str
    rollout_id: str
    seq: int
    phase: str
    reason: str
    bytes_done: int = 0
    bytes_total: int = 0


class UnknownRollout(KeyError):
    def __str__(self) -> str:
        return f"no rollout {self.args[0]!r}"


def insert_rollout(
    conn: Connection, row: dict[str, Any], devices: list[tuple[str, int, str]], now: float
) -> None:
    """A new running rollout (current wave -1: none started) and its waiting devices
    (device id, wave, signed deployment)."""
    conn.execute(
        rollouts.insert(),
        {
            **row,
            "state": RolloutState.RUNNING,
            "current_wave": -1,
            "created": now,
            "updated": now,
            "wave_started": now,
            "reason": "",
        },
    )
    conn.execute(
        rd.insert(),
        [
            {
                "rollout_id": row["id"],
                "device_id": d,
                "wave": w,
                "status": DeviceStatus.WAITING,
                "deployment": deployment,
                "updated": now,
            }
            for d, w, deployment in devices
        ],
    )


def get_rollout(store: Store, rollout_id: str) -> dict[str, Any]:
    with store.connect() as conn:
        row = conn.execute(select(rollouts).where(rollouts.c.id == rollout_id)).mappings().first()
    if row is None:
        raise UnknownRollout(rollout_id)
    return dict(row)


def rollout_rows(
    store: Store, rollout_id: str | None = None, state: RolloutState | None = None
) -> list[dict[str, Any]]:
    query = select(rollouts).order_by(rollouts.c.created)
    if rollout_id is not None:
        query = query.where(rollouts.c.id == rollout_id)
    if state is not None:
        query = query.where(rollouts.c.state == state)
    with store.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def running_rollouts(store: Store) -> list[dict[str, Any]]:
    return rollout_rows(store, state=RolloutState.RUNNING)


def device_rows(store: Store, rollout_id: str) -> list[dict[str, Any]]:
    """(device_id, wave, status, reason, phase, bytes_done, bytes_total) of every device, by
    wave and id."""
    with store.connect() as conn:
        return [
            dict(r)
            for r in conn.execute(
                select(
                    rd.c.device_id,
                    rd.c.wave,
                    rd.c.status,
                    rd.c.reason,
                    rd.c.phase,
                    rd.c.bytes_done,
                    rd.c.bytes_total,
                )
                .where(rd.c.rollout_id == rollout_id)
                .order_by(rd.c.wave, rd.c.device_id)
            ).mappings()
        ]


def last_wave(store: Store, rollout_id: str) -> int:
    with store.connect() as conn:
        value = conn.scalar(select(func.max(rd.c.wave)).where(rd.c.rollout_id == rollout_id))
    return int(value) if value is not None else -1


def waiting_in_wave(store: Store, rollout_id: str, wave: int) -> list[tuple[str, str]]:
    """(device id, deployment) of the devices of `wave` not published yet."""
    with store.connect() as conn:
        return [
            (d, dep)
            for d, dep in conn.execute(
                select(rd.c.device_id, rd.c.deployment).where(
                    rd.c.rollout_id == rollout_id,
                    rd.c.wave == wave,
                    rd.c.status == DeviceStatus.WAITING,
                )
            )
        ]


def mark_pending(store: Store, rollout_id: str, device_ids: list[str], now: float) -> None:
    """waiting -> pending: their deployments went out."""
    with store.begin() as conn:
        conn.execute(
            update(rd)
            .where(
                rd.c.rollout_id == rollout_id,
                rd.c.device_id.in_(device_ids),
                rd.c.status == DeviceStatus.WAITING,
            )
            .values(status=DeviceStatus.PENDING, published=now, updated=now)
        )


def wave_started(store: Store, rollout_id: str, wave: int, now: float) -> None:
    with store.begin() as conn:
        conn.execute(
            update(rollouts)
            .where(rollouts.c.id == rollout_id)
            .values(current_wave=wave, wave_started=now, updated=now)
        )


def time_out_pending(store: Store, rollout_id: str, published_before: float, now: float) -> None:
    """pending -> timed_out for devices silent since their publication."""
    with store.begin() as conn:
        conn.execute(
            update(rd)
            .where(
                rd.c.rollout_id == rollout_id,
                rd.c.status == DeviceStatus.PENDING,
                rd.c.published < published_before,
            )
            .values(status=DeviceStatus.TIMED_OUT, reason="timeout", updated=now)
        )


def status_counts(store: Store, rollout_id: str, up_to_wave: int | None = None) -> Counter[str]:
    query = (
        select(rd.c.status, func.count()).where(rd.c.rollout_id == rollout_id).group_by(rd.c.status)
    )
    if up_to_wave is not None:
        query = query.where(rd.c.wave <= up_to_wave)
    with store.connect() as conn:
        return Counter({str(s): int(n) for s, n in conn.execute(query)})


def failure_reasons(store: Store, rollout_id: str) -> Counter[str]:
    """Failed and timed-out devices by reason (the status when there is none)."""
    with store.connect() as conn:
        rows = conn.execute(
            select(rd.c.reason, rd.c.status).where(
                rd.c.rollout_id == rollout_id, rd.c.status.in_(FAILURES)
            )
        ).all()
    return Counter((r or s) for r, s in rows)


def set_state(store: Store, rollout_id: str, state: RolloutState, reason: str, now: float) -> None:
    with store.begin() as conn:
        conn.execute(
            update(rollouts)
            .where(rollouts.c.id == rollout_id)
            .values(state=state, reason=reason, updated=now)
        )


def accept_failures(store: Store, rollout_id: str, now: float) -> None:
    """paused -> running, the failures so far accepted (new ones still count)."""
    with store.begin() as conn:
        failed = conn.scalar(
            select(func.count())
            .select_from(rd)
            .where(rd.c.rollout_id == rollout_id, rd.c.status.in_(FAILURES))
        )
        conn.execute(
            update(rollouts)
            .where(rollouts.c.id == rollout_id)
            .values(
                state=RolloutState.RUNNING,
                reason="resumed by the operator",
                failures_accepted=failed,
                updated=now,
            )
        )


def unstarted_pending(store: Store, rollout_id: str) -> list[str]:
    """Pending devices that have reported nothing yet: their deployment can still be taken
    back (aborted)."""
    with store.connect() as conn:
        return [
            d
            for (d,) in conn.execute(
                select(rd.c.device_id).where(
                    rd.c.rollout_id == rollout_id,
                    rd.c.status == DeviceStatus.PENDING,
                    rd.c.phase == "",
                )
            )
        ]


def record_reports(conn: Connection, reports: Iterable[Report], now: float) -> None:
    """Device update reports inside ingest's transaction (after the batch's reports are
    stored in `updates`): progress moves a pending device's phase (unless a newer report is
    stored); an outcome ends a pending or timed-out device (a late report still counts); each
    device's newest report sets its download figures (see the module docstring)."""
    progress, outcomes = [], []
    by_device: dict[tuple[str, str], list[Report]] = {}
    for report in reports:
        device_id, rollout_id, phase, reason = (
            report.device_id,
            report.rollout_id,
            report.phase,
            report.reason,
        )
        if not rollout_id:
            continue
        by_device.setdefault((rollout_id, device_id), []).append(report)
        status = OUTCOMES.get(phase)
        if phase == "idle" and reason == "superseded":
            status = DeviceStatus.SUPERSEDED  # a newer deployment took this device over
        if status is None:
            progress.append(
                {"p": phase, "u": now, "r": rollout_id, "d": device_id, "seq": report.seq}
            )
        else:
            outcomes.append(
                {"s": status, "p": phase, "why": reason, "u": now, "r": rollout_id, "d": device_id}
            )
    b = bindparam
    where = (rd.c.rollout_id == b("r"), rd.c.device_id == b("d"))
    if progress:  # a late, older report (a resend) does not move the phase back
        conn.execute(
            update(rd)
            .where(*where, rd.c.status == DeviceStatus.PENDING, ~_newer_report())
            .values(phase=b("p"), updated=b("u")),
            progress,
        )
    if outcomes:
        conn.execute(
            update(rd)
            .where(
                *where,
                or_(rd.c.status == DeviceStatus.PENDING, rd.c.status == DeviceStatus.TIMED_OUT),
            )
            .values(status=b("s"), phase=b("p"), reason=b("why"), updated=b("u")),
            outcomes,
        )
    _record_bytes(conn, by_device.values())


def _newer_report() -> Any:
    """Whether the store holds a report of device `d` for rollout `r` newer than seq `seq`
    (the batch's own reports are stored before `record_reports` runs)."""
    b = bindparam
    return exists().where(
        and_(
            updates.c.device_id == b("d"),
            updates.c.rollout_id == b("r"),
            updates.c.seq > b("seq"),
        )
    )


def _record_bytes(conn: Connection, batches: Iterable[list[Report]]) -> None:
    """Each device's download figures from its reports in this batch (one rollout and device
    per list): its newest report's, or, when that one carries none, the newest that does
    (completed by a phase past downloading); unless the store holds a report of the same
    device for the same rollout newer (a higher seq) than the batch's newest."""
    sized, finished = [], []
    for reports in batches:
        newest = max(reports, key=lambda r: r.seq)
        key = {"r": newest.rollout_id, "d": newest.device_id, "seq": newest.seq}
        with_bytes = [r for r in reports if r.bytes_total > 0]
        if with_bytes:
            last = max(with_bytes, key=lambda r: r.seq)
            done, total = min(last.bytes_done, last.bytes_total), last.bytes_total
            if newest.bytes_total == 0 and newest.phase in DOWNLOADED:
                done = total
            sized.append({**key, "done": done, "total": total})
        elif newest.phase in DOWNLOADED:
            finished.append(key)
    b = bindparam
    where = (rd.c.rollout_id == b("r"), rd.c.device_id == b("d"), ~_newer_report())
    if sized:
        conn.execute(
            update(rd).where(*where).values(bytes_done=b("done"), bytes_total=b("total")), sized
        )
    if finished:
        conn.execute(update(rd).where(*where).values(bytes_done=rd.c.bytes_total), finished)


def failure_details(store: Store, rollout_id: str) -> dict[str, str]:
    """Each failed device's own words on its last update report in this rollout (why it
    failed), by device id: one query, each device's report found by its key."""
    u = updates
    last = (
        select(u.c.detail)
        .where(u.c.device_id == rd.c.device_id, u.c.rollout_id == rd.c.rollout_id)
        .order_by(u.c.seq.desc())
        .limit(1)
        .correlate(rd)
        .scalar_subquery()
    )
    query = select(rd.c.device_id, last).where(
        rd.c.rollout_id == rollout_id, rd.c.status.in_(FAILURES)
    )
    with store.connect() as conn:
        return {str(d): str(detail or "") for d, detail in conn.execute(query)}


def state_and_reason(store: Store, rollout_id: str) -> tuple[str, str]:
    row = get_rollout(store, rollout_id)
    return str(row["state"]), str(row["reason"])


def counts_by_state(conn: Connection) -> dict[str, int]:
    return {
        str(s): int(n)
        for s, n in conn.execute(select(rollouts.c.state, func.count()).group_by(rollouts.c.state))
    }


def waves_of(row: dict[str, Any]) -> list[str]:
    return list(json.loads(row["waves"]))
