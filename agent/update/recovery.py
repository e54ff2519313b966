"""Recovery at start: settle whatever the journal says was half done, and pick the model file
to serve (one whose bytes hash to the name it has in the store).

- interrupted while downloading, verifying, staged or activating: the links are put back to
  the model that was active before (activation may have moved them), and the attempt is
  settled as `idle`. The retained deployment (or a second `apply`) starts it again, resuming
  the partial download, or finding the model in the store, where it is re-verified by hash
  and re-validated before use.
- interrupted while `validating` (loading and smoke-testing the new model): the links are put
  back and the attempt is settled as `rejected` (`invalid_model`).
- interrupted while on probation: a power cut is no verdict on a model, so the first time the
  new model stays active and probation starts again once the loop runs (reported as
  `probation` with the detail "probation interrupted, resumed"). A second interruption of the
  same probation is taken as the model's doing (a native crash, memory exhaustion): the links
  are put back and the attempt is `rolled_back` (`crashed`), so a bad model cannot become a
  crash loop. Condemned bytes at that version are not tried again; an operator re-releases
  them under a new version if they were blameless.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from agent.update.context import UpdateContext
from agent.update.journal import JournalEntry
from agent.update.modelstore import ACTIVE, PREVIOUS
from shared.errors import InvalidModel, ProbationCrashed, ProbationFailed, Rejected
from shared.phases import UpdatePhase

__all__ = ["RESUMED", "serve_path", "settle_interrupted"]

log = logging.getLogger(__name__)

RESUMED = "probation interrupted, resumed"
# journal detail that meant "validating" before it was a phase (a journal from an older agent)
LEGACY_VALIDATING = "loading and smoke-testing the model"


def settle_interrupted(ctx: UpdateContext, entry: JournalEntry) -> JournalEntry | None:
    """Settle the attempt a stop cut short; the entry whose probation resumes, if any."""
    was = entry.phase
    store = ctx.store
    if (
        was == UpdatePhase.PROBATION
        and entry.interruptions == 0
        and not entry.reason
        and store.link(ACTIVE) == entry.sha256
        and store.verified_path(entry.sha256) is not None
    ):
        entry = ctx.steps.advance(entry, UpdatePhase.PROBATION, detail=RESUMED, interruptions=1)
        log.warning(
            "the agent stopped while %s@%s was on probation: resuming it",
            entry.model,
            entry.version,
        )
        return entry
    if store.link(ACTIVE) != entry.from_sha256 and store.has(entry.from_sha256):
        store.restore(entry.from_sha256, entry.prev_sha256 or None)
    verdict = _verdict(entry)
    if verdict is not None:
        phase, error = verdict
        ctx.steps.advance(entry, phase, error.reason, str(error))
        return None
    if was == UpdatePhase.STAGED and store.verified_path(entry.sha256) is None:
        log.warning("staged model %s failed re-verification", entry.sha256[:12])
    detail = f"interrupted while {was}; the next delivery of the deployment resumes it"
    ctx.steps.advance(entry, UpdatePhase.IDLE, detail=detail)
    return None


def _verdict(entry: JournalEntry) -> tuple[UpdatePhase, Rejected] | None:
    """What an interruption in `entry`'s phase says about the model, if anything."""
    if entry.phase == UpdatePhase.PROBATION and entry.reason:  # a verdict, cut short: finish it
        return UpdatePhase.ROLLED_BACK, ProbationFailed(entry.detail)
    if entry.phase == UpdatePhase.PROBATION:
        return UpdatePhase.ROLLED_BACK, ProbationCrashed(
            f"the agent stopped twice while {entry.model}@{entry.version} was on probation: "
            "rolled back"
        )
    if entry.phase == UpdatePhase.VALIDATING or entry.detail == LEGACY_VALIDATING:
        return UpdatePhase.REJECTED, InvalidModel(
            "the agent stopped while loading and smoke-testing this model"
        )
    return None


def serve_path(ctx: UpdateContext) -> Path:
    """`active`, else `previous`, else the configured initial model: a file that verifies."""
    store = ctx.store
    for which in (ACTIVE, PREVIOUS):
        sha = store.link(which)
        if sha is None:
            continue
        if which == ACTIVE and not ctx.journal.model_version(sha):
            return _initial_path(ctx, sha)  # no OTA version installed: the config decides
        path = store.verified_path(sha)
        if path is None:
            log.error("the %s model %s is missing or corrupt", which, sha[:12])
            continue
        if which == PREVIOUS:
            log.warning("serving the previous model %s", sha[:12])
            store.restore(sha, None)
        return path
    return _initial_path(ctx, None)


def _initial_path(ctx: UpdateContext, active: str | None) -> Path:
    """`[model] initial`, linked as active once it loads (InvalidModel when it does not).

    While no OTA version is installed, a changed `initial` replaces the active initial model.
    """
    initial = ctx.config.model.initial
    try:
        data = initial.read_bytes()
    except OSError as e:
        raise InvalidModel(f"cannot read {initial}: {e.strerror}") from e
    sha = hashlib.sha256(data).hexdigest()
    if sha == active and (path := ctx.store.verified_path(sha)) is not None:
        return path
    ctx.load(initial).close()  # never link a dud
    path = ctx.store.install(data, sha)
    if ctx.journal.model_version(sha) is None:
        ctx.journal.remember_model(sha, ctx.config.model.name, 0)
    if active is not None:
        log.info(
            "[model] initial changed (%s, was %s) and no OTA version is installed: "
            "serving the new one",
            sha[:12],
            active[:12],
        )
    ctx.store.set_link(ACTIVE, sha)
    return path
