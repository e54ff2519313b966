"""The agent's updater: verify, fetch, validate, install, swap, watch, commit or roll back.

One public class with a few public methods; the stages live in their own modules:

    admission.py    the deployment verified against what serves now (pure)
    installed.py    whether the current root still trusts the installed releases (the floor)
    staging.py      retrieve, store, validate               downloading .. staged
    activation.py   swap in, probation, commit or roll back  activating .. committed
    recovery.py     settle an interrupted attempt, pick the file to serve
    retry.py        when a deployment that stopped without a verdict is tried again
    attempts.py     the one place a phase changes (journal, report, crash point, notify)

The updater is the only writer of the model store and the update journal. Each step is
written to the journal before it is taken and reported on `devices/{id}/update` through the
outbox. Whatever the journal says, `recover` returns a file whose bytes hash to the name it
has in the store: `active`, else `previous`, else the configured initial model.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from agent.config import AgentConfig
from agent.store import DeviceStore
from agent.update.activation import Activation
from agent.update.admission import admit_deployment, claimed_rollout_id
from agent.update.attempts import Attempts
from agent.update.context import DisagreementHook, Loop, ReleaseHook, UpdateContext
from agent.update.crash import crashpoint
from agent.update.fetch import Fetcher, Transfer, fetcher_for
from agent.update.handover import UpdateLock, take_requests, write_result
from agent.update.installed import InstalledTrust
from agent.update.journal import JournalEntry, UpdateJournal
from agent.update.modelstore import ACTIVE, PREVIOUS, ModelStore
from agent.update.outcome import Outbox, StatusReporter, UpdateOutcome, entry_like
from agent.update.probation import Verdict
from agent.update.recovery import serve_path, settle_interrupted
from agent.update.retrieval import Pace, TargetRetriever
from agent.update.retry import DEFAULT_RETRY, RetryPolicy, RetrySchedule
from agent.update.staging import stage
from agent.update.trust import TrustStore
from agent.update.variants import VariantChooser
from shared.errors import (
    DiskFull,
    FetchFailed,
    InvalidModel,
    IOSignatureMismatch,
    Rejected,
    Superseded,
    Unavailable,
)
from shared.keys import Keyring
from shared.messages import ModelIdentity
from shared.phases import UpdatePhase
from shared.verify import VerifiedUpdate
from shared.vocabulary import Via

if TYPE_CHECKING:
    from agent.runtime.protocol import Model, ModelLoader

__all__ = ["Loop", "UpdateOutcome", "Updater"]

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 1.0  # download progress reports at most this often
LOCK_WAIT_S = 120.0  # how long `recover` waits for an `apply` running without the daemon


def _loader(path: Path, threads: int, delegates: tuple[str, ...]) -> Model:
    from agent.runtime import load_model

    return load_model(path, threads=threads, delegates=delegates)


class Updater:
    def __init__(
        self,
        config: AgentConfig,
        db: DeviceStore,
        outbox: Outbox,
        on_state_change: Callable[[], None],
        *,
        fetchers: Callable[[str], Fetcher] | None = None,
        load_model: ModelLoader = _loader,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        clock: Callable[[], float] = time.monotonic,
        retry: RetryPolicy = DEFAULT_RETRY,
        lock: UpdateLock | None = None,
        keyring: Callable[[], Keyring] | None = None,
    ) -> None:
        self.config = config
        journal = UpdateJournal(db)
        steps = Attempts(journal, StatusReporter(config.device_id, outbox), on_state_change)
        self._ctx = UpdateContext(
            config,
            journal,
            ModelStore(config.state_dir, config.model.name),
            steps,
            load_model,
            now,
            clock,
        )
        self._activation = Activation(self._ctx)
        self._installed = InstalledTrust(self._ctx)
        self._retries = RetrySchedule(retry, clock)
        timeout = config.update.download_timeout_s
        self._fetchers = fetchers or (lambda url: fetcher_for(url, timeout))
        # the trusted root's release keys, asked for at each verification (roots rotate them)
        self._keyring = keyring or TrustStore(config.trust, config.state_dir, now).keyring
        self._lock = threading.RLock()
        self._pending: tuple[bytes, tuple[Path, ...]] | None = None  # behind a probation
        self._last_progress = 0.0
        self._update_lock = lock or UpdateLock(config.state_dir)
        self._pace = Pace(config.update.min_download_rate, config.update.download_grace_s)
        self._transfer: tuple[str, Transfer] | None = None  # (deployment digest, its download)
        self._resume: JournalEntry | None = None  # an interrupted probation, resumed on attach
        self._stopping = False
        self.variants = VariantChooser(
            config, self._ctx.downloads, self._fetchers, self._pace, load_model
        )

    # hooks (the daemon's drift and capture) -------------------------------------------------

    @property
    def on_release(self) -> ReleaseHook | None:
        """Told each verified release before its model is activated (its reference profile)."""
        return self._ctx.on_release

    @on_release.setter
    def on_release(self, hook: ReleaseHook | None) -> None:
        self._ctx.on_release = hook

    @property
    def on_disagreement(self) -> DisagreementHook | None:
        """Shadow frames the new and the previous model disagree on, during probation."""
        return self._ctx.on_disagreement

    @on_disagreement.setter
    def on_disagreement(self, hook: DisagreementHook | None) -> None:
        self._ctx.on_disagreement = hook

    # public -----------------------------------------------------------------------------

    def recover(self) -> Path:
        """Settle the journal after whatever stopped the last run; return the file to serve.

        Takes the update lock first (waiting for an `apply` that runs without the daemon).

        Raises:
            Unavailable: another process holds the update lock.
            InvalidModel: nothing installed verifies and `[model] initial` does not load.
        """
        if not self._update_lock.acquire(timeout=LOCK_WAIT_S):
            raise Unavailable(f"another process holds {self._update_lock.path}")
        with self._lock:
            entry = self._ctx.journal.in_progress()
            if entry is not None:
                self._resume = settle_interrupted(self._ctx, entry)
            path = serve_path(self._ctx)
            self._ctx.housekeeping()
            return path

    def active(self) -> ModelIdentity:
        return self._ctx.active()

    def phase(self) -> UpdatePhase:
        return self._ctx.journal.phase()

    def attach(self, loop: Loop) -> None:
        """Enable hot swap and probation: the daemon calls this once the loop runs."""
        self._ctx.loop = loop
        loop.add_listener(self._activation.observe)
        with self._lock:
            if self._resume is not None:
                self._activation.resume(self._resume)
                self._resume = None

    def supersede(self, data: bytes) -> bool:
        """A deployment arrived while another one downloads (any thread; no store access).

        When `data` is an authentic deployment for this device and not the one downloading,
        the running download is cancelled, so the worker turns to `data` at once; returns
        whether it was. Whatever `data` holds is judged in full when its turn comes.
        """
        running = self._transfer
        digest = hashlib.sha256(data).hexdigest()
        if running is None or running[0] == digest:
            return False
        try:
            verified = admit_deployment(
                data,
                self._keyring(),
                device_id=self.config.device_id,
                profile=self.config.profile.name,
                model_name=self.config.model.name,
                installed_version=0,
                installed_sha256=None,
                now=self._ctx.now(),
                max_model_bytes=self.config.update.max_model_bytes,
                expected_io=None,
            )
        except Rejected as e:
            log.info(
                "a deployment that does not verify (%s) does not stop the running download",
                e.reason,
            )
            return False
        why = f"superseded by rollout {verified.deployment.rollout_id}"
        log.info("cancelling the running download: %s", why)
        running[1].cancel(why)
        return True

    def interrupt(self) -> None:
        """The agent is stopping: end a running download now (any thread); it resumes later."""
        self._stopping = True  # and one that would start after this is cancelled at once
        running = self._transfer
        if running is not None:
            running[1].cancel("the agent is stopping", FetchFailed)

    def refuse(self, error: Rejected) -> UpdateOutcome:
        """Report a `desired` message refused before it got here (too big to keep)."""
        with self._lock:
            return self._refuse(error, "")

    def handle_deployment(self, data: bytes, artifact_dirs: Sequence[Path] = ()) -> UpdateOutcome:
        """Run the whole pipeline for one deployment document (from a worker thread).

        Every refusal and failure is an outcome (reported and journaled), not an exception:
        `rejected` with the reason, `idle` for a stop without a verdict (retried later), or
        queued behind a running probation.

        Raises:
            OSError: the model store or the journal could not be written (not a full disk).
        """
        with self._lock:
            if self._activation.probation is not None:
                return self._defer(data, tuple(artifact_dirs))
            self._retries.clear()
            return self._run(data, tuple(artifact_dirs))

    def tick(self) -> None:
        """Periodic: probation verdicts, deferred and retried deployments, housekeeping."""
        if not self._lock.acquire(blocking=False):
            return  # an update is running; the next tick will look again
        try:
            self._review_installed()
            probation = self._activation.probation
            if probation is not None:
                verdict = probation.decide()
                if verdict is not None:
                    self._activation.settle(verdict)
                return
            if self._pending is not None:
                data, dirs = self._pending
                self._pending = None
                self._run(data, dirs)
                return
            for request in take_requests(self.config.state_dir):
                outcome = self._run(request.deployment, request.artifact_dirs)
                write_result(self.config.state_dir, request.id, outcome.to_dict())
            due = self._retries.take_due()
            if due is not None:
                self._run(due.deployment, due.artifact_dirs)
                if self._retries.pending is not None:  # failed again (fetch, deadline, disk)
                    self._retries.schedule(due.deployment, due.artifact_dirs, after=due)
        finally:
            self._lock.release()

    def rollback(self) -> bool:
        """The operator's `rollback` command: end a running probation as failed, so the previous
        model serves again. A committed model stays (an older model comes back as a new
        release); returns whether anything was rolled back."""
        if self._activation.probation is None:  # never waits behind a download
            log.info("rollback requested, but no update is on probation; nothing to do")
            return False
        with self._lock:
            if self._activation.probation is None:
                log.info("rollback requested, but no update is on probation; nothing to do")
                return False
            self._activation.settle(Verdict(False, "rollback requested by the operator"))
            return True

    def probation_active(self) -> bool:
        return self._activation.probation is not None

    def close(self) -> None:
        with self._lock:
            self._activation.stop()
            self._ctx.journal.close()
            self._update_lock.release()

    # the pipeline -------------------------------------------------------------------------

    def _defer(self, data: bytes, dirs: tuple[Path, ...]) -> UpdateOutcome:
        admitted = self._admit(data)
        if isinstance(admitted, UpdateOutcome):
            return admitted
        _, verified = admitted
        release = verified.release
        if verified.is_current:
            return UpdateOutcome.of_verified(
                UpdatePhase.PROBATION, verified, no_op=True, detail="already on probation"
            )
        self._pending = (data, dirs)
        log.info(
            "deployment of %s@%s waits for the running probation", release.name, release.version
        )
        return UpdateOutcome.of_verified(
            UpdatePhase.IDLE, verified, detail="queued behind a probation"
        )

    def _review_installed(self) -> None:
        """Re-judge the installed releases when the trusted root changed (a refusing keyring,
        an expired root, is reported by the next deployment, not here)."""
        try:
            keyring = self._keyring()
        except Rejected:
            return
        self._installed.review(keyring)

    def _admit(self, data: bytes) -> tuple[ModelIdentity, VerifiedUpdate] | UpdateOutcome:
        """Verify `data` against the model serving now: (active, verified), or the refusal.

        The version to beat is the active release's, unless the current root no longer
        trusts that release (`InstalledTrust.floor`).
        """
        active = self.active()
        expected_io = self._ctx.active_io(active.sha256)
        try:
            keyring = self._keyring()
            self._installed.review(keyring)
            floor_version, floor_sha256 = self._installed.floor(active)
            return active, admit_deployment(
                data,
                keyring,
                device_id=self.config.device_id,
                profile=self.config.profile.name,
                model_name=self.config.model.name,
                installed_version=floor_version,
                installed_sha256=floor_sha256,
                now=self._ctx.now(),
                max_model_bytes=self.config.update.max_model_bytes,
                expected_io=expected_io,
            )
        except Rejected as e:
            return self._refuse(e, claimed_rollout_id(data))

    def _refuse(self, error: Rejected, rollout_id: str) -> UpdateOutcome:
        """A document that failed verification: nothing in it is trusted but the rollout id
        it claims, reported so the refusal counts in that rollout (for this device only)."""
        log.warning("deployment rejected: %s: %s", error.reason, error)
        self._ctx.steps.begin(
            UpdatePhase.REJECTED,
            reason=error.reason,
            detail=str(error),
            rollout_id=rollout_id,
            model="",
            version=0,
            sha256="",
        )
        return UpdateOutcome(UpdatePhase.REJECTED, error.reason, str(error), rollout_id)

    def _run(self, data: bytes, dirs: tuple[Path, ...]) -> UpdateOutcome:
        admitted = self._admit(data)
        if isinstance(admitted, UpdateOutcome):
            return admitted
        active, verified = admitted
        release = verified.release
        steps = self._ctx.steps
        if verified.is_current:
            log.info("%s@%s is already active", release.name, release.version)
            steps.report(UpdatePhase.COMMITTED, entry_like(verified), detail="already active")
            return UpdateOutcome.of_verified(
                UpdatePhase.COMMITTED, verified, no_op=True, detail="already active"
            )
        release = self.variants.choose(release, dirs, self._ctx.loop)  # the fastest variant here
        condemned = self._ctx.journal.condemned(release.target.sha256, release.version)
        if condemned is not None:
            detail = f"refused earlier ({condemned.reason}): {condemned.detail}"
            steps.report(
                UpdatePhase.REJECTED, entry_like(verified), reason=condemned.reason, detail=detail
            )
            return UpdateOutcome.of_verified(
                UpdatePhase.REJECTED, verified, reason=condemned.reason, detail=detail
            )
        entry = steps.begin(
            UpdatePhase.DOWNLOADING,
            total=release.artifact.size,
            rollout_id=verified.deployment.rollout_id,
            model=release.name,
            version=release.version,
            sha256=release.target.sha256,
            from_sha256=active.sha256,
            prev_sha256=self._ctx.store.link(PREVIOUS) or "",
            deployment=data.decode("utf-8"),
        )
        transfer = Transfer()
        self._transfer = (hashlib.sha256(data).hexdigest(), transfer)
        if self._stopping:
            transfer.cancel("the agent is stopping", FetchFailed)
        retriever = TargetRetriever(
            self._ctx.downloads,
            self._fetchers,
            lambda phase, via, done, total: self._progress(entry, phase, via, done, total),
            dirs,
            transfer,
            self._pace,
        )
        try:
            try:
                staged, model = stage(
                    self._ctx, entry, release, active, retriever, verified.signers
                )
                return self._activation.activate(staged, release, model)
            except OSError as e:
                if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                raise DiskFull(f"no space left to install the model: {e.strerror}") from e
        except Rejected as e:
            retriever.discard(release)
            return self._reject(entry, e)
        except Superseded as e:
            retriever.discard(release)
            return self._stop(entry, verified, e)
        except Unavailable as e:
            outcome = self._stop(entry, verified, e)
            self._retries.schedule(data, dirs)
            return outcome
        finally:
            self._transfer = None

    def _stop(
        self, entry: JournalEntry, verified: VerifiedUpdate, error: Unavailable
    ) -> UpdateOutcome:
        """The attempt ends without a verdict on the release: reported, journal back to idle."""
        log.warning("update %s@%s stopped: %s: %s", entry.model, entry.version, error.reason, error)
        self._ctx.steps.advance(entry, UpdatePhase.IDLE, error.reason, str(error))
        return UpdateOutcome.of_verified(
            UpdatePhase.IDLE, verified, reason=error.reason, detail=str(error)
        )

    def _reject(self, entry: JournalEntry, error: Rejected) -> UpdateOutcome:
        log.warning(
            "update %s@%s rejected: %s: %s", entry.model, entry.version, error.reason, error
        )
        store = self._ctx.store
        condemns_bytes = isinstance(error, (InvalidModel, IOSignatureMismatch))
        if condemns_bytes and entry.sha256 not in (store.link(ACTIVE), store.link(PREVIOUS)):
            store.remove(entry.sha256)
        entry = self._ctx.steps.advance(entry, UpdatePhase.REJECTED, error.reason, str(error))
        return UpdateOutcome.of_entry(entry)

    def _progress(
        self, entry: JournalEntry, step: UpdatePhase, via: Via, done: int, total: int
    ) -> None:
        journal = self._ctx.journal
        if step == UpdatePhase.VERIFYING:
            if journal.get(entry.id).phase != UpdatePhase.VERIFYING:
                self._ctx.steps.advance(entry, step, via=via, done=done, total=total)
            return
        now = self._ctx.clock()
        if done < total and now - self._last_progress < PROGRESS_EVERY_S:
            return
        self._last_progress = now
        current = journal.get(entry.id)
        if current.phase != UpdatePhase.DOWNLOADING or current.via != via:
            self._ctx.steps.advance(entry, step, via=via, done=done, total=total)
        else:
            self._ctx.steps.report(step, current, done=done, total=total)
        crashpoint("download.progress")
