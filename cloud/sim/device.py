"""One simulated device: the agent's contract without a camera or a model runtime.

It reports retained state (with the version of the root it verifies with), sends telemetry at
its interval, walks the fleet's retained root chain (`trust/root`) the way the agent does (from
the root it trusts, by `shared.root.walk_chain`; a refused chain keeps the root; a newer root is
adopted, said at once in a fresh retained state, and the last deployment is taken again under
it), and takes deployments the way the agent's updater does, with the same shared code and the
same reports on `devices/{id}/update`:

    verify the deployment (shared.verify: signatures and threshold, device, expiry, profile,
    model name, declared sizes, version)                       -> rejected <reason> | no-op
    downloading (bytes_done, bytes_total)  the delta from the installed model when the
                                           release has one, else the full artifact (real HTTP)
    verifying                              size, sha256, decompress or delta-apply, sha256
    staged -> activating -> probation      a short simulated probation
    committed | rolled_back probation_failed

Faults (chosen per device by the fleet): fail probation; lose the link halfway through a
download, stay away for a while, come back and resume the download with a Range request;
restart (the connection dropped without DISCONNECT, then the persistent session resumed).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cloud.config import MqttConfig
from cloud.sim.link import DeviceLink
from cloud.sim.network import Reactor
from cloud.sim.trust import RootChains, Trust
from cloud.sim.update import Downloads, ModelCache, check_bytes, rebuild_delta, rebuild_full
from shared.documents import Release
from shared.errors import FetchFailed, Rejected, Unavailable
from shared.messages import (
    DeviceState,
    ModelIdentity,
    TelemetryRecord,
    UpdatePhase,
    UpdateStatus,
    encode_message,
)
from shared.root import check_fresh
from shared.topics import Channel
from shared.verify import verify_deployment

__all__ = ["DeviceEnv", "DeviceFaults", "SimDevice"]

log = logging.getLogger(__name__)

AGENT_VERSION = "sim"
PROGRESS_EVERY_S = 1.0
FETCH_ATTEMPTS = 4  # then `idle` with fetch_failed, and a retry later (as the agent does)
RETRY_S = 10.0


@dataclass
class DeviceEnv:
    """What every device of a fleet shares: settings, keys, the event loop's helpers."""

    mqtt: MqttConfig
    reactor: Reactor
    downloads: Downloads
    cache: ModelCache
    trust: Trust  # what every device trusts at start (as an agent's `[trust]` config)
    chains: RootChains  # root chain verdicts, shared by every device
    profile: str
    model_name: str
    max_model_bytes: int
    initial: ModelIdentity | None
    telemetry_interval_s: float
    probation_s: float
    offline_s: float
    session_expiry_s: int
    outbox_max: int
    keepalive_s: int
    outcomes: Counter[str] = field(default_factory=Counter)  # fleet-wide, for the summary


@dataclass(frozen=True)
class DeviceFaults:
    fail_probation: bool = False
    offline_mid_download: bool = False
    restart_after_s: float | None = None  # drop the connection once, this long after start


@dataclass(frozen=True)
class _Attempt:
    rollout_id: str
    model: str
    version: int
    sha256: str


