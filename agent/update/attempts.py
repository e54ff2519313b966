"""An update attempt moving through its phases: the one place a phase changes.

`Attempts.advance(entry, phase, reason, detail)` checks the move against the table in
`shared.phases`, writes the journal row, appends the status report to the outbox, passes the
crash point `journal.<phase>` (when the phase changed) and tells the daemon the state changed.
In that order: after a crash the journal says what may be half done, and the report of a step
is durable before anything after it happens.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.update.crash import crashpoint
from agent.update.journal import JournalEntry, JournalValue, UpdateJournal
from agent.update.outcome import MAX_DETAIL, StatusReporter
from shared.phases import UpdatePhase, check_transition

__all__ = ["Attempts"]


class Attempts:
    def __init__(
        self, journal: UpdateJournal, status: StatusReporter, notify: Callable[[], None]
    ) -> None:
        self._journal = journal
        self._status = status
        self._notify = notify

    def begin(
        self,
        phase: UpdatePhase,
        *,
        reason: str = "",
        detail: str = "",
        total: int = 0,
        **columns: JournalValue,
    ) -> JournalEntry:
        """A new journal row in `phase` (downloading, or rejected for a refused document)."""
        check_transition(None, phase)
        entry = self._journal.begin(
            phase=phase, reason=reason, detail=detail[:MAX_DETAIL], **columns
        )
        self._status.report(phase, entry, reason=reason, detail=detail, total=total)
        crashpoint(f"journal.{phase}")
        self._notify()
        return entry

    def advance(
        self,
        entry: JournalEntry,
        phase: UpdatePhase,
        reason: str = "",
        detail: str = "",
        *,
        done: int = 0,
        total: int = 0,
        **columns: JournalValue,
    ) -> JournalEntry:
        """Move `entry` to `phase` (RuntimeError when the table forbids it); the new row."""
        was = self._journal.get(entry.id).phase
        check_transition(was, phase)
        entry = self._journal.update(
            entry.id, phase=phase, reason=reason, detail=detail[:MAX_DETAIL], **columns
        )
        self._status.report(phase, entry, reason=reason, detail=detail, done=done, total=total)
        if phase != was:
            crashpoint(f"journal.{phase}")
        self._notify()
        return entry

    def note(self, entry: JournalEntry, **columns: JournalValue) -> JournalEntry:
        """Record columns that are not a step (a verdict about to be acted on, a start time)."""
        if "phase" in columns:
            raise RuntimeError("a phase changes only through advance()")
        return self._journal.update(entry.id, **columns)

    def changed(self) -> None:
        """Tell the daemon the state changed without a step (a probation resumed)."""
        self._notify()

    def report(
        self,
        phase: UpdatePhase,
        entry: JournalEntry,
        *,
        reason: str = "",
        detail: str = "",
        done: int = 0,
        total: int = 0,
    ) -> None:
        """A report that is not a step: progress within a phase, or an attempt never journaled."""
        self._status.report(phase, entry, reason=reason, detail=detail, done=done, total=total)
