"""The agent's updater: verify, fetch, validate, install, swap, watch, commit or roll back.

One public class with a few public methods; everything else is private. The updater is the
only writer of the model store and the update journal. Each step is written to the journal
before it is taken and reported on `devices/{id}/update` through the outbox.

Recovery after a crash (`recover`, at start):

- interrupted while downloading, verifying, staged or activating: the links are put back to
  the model that was active before (activation may have moved them), and the attempt is
  settled as `idle`. The retained deployment (or a second `apply`) starts it again, resuming
  the partial download, or finding the model in the store, where it is re-verified by hash
  and re-validated before use.
- interrupted while loading the new model for validation: the links are put back and the
  attempt is settled as `rejected` (`invalid_model`).
- interrupted while on probation: a power cut is no verdict on a model, so the first time the
  new model stays active and probation starts again once the loop runs (reported as
  `probation` with the detail "probation interrupted, resumed"). A second interruption of the
  same probation is taken as the model's doing (a native crash, memory exhaustion): the links
  are put back and the attempt is `rolled_back` (`crashed`), so a bad model cannot become a
  crash loop. Condemned bytes at that version are not tried again; an operator re-releases
  them under a new version if they were blameless.

Whatever the journal says, `recover` returns a file whose bytes hash to the name it has in
the store: `active`, else `previous`, else the configured initial model.
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
from typing import Any, Protocol

import numpy as np
import sqlite_utils

from agent.config import AgentConfig
from agent.update.admission import admit_deployment, claimed_rollout_id
from agent.update.crash import crashpoint
from agent.update.fetch import Fetcher, Transfer, fetcher_for
from agent.update.handover import UpdateLock, take_requests, write_result
from agent.update.journal import JournalEntry, UpdateJournal
from agent.update.modelstore import ACTIVE, PREVIOUS, ModelStore
from agent.update.outcome import MAX_DETAIL, Outbox, StatusReporter, UpdateOutcome, entry_like
from agent.update.probation import LatencyWindow, Probation, Verdict
from agent.update.retrieval import Pace, Retrieval, TargetRetriever
from agent.update.state import active_identity
from agent.update.trust import TrustStore
from agent.update.validation import check_model
from agent.update.variants import VariantChooser
from shared.documents import Deployment, IOSignature, Release, load_json
from shared.errors import (
    DiskFull,
    FetchFailed,
    InvalidModel,
    IOSignatureMismatch,
    ProbationCrashed,
    ProbationFailed,
    Rejected,
    Superseded,
    Unavailable,
)
from shared.keys import Keyring
from shared.messages import ModelIdentity, UpdatePhase
from shared.verify import VerifiedUpdate

__all__ = ["UpdateOutcome", "Updater"]

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 1.0  # download progress reports at most this often
STALE_DOWNLOAD_S = 24 * 3600  # partial downloads untouched this long are removed
LOCK_WAIT_S = 120.0  # how long `recover` waits for an `apply` running without the daemon
RETRY_MIN_S, RETRY_MAX_S = 10.0, 600.0  # backoff after a failed fetch
VALIDATING = "loading and smoke-testing the model"  # journal detail while the model first runs
RESUMED = "probation interrupted, resumed"


class Loop(Protocol):
    @property
    def model(self) -> Any: ...
    def swap(self, model: Any, timeout: float = 5.0) -> Any: ...
    def recent_inputs(self) -> list[list[np.ndarray]]: ...
    def add_listener(self, fn: Callable[[Any], None]) -> None: ...


def _loader(path: Path, threads: int, delegates: tuple[str, ...]) -> Any:
    from agent.runtime import load_model

    return load_model(path, threads=threads, delegates=delegates)


class Updater:
    def __init__(self, config: AgentConfig, db: sqlite_utils.Database, outbox: Outbox,
                 on_state_change: Callable[[], None], *,
                 fetchers: Callable[[str], Fetcher] | None = None,
                 load_model: Callable[[Path, int, tuple[str, ...]], Any] = _loader,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 lock: UpdateLock | None = None,
                 keyring: Callable[[], Keyring] | None = None) -> None:
        self.config = config
        self._journal = UpdateJournal(db)
        self._store = ModelStore(config.state_dir, config.model.name)
        self._downloads = config.state_dir / "downloads"
        self._status = StatusReporter(config.device_id, outbox)
        self._on_state_change = on_state_change
        timeout = config.update.download_timeout_s
        self._fetchers = fetchers or (lambda url: fetcher_for(url, timeout))
        self._load = load_model
        self._now = now
        # the trusted root's release keys, asked for at each verification (roots rotate them)
        self._keyring = keyring or TrustStore(config.trust, config.state_dir, now).keyring
        self._lock = threading.RLock()
        self._loop: Loop | None = None
        self._latency = LatencyWindow()
        self._probation: Probation | None = None
        self._previous_model: Any = None
        self._pending: tuple[bytes, tuple[Path, ...]] | None = None
        self._retry: tuple[bytes, tuple[Path, ...], float, float] | None = None
        self._io: dict[str, IOSignature] = {}
        self._last_progress = 0.0
        self._update_lock = lock or UpdateLock(config.state_dir)
        self._pace = Pace(config.update.min_download_rate, config.update.download_grace_s)
        self._transfer: tuple[str, Transfer] | None = None  # (deployment digest, its download)
        self._resume: JournalEntry | None = None  # an interrupted probation, resumed on attach
        self._stopping = False
        # told each verified release before its model is activated (its reference profile)
        self.on_release: Callable[[Release], None] | None = None
        # shadow frames the new and the previous model disagree on, during probation
        self.on_disagreement: Callable[[str, list[np.ndarray], int | None, int | None],
                                       None] | None = None
        self.variants = VariantChooser(config, self._downloads, self._fetchers, self._pace,
                                       self._load)

    # public -----------------------------------------------------------------------------

    def recover(self) -> Path:
        """Settle the journal after whatever stopped the last run; return the file to serve.

        Takes the update lock first (waiting for an `apply` that runs without the daemon).
        """
        if not self._update_lock.acquire(timeout=LOCK_WAIT_S):
            raise Unavailable(f"another process holds {self._update_lock.path}")
        with self._lock:
            entry = self._journal.in_progress()
            if entry is not None:
                self._settle_interrupted(entry)
            path = self._serve_path()
            self._housekeeping()
            return path

    def active(self) -> ModelIdentity:
        return active_identity(self.config, self._store, self._journal)

    def phase(self) -> str:
        return self._journal.phase()

    def attach(self, loop: Loop) -> None:
        """Enable hot swap and probation: the daemon calls this once the loop runs."""
        self._loop = loop
        loop.add_listener(self._observe)
        with self._lock:
            if self._resume is not None:
                self._resume_probation(self._resume)
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
                data, self._keyring(), device_id=self.config.device_id,
                profile=self.config.profile.name, model_name=self.config.model.name,
                installed_version=0, installed_sha256=None, now=self._now(),
                max_model_bytes=self.config.update.max_model_bytes, expected_io=None)
        except Rejected as e:
            log.info("a deployment that does not verify (%s) does not stop the running "
                     "download", e.reason)
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
        """Run the whole pipeline for one deployment document (from a worker thread)."""
        with self._lock:
            if self._probation is not None:
                return self._defer(data, tuple(artifact_dirs))
            self._retry = None
            return self._run(data, tuple(artifact_dirs))

    def tick(self) -> None:
        """Periodic: probation verdicts, deferred and retried deployments, housekeeping."""
        if not self._lock.acquire(blocking=False):
            return  # an update is running; the next tick will look again
        try:
            if self._probation is not None:
                verdict = self._probation.decide()
                if verdict is not None:
                    self._settle_probation(verdict)
                return
            if self._pending is not None:
                data, dirs = self._pending
                self._pending = None
                self._run(data, dirs)
                return
            for request in take_requests(self.config.state_dir):
                outcome = self._run(request.deployment, request.artifact_dirs)
                write_result(self.config.state_dir, request.id, outcome.to_dict())
            if self._retry is not None and time.monotonic() >= self._retry[2]:
                data, dirs, _, delay = self._retry
                self._retry = None
                outcome = self._run(data, dirs)
                if self._retry is not None:  # failed again (fetch, deadline, full disk)
                    delay = min(delay * 2, RETRY_MAX_S)  # doubling, capped
                    self._retry = (data, dirs, time.monotonic() + delay, delay)
        finally:
            self._lock.release()

    def rollback(self) -> bool:
        """The operator's `rollback` command: end a running probation as failed, so the previous
        model serves again. A committed model stays (an older model comes back as a new
        release); returns whether anything was rolled back."""
        if self._probation is None:  # never waits behind a download: none runs on probation
            log.info("rollback requested, but no update is on probation; nothing to do")
            return False
        with self._lock:
            if self._probation is None:
                log.info("rollback requested, but no update is on probation; nothing to do")
                return False
            self._settle_probation(Verdict(False, "rollback requested by the operator"))
            return True

    def probation_active(self) -> bool:
        return self._probation is not None

    def close(self) -> None:
        with self._lock:
            if self._probation is not None:
                self._probation.stop()
            self._journal.close()
            self._update_lock.release()

    # the pipeline -------------------------------------------------------------------------

    def _defer(self, data: bytes, dirs: tuple[Path, ...]) -> UpdateOutcome:
        admitted = self._admit(data)
        if isinstance(admitted, UpdateOutcome):
            return admitted
        _, verified = admitted
        release = verified.release
        if verified.is_current:
            return UpdateOutcome.of_verified(UpdatePhase.PROBATION, verified, no_op=True,
                                             detail="already on probation")
        self._pending = (data, dirs)
        log.info("deployment of %s@%s waits for the running probation", release.name,
                 release.version)
        return UpdateOutcome.of_verified(UpdatePhase.IDLE, verified,
                                         detail="queued behind a probation")

    def _admit(self, data: bytes) -> tuple[ModelIdentity, VerifiedUpdate] | UpdateOutcome:
        """Verify `data` against the model serving now: (active, verified), or the refusal."""
        active = self.active()
        expected_io = self._active_io(active.sha256)
        try:
            return active, admit_deployment(
                data, self._keyring(), device_id=self.config.device_id,
                profile=self.config.profile.name, model_name=self.config.model.name,
                installed_version=active.version, installed_sha256=active.sha256,
                now=self._now(), max_model_bytes=self.config.update.max_model_bytes,
                expected_io=expected_io)
        except Rejected as e:
            return self._refuse(e, claimed_rollout_id(data))

    def _refuse(self, error: Rejected, rollout_id: str) -> UpdateOutcome:
        """A document that failed verification: nothing in it is trusted but the rollout id
        it claims, reported so the refusal counts in that rollout (for this device only)."""
        log.warning("deployment rejected: %s: %s", error.reason, error)
        entry = self._journal.begin(rollout_id=rollout_id, model="", version=0, sha256="",
                                    phase=UpdatePhase.REJECTED, reason=error.reason,
                                    detail=str(error)[:MAX_DETAIL])
        self._status.report(UpdatePhase.REJECTED, entry, reason=error.reason, detail=str(error))
        self._on_state_change()
        return UpdateOutcome(UpdatePhase.REJECTED, error.reason, str(error), rollout_id)

    def _run(self, data: bytes, dirs: tuple[Path, ...]) -> UpdateOutcome:
        admitted = self._admit(data)
        if isinstance(admitted, UpdateOutcome):
            return admitted
        active, verified = admitted
        release = verified.release
        if verified.is_current:
            log.info("%s@%s is already active", release.name, release.version)
            self._status.report(UpdatePhase.COMMITTED, entry_like(verified),
                                detail="already active")
            return UpdateOutcome.of_verified(UpdatePhase.COMMITTED, verified, no_op=True,
                                             detail="already active")
        release = self.variants.choose(release, dirs, self._loop)  # the fastest variant here
        condemned = self._journal.condemned(release.target.sha256, release.version)
        if condemned is not None:
            detail = f"refused earlier ({condemned.reason}): {condemned.detail}"
            self._status.report(UpdatePhase.REJECTED, entry_like(verified),
                                reason=condemned.reason, detail=detail)
            return UpdateOutcome.of_verified(UpdatePhase.REJECTED, verified,
                                             reason=condemned.reason, detail=detail)
        entry = self._journal.begin(
            rollout_id=verified.deployment.rollout_id, model=release.name,
            version=release.version, sha256=release.target.sha256,
            phase=UpdatePhase.DOWNLOADING, from_sha256=active.sha256,
            prev_sha256=self._store.link(PREVIOUS) or "",
            deployment=data.decode("utf-8"),
        )
        self._status.report(UpdatePhase.DOWNLOADING, entry, total=release.artifact.size)
        self._on_state_change()
        crashpoint("journal.downloading")
        transfer = Transfer()
        self._transfer = (hashlib.sha256(data).hexdigest(), transfer)
        if self._stopping:
            transfer.cancel("the agent is stopping", FetchFailed)
        retriever = TargetRetriever(self._downloads, self._fetchers,
                                    lambda phase, via, done, total: self._progress(
                                        entry, phase, via, done, total), dirs, transfer,
                                    self._pace)
        try:
            try:
                return self._install(entry, release, active, retriever)
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
            self._retry = (data, dirs, time.monotonic() + RETRY_MIN_S, RETRY_MIN_S)
            return outcome
        finally:
            self._transfer = None

    def _stop(self, entry: JournalEntry, verified: VerifiedUpdate, error: Unavailable
              ) -> UpdateOutcome:
        """The attempt ends without a verdict on the release: reported, journal back to idle."""
        log.warning("update %s@%s stopped: %s: %s", entry.model, entry.version, error.reason,
                    error)
        self._journal.update(entry.id, phase=UpdatePhase.IDLE, reason=error.reason,
                             detail=str(error)[:MAX_DETAIL])
        self._status.report(UpdatePhase.IDLE, entry, reason=error.reason, detail=str(error))
        self._on_state_change()
        return UpdateOutcome.of_verified(UpdatePhase.IDLE, verified, reason=error.reason,
                                         detail=str(error))

    def _install(self, entry: JournalEntry, release: Release, active: ModelIdentity,
                 retriever: TargetRetriever) -> UpdateOutcome:
        target = release.target
        if self._store.verified_path(target.sha256) is not None:
            retrieval = Retrieval(b"", "local")
        else:
            base_path = self._store.verified_path(active.sha256)
            base = (active.sha256, base_path) if base_path is not None else None
            retrieval = retriever.obtain(release, base)
            crashpoint("retrieval.done")
            self._store.install(retrieval.data, target.sha256)
            retriever.discard(release)
        entry = self._journal.update(entry.id, via=retrieval.via)
        path = self._store.path_of(target.sha256)
        entry = self._journal.update(entry.id, detail=VALIDATING)
        model = self._validate(path, release)
        entry = self._journal.update(entry.id, phase=UpdatePhase.STAGED, detail="")
        self._journal.remember_model(target.sha256, release.name, release.version)
        if self.on_release is not None:
            self.on_release(release)
        self._status.report(UpdatePhase.STAGED, entry, detail=retrieval.delta_error,
                            via=retrieval.via)
        crashpoint("journal.staged")
        return self._activate(entry, release, model)

    def _validate(self, path: Path, release: Release) -> Any:
        """Load and smoke-test off the hot path; the model must fit the release and the app."""
        runtime = self.config.profile.runtime
        model = self._load(path, runtime.threads, runtime.delegates)
        try:
            recent = self._loop.recent_inputs() if self._loop is not None else []
            check_model(model, release, self._active_io(self.active().sha256), recent)
        except BaseException:
            model.close()
            raise
        return model

    def _activate(self, entry: JournalEntry, release: Release, model: Any) -> UpdateOutcome:
        entry = self._journal.update(entry.id, phase=UpdatePhase.ACTIVATING)
        self._status.report(UpdatePhase.ACTIVATING, entry)
        crashpoint("journal.activating")
        self._store.activate(entry.sha256)
        if self._loop is None:
            model.close()
            detail = "installed with no inference loop running: committed without probation"
            entry = self._journal.update(entry.id, phase=UpdatePhase.COMMITTED, detail=detail)
            crashpoint("journal.committed")
            self._status.report(UpdatePhase.COMMITTED, entry, detail=detail)
            self._on_state_change()
            self._housekeeping()
            return UpdateOutcome.of_entry(entry)
        baseline = self._latency.p95(entry.from_sha256)
        try:
            old = self._loop.swap(model)
        except Exception as e:
            model.close()
            self._store.restore(entry.from_sha256, entry.prev_sha256 or None)
            if isinstance(e, Rejected):
                raise
            raise InvalidModel(f"the loop could not swap in the new model: {e}") from e
        crashpoint("loop.swapped")
        self._previous_model = old
        self._probation = Probation(entry.sha256, release.probation, baseline, old)
        self._probation.on_disagreement = self.on_disagreement
        entry = self._journal.update(entry.id, phase=UpdatePhase.PROBATION,
                                     probation_started=time.time())
        self._status.report(UpdatePhase.PROBATION, entry)
        self._on_state_change()
        crashpoint("journal.probation")
        return UpdateOutcome.of_entry(entry)

    def _settle_probation(self, verdict: Verdict) -> None:
        crashpoint("probation.verdict")
        probation = self._probation
        entry = self._journal.in_progress()
        assert probation is not None
        probation.stop()
        self._probation = None
        old, self._previous_model = self._previous_model, None
        if entry is None:  # the journal was settled elsewhere: nothing to decide
            return
        if verdict.passed:
            if old is not None:
                old.close()
            entry = self._journal.update(entry.id, phase=UpdatePhase.COMMITTED,
                                         detail=verdict.detail[:MAX_DETAIL])
            crashpoint("journal.committed")
            self._status.report(UpdatePhase.COMMITTED, entry, detail=verdict.detail)
            log.info("committed %s@%s: %s", entry.model, entry.version, verdict.detail)
        else:
            self._roll_back(entry, old, ProbationFailed(verdict.detail))
        self._on_state_change()
        self._housekeeping()

    def _roll_back(self, entry: JournalEntry, old: Any, error: Rejected) -> None:
        log.warning("rolling back %s@%s: %s", entry.model, entry.version, error)
        # the verdict first: a crash from here on finishes the rollback, never resumes probation
        entry = self._journal.update(entry.id, reason=error.reason, detail=str(error)[:MAX_DETAIL])
        if self._loop is not None and old is None and self._loop.model.sha256 == entry.sha256:
            path = self._store.verified_path(entry.from_sha256)
            if path is not None:
                runtime = self.config.profile.runtime
                old = self._load(path, runtime.threads, runtime.delegates)
        if self._loop is not None and old is not None:
            new = self._loop.swap(old)
            new.close()
        crashpoint("rollback.swapped")
        self._store.restore(entry.from_sha256, entry.prev_sha256 or None)
        entry = self._journal.update(entry.id, phase=UpdatePhase.ROLLED_BACK,
                                     reason=error.reason, detail=str(error)[:MAX_DETAIL])
        crashpoint("journal.rolled_back")
        self._status.report(UpdatePhase.ROLLED_BACK, entry, reason=error.reason, detail=str(error))

    def _reject(self, entry: JournalEntry, error: Rejected) -> UpdateOutcome:
        log.warning("update %s@%s rejected: %s: %s", entry.model, entry.version, error.reason,
                    error)
        if isinstance(error, (InvalidModel, IOSignatureMismatch)):
            linked = (self._store.link(ACTIVE), self._store.link(PREVIOUS))
            if entry.sha256 not in linked:
                self._store.remove(entry.sha256)
        entry = self._journal.update(entry.id, phase=UpdatePhase.REJECTED, reason=error.reason,
                                     detail=str(error)[:MAX_DETAIL])
        self._status.report(UpdatePhase.REJECTED, entry, reason=error.reason, detail=str(error))
        self._on_state_change()
        return UpdateOutcome.of_entry(entry)

    # recovery ---------------------------------------------------------------------------

    def _settle_interrupted(self, entry: JournalEntry) -> None:
        was = entry.phase
        if (was == UpdatePhase.PROBATION and entry.interruptions == 0 and not entry.reason
                and self._store.link(ACTIVE) == entry.sha256
                and self._store.verified_path(entry.sha256) is not None):
            entry = self._journal.update(entry.id, interruptions=1, detail=RESUMED)
            self._status.report(UpdatePhase.PROBATION, entry, detail=RESUMED)
            log.warning("the agent stopped while %s@%s was on probation: resuming it",
                        entry.model, entry.version)
            self._resume = entry
            return
        if self._store.link(ACTIVE) != entry.from_sha256 and self._store.has(entry.from_sha256):
            self._store.restore(entry.from_sha256, entry.prev_sha256 or None)
        error: Rejected | None = None
        if was == UpdatePhase.PROBATION and entry.reason:  # a verdict, cut short: finish it
            error = ProbationFailed(entry.detail)
            phase = UpdatePhase.ROLLED_BACK
        elif was == UpdatePhase.PROBATION:
            error = ProbationCrashed(f"the agent stopped twice while {entry.model}@"
                                     f"{entry.version} was on probation: rolled back")
            phase = UpdatePhase.ROLLED_BACK
        elif entry.detail == VALIDATING:
            error = InvalidModel("the agent stopped while loading and smoke-testing this model")
            phase = UpdatePhase.REJECTED
        if error is not None:
            entry = self._journal.update(entry.id, phase=phase, reason=error.reason,
                                         detail=str(error))
            self._status.report(phase, entry, reason=error.reason, detail=str(error))
            return
        if was == UpdatePhase.STAGED and self._store.verified_path(entry.sha256) is None:
            log.warning("staged model %s failed re-verification", entry.sha256[:12])
        detail = f"interrupted while {was}; the next delivery of the deployment resumes it"
        entry = self._journal.update(entry.id, phase=UpdatePhase.IDLE, detail=detail)
        self._status.report(UpdatePhase.IDLE, entry, detail=detail)

    def _resume_probation(self, entry: JournalEntry) -> None:
        """Start the probation again on the model the loop serves (after one interruption)."""
        assert self._loop is not None
        try:
            envelope = load_json(entry.deployment.encode("utf-8"))
            deployment = Deployment.parse_signed(envelope["signed"])
            release = Release.parse_signed(deployment.release["signed"], "release.signed")
        except (Rejected, KeyError, TypeError) as e:  # verified when stored: not expected
            self._roll_back(entry, None, ProbationFailed(f"cannot resume probation: {e}"))
            self._on_state_change()
            return
        old = None
        path = self._store.verified_path(entry.from_sha256)
        if path is not None:
            runtime = self.config.profile.runtime
            try:
                old = self._load(path, runtime.threads, runtime.delegates)
            except Rejected as e:
                log.warning("the previous model does not load (%s); no shadow checks", e)
        self._previous_model = old
        self._probation = Probation(entry.sha256, release.probation, None, old)
        self._probation.on_disagreement = self.on_disagreement
        self._journal.update(entry.id, probation_started=time.time())
        crashpoint("probation.resumed")
        self._on_state_change()

    def _serve_path(self) -> Path:
        for which in (ACTIVE, PREVIOUS):
            sha = self._store.link(which)
            if sha is None:
                continue
            if which == ACTIVE and not self._journal.model_version(sha):
                return self._initial_path(sha)  # no OTA version installed: the config decides
            path = self._store.verified_path(sha)
            if path is None:
                log.error("the %s model %s is missing or corrupt", which, sha[:12])
                continue
            if which == PREVIOUS:
                log.warning("serving the previous model %s", sha[:12])
                self._store.restore(sha, None)
            return path
        return self._initial_path(None)

    def _initial_path(self, active: str | None) -> Path:
        """`[model] initial`, linked as active once it loads (InvalidModel when it does not).

        While no OTA version is installed, a changed `initial` replaces the active initial model.
        """
        initial = self.config.model.initial
        try:
            data = initial.read_bytes()
        except OSError as e:
            raise InvalidModel(f"cannot read {initial}: {e.strerror}") from e
        sha = hashlib.sha256(data).hexdigest()
        if sha == active and (path := self._store.verified_path(sha)) is not None:
            return path
        runtime = self.config.profile.runtime
        self._load(initial, runtime.threads, runtime.delegates).close()  # never link a dud
        path = self._store.install(data, sha)
        if self._journal.model_version(sha) is None:
            self._journal.remember_model(sha, self.config.model.name, 0)
        if active is not None:
            log.info("[model] initial changed (%s, was %s) and no OTA version is installed: "
                     "serving the new one", sha[:12], active[:12])
        self._store.set_link(ACTIVE, sha)
        return path

    # helpers ----------------------------------------------------------------------------

    def _active_io(self, sha256: str) -> IOSignature | None:
        if self._loop is not None:
            current = self._loop.model
            if current.sha256 == sha256:
                signature: IOSignature = current.signature
                return signature
        if sha256 not in self._io:
            path = self._store.verified_path(sha256)
            if path is None:
                return None
            runtime = self.config.profile.runtime
            model = self._load(path, runtime.threads, runtime.delegates)
            self._io[sha256] = model.signature
            model.close()
        return self._io[sha256]

    def _observe(self, result: Any) -> None:
        """Loop listener, on the inference thread: two appends, no I/O."""
        if result.ok:
            self._latency.add(result.model_sha256, result.latency_ms)
        probation = self._probation
        if probation is not None:
            probation.observe(result)

    def _progress(self, entry: JournalEntry, phase: str, via: str, done: int, total: int) -> None:
        if phase == UpdatePhase.VERIFYING:
            if self._journal.get(entry.id).phase != UpdatePhase.VERIFYING:
                self._journal.update(entry.id, phase=UpdatePhase.VERIFYING, via=via)
                self._status.report(UpdatePhase.VERIFYING, entry, done=done, total=total, via=via)
                self._on_state_change()
                crashpoint("journal.verifying")
            return
        now = time.monotonic()
        if done < total and now - self._last_progress < PROGRESS_EVERY_S:
            return
        self._last_progress = now
        if self._journal.get(entry.id).phase != UpdatePhase.DOWNLOADING:
            self._journal.update(entry.id, phase=UpdatePhase.DOWNLOADING, via=via)
        self._status.report(UpdatePhase.DOWNLOADING, entry, done=done, total=total, via=via)
        crashpoint("download.progress")

    def _housekeeping(self) -> None:
        protect = tuple(e.sha256 for e in (self._journal.in_progress(),) if e is not None)
        try:
            self._store.prune(self.config.update.keep_models, protect)
        except OSError as e:
            log.warning("model housekeeping failed: %s", e)
        cutoff = time.time() - STALE_DOWNLOAD_S
        if self._downloads.is_dir():
            for part in self._downloads.glob("*.part"):
                try:
                    if part.stat().st_mtime < cutoff:
                        log.info("removing stale partial download %s", part.name)
                        part.unlink()
                except OSError:
                    continue
