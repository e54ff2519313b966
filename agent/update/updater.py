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
- interrupted while loading the new model for validation, or while it was on probation: the
  links are put back and the attempt is settled as `rejected` (`invalid_model`) or
  `rolled_back` (`probation_failed`). It does not resume: a process that died while the new
  model ran may have died of that model (a native crash, memory exhaustion), and resuming
  would turn one bad model into a crash loop. Those bytes at that version are not tried
  again; an operator re-releases them under a new version if they were blameless.

Whatever the journal says, `recover` returns a file whose bytes hash to the name it has in
the store: `active`, else `previous`, else the configured initial model.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import sqlite_utils

from agent.config import AgentConfig
from agent.update.crash import crashpoint
from agent.update.fetch import Fetcher, fetcher_for
from agent.update.handover import UpdateLock, take_requests, write_result
from agent.update.journal import JournalEntry, UpdateJournal
from agent.update.modelstore import ACTIVE, PREVIOUS, ModelStore
from agent.update.probation import LatencyWindow, Probation, Verdict
from agent.update.retrieval import Retrieval, TargetRetriever
from agent.update.state import active_identity
from shared.documents import IOSignature, Release
from shared.errors import (
    InvalidModel,
    IOSignatureMismatch,
    ProbationFailed,
    Rejected,
    Unavailable,
)
from shared.messages import ModelIdentity, UpdatePhase, UpdateStatus
from shared.topics import Channel
from shared.verify import VerifiedUpdate, describe_io, verify_deployment

__all__ = ["UpdateOutcome", "Updater"]

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 1.0  # download progress reports at most this often
STALE_DOWNLOAD_S = 24 * 3600  # partial downloads untouched this long are removed
LOCK_WAIT_S = 120.0  # how long `recover` waits for an `apply` running without the daemon
RETRY_MIN_S, RETRY_MAX_S = 10.0, 600.0  # backoff after a failed fetch
MAX_DETAIL = 500
VALIDATING = "loading and smoke-testing the model"  # journal detail while the model first runs


class Outbox(Protocol):
    def append(self, channel: Channel, make: Callable[[int], Any]) -> int: ...


class Loop(Protocol):
    @property
    def model(self) -> Any: ...
    def swap(self, model: Any, timeout: float = 5.0) -> Any: ...
    def recent_inputs(self) -> list[list[np.ndarray]]: ...
    def add_listener(self, fn: Callable[[Any], None]) -> None: ...


@dataclass(frozen=True)
class UpdateOutcome:
    """Where `handle_deployment` left an update: active (probation or committed) or not."""

    phase: str
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

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "active": self.active}


def _loader(path: Path, threads: int, delegates: tuple[str, ...]) -> Any:
    from agent.runtime import load_model

    return load_model(path, threads=threads, delegates=delegates)


