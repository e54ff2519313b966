"""Activation and probation: a staged model becomes active, the loop swaps it in, and it is
watched until its probation passes (committed) or fails (rolled back, the old model serving).

    staged -> activating -> probation -> committed | rolled_back
                         -> committed (no inference loop: nothing to watch)
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from agent.update.context import UpdateContext
from agent.update.crash import crashpoint
from agent.update.journal import JournalEntry
from agent.update.outcome import MAX_DETAIL, UpdateOutcome
from agent.update.probation import LatencyWindow, Probation, Verdict
from shared.documents import Deployment, Release, load_json
from shared.errors import InvalidModel, ProbationFailed, Rejected
from shared.phases import UpdatePhase

if TYPE_CHECKING:
    from agent.loop import InferenceResult
    from agent.runtime.protocol import Model

__all__ = ["Activation"]

log = logging.getLogger(__name__)


class Activation:
    """The model on probation, if any, and the model it replaced (kept for shadow checks)."""

    def __init__(self, ctx: UpdateContext) -> None:
        self._ctx = ctx
        self._latency = LatencyWindow()
        self.probation: Probation | None = None
        self._previous: Model | None = None

    def observe(self, result: InferenceResult) -> None:
        """Loop listener, on the inference thread: two appends, no I/O."""
        if result.ok:
            self._latency.add(result.model_sha256, result.latency_ms)
        probation = self.probation
        if probation is not None:
            probation.observe(result)

    def activate(self, entry: JournalEntry, release: Release, model: Model) -> UpdateOutcome:
        """Make the staged `model` active; on probation when a loop runs, else committed.

        Raises:
            Rejected: the loop could not swap the model in (`InvalidModel`); the links are back.
            OSError: the links could not be written.
        """
        ctx = self._ctx
        entry = ctx.steps.advance(entry, UpdatePhase.ACTIVATING)
        ctx.store.activate(entry.sha256)
        if ctx.loop is None:
            model.close()
            detail = "installed with no inference loop running: committed without probation"
            entry = ctx.steps.advance(entry, UpdatePhase.COMMITTED, detail=detail)
            ctx.housekeeping()
            return UpdateOutcome.of_entry(entry)
        baseline = self._latency.p95(entry.from_sha256)
        try:
            old = ctx.loop.swap(model)
        except Exception as e:
            model.close()
            ctx.store.restore(entry.from_sha256, entry.prev_sha256 or None)
            if isinstance(e, Rejected):
                raise
            raise InvalidModel(f"the loop could not swap in the new model: {e}") from e
        crashpoint("loop.swapped")
        self._previous = old
        self.probation = Probation(entry.sha256, release.probation, baseline, old, clock=ctx.clock)
        self.probation.on_disagreement = ctx.on_disagreement
        entry = ctx.steps.advance(entry, UpdatePhase.PROBATION, probation_started=time.time())
        return UpdateOutcome.of_entry(entry)

    def settle(self, verdict: Verdict) -> None:
        """End the running probation: committed when `verdict` passed, else rolled back."""
        crashpoint("probation.verdict")
        ctx = self._ctx
        probation = self.probation
        entry = ctx.journal.in_progress()
        if probation is None:
            raise RuntimeError("no probation to settle")
        probation.stop()
        self.probation = None
        old, self._previous = self._previous, None
        if entry is None:  # the journal was settled elsewhere: nothing to decide
            return
        if verdict.passed:
            if old is not None:
                old.close()
            entry = ctx.steps.advance(entry, UpdatePhase.COMMITTED, detail=verdict.detail)
            log.info("committed %s@%s: %s", entry.model, entry.version, verdict.detail)
        else:
            self.roll_back(entry, old, ProbationFailed(verdict.detail))
        ctx.housekeeping()

    def roll_back(self, entry: JournalEntry, old: Model | None, error: Rejected) -> None:
        """Serve the model from before `entry` again and settle it as `rolled_back`."""
        ctx = self._ctx
        log.warning("rolling back %s@%s: %s", entry.model, entry.version, error)
        # the verdict first: a crash from here on finishes the rollback, never resumes probation
        entry = ctx.steps.note(entry, reason=error.reason, detail=str(error)[:MAX_DETAIL])
        if ctx.loop is not None and old is None and ctx.loop.model.sha256 == entry.sha256:
            path = ctx.store.verified_path(entry.from_sha256)
            if path is not None:
                old = ctx.load(path)
        if ctx.loop is not None and old is not None:
            new = ctx.loop.swap(old)
            new.close()
        crashpoint("rollback.swapped")
        ctx.store.restore(entry.from_sha256, entry.prev_sha256 or None)
        ctx.steps.advance(entry, UpdatePhase.ROLLED_BACK, error.reason, str(error))

    def resume(self, entry: JournalEntry) -> None:
        """Start the probation again on the model the loop serves (after one interruption)."""
        ctx = self._ctx
        if ctx.loop is None:
            raise RuntimeError("a probation resumes once the loop runs")
        try:
            envelope = load_json(entry.deployment.encode("utf-8"))
            deployment = Deployment.parse_signed(envelope["signed"])
            release = Release.parse_signed(deployment.release["signed"], "release.signed")
        except (Rejected, KeyError, TypeError) as e:  # verified when stored: not expected
            self.roll_back(entry, None, ProbationFailed(f"cannot resume probation: {e}"))
            return
        old = None
        path = ctx.store.verified_path(entry.from_sha256)
        if path is not None:
            try:
                old = ctx.load(path)
            except Rejected as e:
                log.warning("the previous model does not load (%s); no shadow checks", e)
        self._previous = old
        self.probation = Probation(entry.sha256, release.probation, None, old, clock=ctx.clock)
        self.probation.on_disagreement = ctx.on_disagreement
        ctx.steps.note(entry, probation_started=time.time())
        crashpoint("probation.resumed")
        ctx.steps.changed()

    def stop(self) -> None:
        if self.probation is not None:
            self.probation.stop()
