"""What an update attempt tells the rest of the agent and the cloud.

`UpdateOutcome` is what `Updater.handle_deployment` returns (and `apply` prints);
`StatusReporter` appends an `UpdateStatus` for `devices/{id}/update` to the outbox, so every
step and outcome reaches the cloud even across a broker outage or a restart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol

from agent.update.journal import JournalEntry
from shared.messages import Message, UpdateStatus
from shared.phases import UpdatePhase
from shared.topics import Channel
from shared.verify import VerifiedUpdate

__all__ = ["MAX_DETAIL", "Outbox", "StatusReporter", "UpdateOutcome", "entry_like"]

log = logging.getLogger(__name__)

MAX_DETAIL = 500  # characters of a detail sentence kept in the journal and on the wire


class Outbox(Protocol):
    def append(self, channel: Channel, make: Callable[[int], Message]) -> int: ...


@dataclass(frozen=True)
class UpdateOutcome:
    """Where `handle_deployment` left an update: active (probation or committed) or not."""

    phase: UpdatePhase
    reason: str = ""
    detail: str = ""
    rollout_id: str = ""
    model: str = ""
    version: int = 0
    sha256: str = ""
    via: str = ""
    no_op: bool = False

    @property
    def active(self) -> bool:
        return self.phase in (UpdatePhase.PROBATION, UpdatePhase.COMMITTED)

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "active": self.active}

    def describe(self) -> str:
        """One line for a log: `probation digits@7 (3a6fb0ce72a3, full), rollout R` or
        `rejected digits@7 (...): io_signature_mismatch: <detail>`."""
        what = f"{self.phase} {self.model or '?'}@{self.version}"
        about = ", ".join(part for part in (self.sha256[:12], self.via) if part)
        line = f"{what} ({about})" if about else what
        if self.no_op:
            line += ", nothing to do"
        if self.rollout_id:
            line += f", rollout {self.rollout_id}"
        if self.reason:
            line += f": {self.reason}" + (f": {self.detail}" if self.detail else "")
        return line

    @classmethod
    def of_verified(
        cls,
        phase: UpdatePhase,
        verified: VerifiedUpdate,
        *,
        reason: str = "",
        detail: str = "",
        no_op: bool = False,
    ) -> UpdateOutcome:
        release = verified.release
        return cls(
            phase,
            reason,
            detail,
            verified.deployment.rollout_id,
            release.name,
            release.version,
            release.target.sha256,
            no_op=no_op,
        )

    @classmethod
    def of_entry(cls, entry: JournalEntry) -> UpdateOutcome:
        return cls(
            entry.phase,
            entry.reason,
            entry.detail,
            entry.rollout_id,
            entry.model,
            entry.version,
            entry.sha256,
            entry.via,
        )


def entry_like(verified: VerifiedUpdate) -> JournalEntry:
    """A journal-shaped view of a verified update that was never journaled (a no-op)."""
    release = verified.release
    return JournalEntry(
        0,
        verified.deployment.rollout_id,
        release.name,
        release.version,
        release.target.sha256,
        UpdatePhase.IDLE,
    )


class StatusReporter:
    def __init__(self, device_id: str, outbox: Outbox) -> None:
        self.device_id = device_id
        self._outbox = outbox

    def report(
        self,
        phase: UpdatePhase,
        entry: JournalEntry | None,
        *,
        reason: str = "",
        detail: str = "",
        done: int = 0,
        total: int = 0,
        via: str = "",
    ) -> None:
        device = self.device_id

        def make(seq: int) -> UpdateStatus:
            return UpdateStatus(
                device_id=device,
                seq=seq,
                ts=time.time(),
                rollout_id=entry.rollout_id if entry else "",
                phase=phase,
                model=entry.model if entry else "",
                version=entry.version if entry else 0,
                sha256=entry.sha256 if entry else "",
                reason=reason,
                detail=detail[:MAX_DETAIL].encode("utf-8", "backslashreplace").decode("utf-8"),
                bytes_done=done,
                bytes_total=total,
                via=via or (entry.via if entry else ""),
            )

        try:
            self._outbox.append(Channel.UPDATE, make)
        except Exception:
            log.exception("could not record the update status %s", phase)