class Updater:
    def __init__(self, config: AgentConfig, db: sqlite_utils.Database, outbox: Outbox,
                 on_state_change: Callable[[], None], *,
                 fetchers: Callable[[str], Fetcher] | None = None,
                 load_model: Callable[[Path, int, tuple[str, ...]], Any] = _loader,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 lock: UpdateLock | None = None) -> None:
        self.config = config
        self._journal = UpdateJournal(db)
        self._store = ModelStore(config.state_dir, config.model.name)
        self._downloads = config.state_dir / "downloads"
        self._outbox = outbox
        self._on_state_change = on_state_change
        timeout = config.update.download_timeout_s
        self._fetchers = fetchers or (lambda url: fetcher_for(url, timeout))
        self._load = load_model
        self._now = now
        self._keyring = config.trust.keyring()
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
        # told each verified release before its model is activated (its reference profile)
        self.on_release: Callable[[Release], None] | None = None

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
                if outcome.reason == "fetch_failed" and self._retry is not None:
                    delay = min(delay * 2, RETRY_MAX_S)  # doubling, capped
                    self._retry = (data, dirs, time.monotonic() + delay, delay)
        finally:
            self._lock.release()

    def rollback(self) -> bool:
        """The operator's `rollback` command: end a running probation as failed, so the previous
        model serves again. A committed model stays (an older model comes back as a new
        release); returns whether anything was rolled back."""
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
            return self._outcome(UpdatePhase.PROBATION, verified, no_op=True,
                                 detail="already on probation")
        self._pending = (data, dirs)
        log.info("deployment of %s@%s waits for the running probation", release.name,
                 release.version)
        return self._outcome(UpdatePhase.IDLE, verified, detail="queued behind a probation")

    def _admit(self, data: bytes) -> tuple[ModelIdentity, VerifiedUpdate] | UpdateOutcome:
        """Verify `data` against the model serving now: (active, verified), or the refusal."""
        active = self.active()
        try:
            return active, self._verify(data, active)
        except Rejected as e:
            return self._refuse(e)

    def _verify(self, data: bytes, active: ModelIdentity) -> VerifiedUpdate:
        return verify_deployment(
            data,
            self._keyring,
            device_id=self.config.device_id,
            profile=self.config.profile.name,
            model_name=self.config.model.name,
            installed_version=active.version,
            installed_sha256=active.sha256,
            now=self._now(),
            max_model_bytes=self.config.update.max_model_bytes,
            expected_io=self._active_io(active.sha256),
        )

    def _refuse(self, error: Rejected) -> UpdateOutcome:
        """A document that failed verification: nothing about it can be trusted."""
        log.warning("deployment rejected: %s: %s", error.reason, error)
        self._journal.begin(rollout_id="", model="", version=0, sha256="",
                            phase=UpdatePhase.REJECTED, reason=error.reason,
                            detail=str(error)[:MAX_DETAIL])
        self._report(UpdatePhase.REJECTED, None, reason=error.reason, detail=str(error))
        self._on_state_change()
        return UpdateOutcome(UpdatePhase.REJECTED, error.reason, str(error))

    def _run(self, data: bytes, dirs: tuple[Path, ...]) -> UpdateOutcome:
        admitted = self._admit(data)
        if isinstance(admitted, UpdateOutcome):
            return admitted
        active, verified = admitted
        release = verified.release
        if verified.is_current:
            log.info("%s@%s is already active", release.name, release.version)
            self._report(UpdatePhase.COMMITTED, _entry_like(verified), detail="already active")
            return self._outcome(UpdatePhase.COMMITTED, verified, no_op=True,
                                 detail="already active")
        condemned = self._journal.condemned(release.target.sha256, release.version)
        if condemned is not None:
            detail = f"refused earlier ({condemned.reason}): {condemned.detail}"
            self._report(UpdatePhase.REJECTED, _entry_like(verified), reason=condemned.reason,
                         detail=detail)
            return self._outcome(UpdatePhase.REJECTED, verified, reason=condemned.reason,
                                 detail=detail)
        entry = self._journal.begin(
            rollout_id=verified.deployment.rollout_id, model=release.name,
            version=release.version, sha256=release.target.sha256,
            phase=UpdatePhase.DOWNLOADING, from_sha256=active.sha256,
            prev_sha256=self._store.link(PREVIOUS) or "",
            deployment=data.decode("utf-8"),
        )
        self._report(UpdatePhase.DOWNLOADING, entry, total=release.artifact.size)
        self._on_state_change()
        crashpoint("journal.downloading")
        try:
            return self._install(entry, release, active, dirs)
        except Rejected as e:
            return self._reject(entry, e)
        except Unavailable as e:
            log.warning("update %s@%s could not be fetched: %s", release.name, release.version, e)
            self._journal.update(entry.id, phase=UpdatePhase.IDLE, reason=e.reason,
                                 detail=str(e)[:MAX_DETAIL])
            self._report(UpdatePhase.IDLE, entry, reason=e.reason, detail=str(e))
            self._on_state_change()
            self._retry = (data, dirs, time.monotonic() + RETRY_MIN_S, RETRY_MIN_S)
            return self._outcome(UpdatePhase.IDLE, verified, reason=e.reason, detail=str(e))

    def _install(self, entry: JournalEntry, release: Release, active: ModelIdentity,
                 dirs: tuple[Path, ...]) -> UpdateOutcome:
        target = release.target
        retriever = TargetRetriever(self._downloads, self._fetchers,
                                    lambda phase, via, done, total: self._progress(
                                        entry, phase, via, done, total), dirs)
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
        self._report(UpdatePhase.STAGED, entry, detail=retrieval.delta_error, via=retrieval.via)
        crashpoint("journal.staged")
        return self._activate(entry, release, model)

    def _validate(self, path: Path, release: Release) -> Any:
        """Load and smoke-test off the hot path; the model must fit the release and the app."""
        runtime = self.config.profile.runtime
        model = self._load(path, runtime.threads, runtime.delegates)
        try:
            if not model.signature.fits(release.io):
                raise IOSignatureMismatch(
                    f"model has {describe_io(model.signature)}, the release declares "
                    f"{describe_io(release.io)}"
                )
            expected = self._active_io(self.active().sha256)
            if expected is not None and not model.signature.fits(expected):
                raise IOSignatureMismatch(
                    f"model has {describe_io(model.signature)}, the application expects "
                    f"{describe_io(expected)}"
                )
            samples = [model.sample_input()]
            if self._loop is not None:
                samples += self._loop.recent_inputs()
            for inputs in samples:
                try:
                    outputs = model.invoke(inputs)
                except Exception as e:
                    raise InvalidModel(f"smoke test failed: {e}") from e
                for out in outputs:
                    arr = np.asarray(out)
                    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                        raise InvalidModel("smoke test produced NaN or infinite outputs")
        except BaseException:
            model.close()
            raise
        return model

    def _activate(self, entry: JournalEntry, release: Release, model: Any) -> UpdateOutcome:
        entry = self._journal.update(entry.id, phase=UpdatePhase.ACTIVATING)
        self._report(UpdatePhase.ACTIVATING, entry)
        crashpoint("journal.activating")
        self._store.activate(entry.sha256)
        if self._loop is None:
            model.close()
            detail = "installed with no inference loop running: committed without probation"
            entry = self._journal.update(entry.id, phase=UpdatePhase.COMMITTED, detail=detail)
            crashpoint("journal.committed")
            self._report(UpdatePhase.COMMITTED, entry, detail=detail)
            self._on_state_change()
            self._housekeeping()
            return self._entry_outcome(entry)
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
        entry = self._journal.update(entry.id, phase=UpdatePhase.PROBATION,
                                     probation_started=time.time())
        self._report(UpdatePhase.PROBATION, entry)
        self._on_state_change()
        crashpoint("journal.probation")
        return self._entry_outcome(entry)

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
            self._report(UpdatePhase.COMMITTED, entry, detail=verdict.detail)
            log.info("committed %s@%s: %s", entry.model, entry.version, verdict.detail)
        else:
            self._roll_back(entry, old, ProbationFailed(verdict.detail))
        self._on_state_change()
        self._housekeeping()

    def _roll_back(self, entry: JournalEntry, old: Any, error: Rejected) -> None:
        log.warning("rolling back %s@%s: %s", entry.model, entry.version, error)
        if self._loop is not None and old is not None:
            new = self._loop.swap(old)
            new.close()
        crashpoint("rollback.swapped")
        self._store.restore(entry.from_sha256, entry.prev_sha256 or None)
        entry = self._journal.update(entry.id, phase=UpdatePhase.ROLLED_BACK,
                                     reason=error.reason, detail=str(error)[:MAX_DETAIL])
        crashpoint("journal.rolled_back")
        self._report(UpdatePhase.ROLLED_BACK, entry, reason=error.reason, detail=str(error))

    def _reject(self, entry: JournalEntry, error: Rejected) -> UpdateOutcome:
        log.warning("update %s@%s rejected: %s: %s", entry.model, entry.version, error.reason,
                    error)
        if isinstance(error, (InvalidModel, IOSignatureMismatch)):
            linked = (self._store.link(ACTIVE), self._store.link(PREVIOUS))
            if entry.sha256 not in linked:
                self._store.remove(entry.sha256)
        entry = self._journal.update(entry.id, phase=UpdatePhase.REJECTED, reason=error.reason,
                                     detail=str(error)[:MAX_DETAIL])
        self._report(UpdatePhase.REJECTED, entry, reason=error.reason, detail=str(error))
        self._on_state_change()
        return self._entry_outcome(entry)

    # recovery ---------------------------------------------------------------------------

    def _settle_interrupted(self, entry: JournalEntry) -> None:
        was = entry.phase
        if self._store.link(ACTIVE) != entry.from_sha256 and self._store.has(entry.from_sha256):
            self._store.restore(entry.from_sha256, entry.prev_sha256 or None)
        error: Rejected | None = None
        if was == UpdatePhase.PROBATION:
            error = ProbationFailed(f"the agent stopped while {entry.model}@{entry.version} was "
                                    "on probation: rolled back")
            phase = UpdatePhase.ROLLED_BACK
        elif entry.detail == VALIDATING:
            error = InvalidModel("the agent stopped while loading and smoke-testing this model")
            phase = UpdatePhase.REJECTED
        if error is not None:
            entry = self._journal.update(entry.id, phase=phase, reason=error.reason,
                                         detail=str(error))
            self._report(phase, entry, reason=error.reason, detail=str(error))
            return
        if was == UpdatePhase.STAGED and self._store.verified_path(entry.sha256) is None:
            log.warning("staged model %s failed re-verification", entry.sha256[:12])
        detail = f"interrupted while {was}; the next delivery of the deployment resumes it"
        entry = self._journal.update(entry.id, phase=UpdatePhase.IDLE, detail=detail)
        self._report(UpdatePhase.IDLE, entry, detail=detail)

    def _serve_path(self) -> Path:
        for which in (ACTIVE, PREVIOUS):
            sha = self._store.link(which)
            if sha is None:
                continue
            path = self._store.verified_path(sha)
            if path is None:
                log.error("the %s model %s is missing or corrupt", which, sha[:12])
                continue
            if which == PREVIOUS:
                log.warning("serving the previous model %s", sha[:12])
                self._store.restore(sha, None)
            return path
        initial = self.config.model.initial
        data = initial.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        path = self._store.install(data, sha)
        if self._journal.model_version(sha) is None:
            self._journal.remember_model(sha, self.config.model.name, 0)
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
                self._report(UpdatePhase.VERIFYING, entry, done=done, total=total, via=via)
                self._on_state_change()
                crashpoint("journal.verifying")
            return
        now = time.monotonic()
        if done < total and now - self._last_progress < PROGRESS_EVERY_S:
            return
        self._last_progress = now
        if self._journal.get(entry.id).phase != UpdatePhase.DOWNLOADING:
            self._journal.update(entry.id, phase=UpdatePhase.DOWNLOADING, via=via)
        self._report(UpdatePhase.DOWNLOADING, entry, done=done, total=total, via=via)
        crashpoint("download.progress")

    def _report(self, phase: str, entry: JournalEntry | None, *, reason: str = "",
                detail: str = "", done: int = 0, total: int = 0, via: str = "") -> None:
        device = self.config.device_id

        def make(seq: int) -> UpdateStatus:
            return UpdateStatus(
                device_id=device, seq=seq, ts=time.time(),
                rollout_id=entry.rollout_id if entry else "", phase=phase,
                model=entry.model if entry else "", version=entry.version if entry else 0,
                sha256=entry.sha256 if entry else "", reason=reason, detail=detail[:MAX_DETAIL],
                bytes_done=done, bytes_total=total, via=via or (entry.via if entry else ""),
            )

        try:
            self._outbox.append(Channel.UPDATE, make)
        except Exception:
            log.exception("could not record the update status %s", phase)

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

    def _outcome(self, phase: str, verified: VerifiedUpdate, *, reason: str = "",
                 detail: str = "", no_op: bool = False) -> UpdateOutcome:
        release = verified.release
        return UpdateOutcome(phase, reason, detail, verified.deployment.rollout_id, release.name,
                             release.version, release.target.sha256, no_op=no_op)

    def _entry_outcome(self, entry: JournalEntry) -> UpdateOutcome:
        return UpdateOutcome(entry.phase, entry.reason, entry.detail, entry.rollout_id,
                             entry.model, entry.version, entry.sha256, entry.via)


def _entry_like(verified: VerifiedUpdate) -> JournalEntry:
    release = verified.release
    return JournalEntry(0, verified.deployment.rollout_id, release.name, release.version,
                        release.target.sha256, UpdatePhase.IDLE)