class SimDevice:
    def __init__(self, device_id: str, env: DeviceEnv, faults: DeviceFaults) -> None:
        self.device_id = device_id
        self.env = env
        self.faults = faults
        self.model = env.initial
        self.phase: str = UpdatePhase.IDLE
        self.trust = env.trust  # this device's own trusted root; moves on by walking chains
        self.started = time.monotonic()
        self.link = DeviceLink(
            device_id,
            env.mqtt,
            env.reactor,
            session_expiry_s=env.session_expiry_s,
            outbox_max=env.outbox_max,
            keepalive_s=env.keepalive_s,
            state_payload=self._state,
            on_desired=self._desired,
            on_root=self._root_chain,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._running: bytes | None = None  # the deployment being worked on
        self._next: bytes | None = None  # the newest one that arrived meanwhile
        self._last: bytes = b""  # the last deployment taken, taken again under a new root
        # (sha256, version) -> reason: models that failed their probation are not tried again
        self._refused: dict[tuple[str, int], str] = {}
        self._went_offline = False
        self._last_progress = 0.0
        self._frames = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self.link.connect()
        self._tasks.append(asyncio.create_task(self._telemetry()))
        if self.faults.restart_after_s is not None:
            self._tasks.append(asyncio.create_task(self._restart(self.faults.restart_after_s)))

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        self.link.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)

    async def _restart(self, after_s: float) -> None:
        await asyncio.sleep(after_s)
        log.info("%s: restarting (connection dropped, session resumed)", self.device_id)
        self.env.outcomes["restarts"] += 1
        self.link.drop()

    # -- state and telemetry -----------------------------------------------------------------

    def _state(self, online: bool) -> bytes:
        return encode_message(
            DeviceState(
                self.device_id,
                online,
                time.time(),
                AGENT_VERSION,
                self.env.profile,
                self.model,
                self.phase,
                "ok" if online else "",
                10.0 if online else 0.0,
                self.trust.version,
            )
        )

    async def _telemetry(self) -> None:
        interval = self.env.telemetry_interval_s
        await asyncio.sleep(random.uniform(0, interval))  # spread the fleet over the interval
        while True:
            self._frames += round(10 * interval)
            self.link.append(Channel.TELEMETRY, self._record)
            await asyncio.sleep(interval)

    def _record(self, seq: int) -> TelemetryRecord:
        p50 = random.uniform(3.0, 5.0)
        return TelemetryRecord(
            device_id=self.device_id,
            seq=seq,
            ts=time.time(),
            model=self.model,
            frames=self._frames,
            inferences=self._frames,
            fps=random.uniform(9.5, 10.5),
            latency_p50_ms=p50,
            latency_p95_ms=p50 * 1.5,
            latency_p99_ms=p50 * 2,
            outputs=self._outputs(round(10 * self.env.telemetry_interval_s)),
            cpu_percent=random.uniform(10, 40),
            rss_mb=random.uniform(80, 120),
            disk_free_mb=4096.0,
            outbox_depth=self.link.pending,
            outbox_dropped=self.link.dropped,
            source_status="ok",
            uptime_s=time.monotonic() - self.started,
        )

    @staticmethod
    def _outputs(frames: int) -> dict[str, Any]:
        """A classifier's summary, shaped as the agent's postprocessing makes it."""
        first = random.randrange(10)
        return {
            "kind": "classification",
            "count": frames,
            "top": [
                {"label": str(first), "count": frames - frames // 5},
                {"label": str((first + 1) % 10), "count": frames // 5},
            ],
            "mean_confidence": round(random.uniform(0.7, 0.95), 4),
        }

    def _report(
        self,
        phase: str,
        attempt: _Attempt | None,
        *,
        reason: str = "",
        detail: str = "",
        done: int = 0,
        total: int = 0,
        via: str = "",
    ) -> None:
        a = attempt or _Attempt("", "", 0, "")
        self.link.append(
            Channel.UPDATE,
            lambda seq: UpdateStatus(
                device_id=self.device_id,
                seq=seq,
                ts=time.time(),
                rollout_id=a.rollout_id,
                phase=phase,
                model=a.model,
                version=a.version,
                sha256=a.sha256,
                reason=reason,
                detail=detail[:500],
                bytes_done=done,
                bytes_total=total,
                via=via,
            ),
        )

    def _enter(
        self,
        phase: str,
        attempt: _Attempt | None,
        *,
        reason: str = "",
        detail: str = "",
        done: int = 0,
        total: int = 0,
        via: str = "",
    ) -> None:
        self.phase = phase
        self._report(phase, attempt, reason=reason, detail=detail, done=done, total=total, via=via)
        if phase in UpdatePhase.TERMINAL or phase in (
            UpdatePhase.DOWNLOADING,
            UpdatePhase.PROBATION,
        ):
            self.link.publish_state()

    # -- the root of trust -------------------------------------------------------------------

    def _root_chain(self, data: bytes) -> None:
        """Walk a root chain from this device's root: adopt the newest valid root, or keep
        the current one when any root of the chain is refused."""
        if not data:
            return
        verdict = self.env.chains.walk(self.trust, data, datetime.now(UTC))
        if verdict.refused is not None:
            e = verdict.refused
            self.env.outcomes[f"root_refused:{e.reason}"] += 1
            log.warning("%s: root chain refused: %s: %s", self.device_id, e.reason, e)
            return
        if verdict.adopt is None:
            return  # nothing newer than the trusted root (the retained chain after a reconnect)
        log.info("%s: trusted root v%s", self.device_id, verdict.adopt.version)
        self.trust = verdict.adopt
        self.env.outcomes[f"root:v{self.trust.version}"] += 1
        self.link.publish_state()
        if self._last:  # it may have been refused under the old keys, or signed by a revoked one
            if self._running is not None:
                self._next = self._next or self._last
            else:
                self._running = self._last
                self._spawn(self._take(self._last))

    # -- deployments -------------------------------------------------------------------------

    def _desired(self, data: bytes) -> None:
        self._last = data
        if not data:
            return  # a cleared deployment (an aborted rollout)
        if self._running is not None:
            if data != self._running:
                self._next = data
            return  # a redelivery of what is being worked on (a reconnect)
        self._running = data
        self._spawn(self._take(data))

    async def _take(self, data: bytes) -> None:
        try:
            await self._update(data)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: the update failed unexpectedly", self.device_id)
        finally:
            self._running = None
        if self._next is not None:
            data, self._next = self._next, None
            self._desired(data)

    async def _update(self, data: bytes) -> None:
        installed = self.model
        trust = self.trust
        try:
            check_fresh(trust.root, datetime.now(UTC))  # an expired root refuses everything
            verified = verify_deployment(
                data,
                trust.keyring,
                device_id=self.device_id,
                profile=self.env.profile,
                model_name=self.env.model_name,
                installed_version=installed.version if installed else 0,
                installed_sha256=installed.sha256 if installed else None,
                now=datetime.now(UTC),
                max_model_bytes=self.env.max_model_bytes,
            )
        except Rejected as e:  # nothing in a refused document can be trusted, not even its ids
            self.env.outcomes[f"rejected:{e.reason}"] += 1
            self._enter(UpdatePhase.REJECTED, None, reason=e.reason, detail=str(e))
            return
        release = verified.release
        attempt = _Attempt(
            verified.deployment.rollout_id, release.name, release.version, release.target.sha256
        )
        if verified.is_current:
            self._report(UpdatePhase.COMMITTED, attempt, detail="already active")
            return
        refused = self._refused.get((attempt.sha256, attempt.version))
        if refused is not None:
            self._report(
                UpdatePhase.REJECTED, attempt, reason=refused, detail=f"refused earlier ({refused})"
            )
            return
        self._enter(UpdatePhase.DOWNLOADING, attempt, total=release.artifact.size)
        try:
            model, via, delta_error = await self._obtain(attempt, release)
        except Rejected as e:  # the bytes were bad: a mended mirror may serve good ones later
            self.env.outcomes[f"rejected:{e.reason}"] += 1
            self._enter(UpdatePhase.REJECTED, attempt, reason=e.reason, detail=str(e))
            return
        except Unavailable as e:
            self.env.outcomes["fetch_failed"] += 1
            self._enter(UpdatePhase.IDLE, attempt, reason=e.reason, detail=str(e))
            await asyncio.sleep(RETRY_S)
            if self._next is None:
                self._next = data  # the agent retries a failed fetch with backoff
            return
        self.env.cache.put(attempt.sha256, model)
        self._enter(UpdatePhase.STAGED, attempt, detail=delta_error, via=via)
        self._enter(UpdatePhase.ACTIVATING, attempt, via=via)
        self._enter(UpdatePhase.PROBATION, attempt, via=via)
        await asyncio.sleep(self.env.probation_s)
        if self.faults.fail_probation:
            self._refused[(attempt.sha256, attempt.version)] = "probation_failed"
            self.env.outcomes["rolled_back:probation_failed"] += 1
            self._enter(
                UpdatePhase.ROLLED_BACK,
                attempt,
                reason="probation_failed",
                detail="simulated: the error rate passed the release's limit",
                via=via,
            )
            return
        self.model = ModelIdentity(release.name, release.version, release.target.sha256)
        self.env.outcomes["committed"] += 1
        self._enter(UpdatePhase.COMMITTED, attempt, detail="simulated probation passed", via=via)

    async def _obtain(self, attempt: _Attempt, release: Release) -> tuple[bytes, str, str]:
        """The target's verified bytes: the delta from the installed model, else the full
        artifact (after any delta failure, as the agent does)."""
        installed = self.model
        delta = release.delta_for(installed.sha256) if installed else None
        base = self.env.cache.get(installed.sha256) if installed and delta else None
        delta_error = ""
        if delta is not None and base is not None:
            try:
                raw = await self._download(attempt, delta.url, delta.sha256, delta.size, "delta")
                self._report(
                    UpdatePhase.VERIFYING, attempt, done=len(raw), total=len(raw), via="delta"
                )
                return (
                    await self.env.downloads.work(lambda: rebuild_delta(base, raw, release)),
                    "delta",
                    "",
                )
            except (Rejected, Unavailable) as e:
                delta_error = f"delta failed ({e.reason}: {e}); fetching the full artifact"
                log.warning("%s: %s", self.device_id, delta_error)
        art = release.artifact
        raw = await self._download(attempt, art.url, art.sha256, art.size, "full")
        self._enter(UpdatePhase.VERIFYING, attempt, done=art.size, total=art.size, via="full")
        data = await self.env.downloads.work(lambda: rebuild_full(raw, release))
        return data, "full", delta_error

    async def _download(
        self, attempt: _Attempt, url: str, sha256: str, size: int, via: str
    ) -> bytes:
        buf = bytearray()

        def progress(done: int) -> None:
            now = time.monotonic()
            if done >= size or now - self._last_progress >= PROGRESS_EVERY_S:
                self._last_progress = now
                self._report(UpdatePhase.DOWNLOADING, attempt, done=done, total=size, via=via)

        for attempt_no in range(FETCH_ATTEMPTS):
            stop_at = None
            if self.faults.offline_mid_download and not self._went_offline:
                stop_at = max(1, size // 2)
            try:
                await self.env.downloads.fetch(buf, url, size, stop_at=stop_at, progress=progress)
            except FetchFailed as e:
                if attempt_no == FETCH_ATTEMPTS - 1:
                    raise
                log.info("%s: download interrupted (%s); resuming", self.device_id, e)
                await asyncio.sleep(2**attempt_no)
                continue
            if stop_at is not None and len(buf) < size:
                await self._go_offline(len(buf), size)
                continue
            break
        data = bytes(buf)
        await self.env.downloads.work(lambda: check_bytes(data, size, sha256, f"{via} artifact"))
        return data

    async def _go_offline(self, done: int, size: int) -> None:
        self._went_offline = True
        self.env.outcomes["offline_mid_download"] += 1
        log.info(
            "%s: offline at %s of %s bytes for %.1f s",
            self.device_id,
            done,
            size,
            self.env.offline_s,
        )
        self.link.hold_down()
        await asyncio.sleep(self.env.offline_s)
        self.link.come_back()
