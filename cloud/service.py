"""`litefleet serve`: the composition root of the cloud's long-running side.

config -> store -> ingester (persistent MQTT session) -> rollout controller and offline
detection on an APScheduler tick -> HTTP server (artifacts of a file store, `/healthz`,
`/metrics`, at `[http]`) -> the dashboard (`cloud.web`, at `[web] listen`). One stop event;
SIGTERM and SIGINT set it, and everything stops in reverse order.

What the log says about the broker: one warning when it cannot be reached (checked at each
tick), one line when it is back. APScheduler's own per-run lines are kept out of INFO.

No half-alive process: the ingest writer reports its own death, and every second `run` checks
that the other worker threads (paho's network threads of the ingester and the controller, the
scheduler that runs the controller's ticks, the artifact HTTP server) still run. A tick that
fails is logged and the next one runs: that is not a death. A worker that died sets `failure` (one line: which worker and
why) and the stop event; `run` then stops the rest and returns `EXIT_WORKER_DIED`, so systemd
(`Restart=on-failure`) starts a fresh process.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.exc import SQLAlchemyError

from cloud.artifacts import open_artifact_store
from cloud.artifacts.files import UPLOAD_KEY_FILE
from cloud.artifacts.http import ArtifactServer
from cloud.artifacts.upload import UploadSigner
from cloud.config import CloudConfig, CloudRole
from cloud.controller_lease import ControllerLease
from cloud.health import HealthEndpoints
from cloud.ingest import Ingester
from cloud.mqtt import CloudLink
from cloud.rollout import tick_rollouts
from cloud.roots import current_root
from cloud.samples.grants import SampleGrants
from cloud.store import Store, describe_error, open_store
from cloud.store.devices import mark_offline as _mark_offline
from cloud.store.partitions import make_ahead
from localio.keyfiles import load_signing_key
from shared.errors import Unavailable
from shared.keys import KeyFileError
from shared.root import Root
from shared.topics import Channel, topic

if TYPE_CHECKING:
    from cloud.web import WebServer

__all__ = ["EXIT_WORKER_DIED", "CloudService", "ServeRole", "check_role", "mark_offline"]

log = logging.getLogger(__name__)
PARTITIONS_EVERY_S = 3600  # the coming days' partitions, made ahead (PostgreSQL)
EXIT_WORKER_DIED = 70  # EX_SOFTWARE: a worker thread died; a restart gets a whole process back


def _thread_alive(owner: object) -> bool:
    """Whether the thread a paho client or an APScheduler scheduler started runs (both keep it
    in `_thread`; True when this version keeps it elsewhere)."""
    thread = getattr(owner, "_thread", None)
    return not isinstance(thread, threading.Thread) or thread.is_alive()


def mark_offline(store: Store, now: float, offline_after_s: float) -> int:
    """Devices silent for `offline_after_s` are marked offline; returns how many changed."""
    count = _mark_offline(store, now - offline_after_s)
    if count:
        log.info("%s device(s) went silent for %s s: marked offline", count, offline_after_s)
    return count


def _stored_root(db: Store) -> Root | None:
    """The newest stored root, which every wave is checked against before it is published
    (`cloud.rollout.start_wave`); None before the first rotation, when the root is the
    implicit version 1 of the `[signing] key` that signed the deployments."""
    try:
        return current_root(db, None).root
    except ValueError:
        return None


class ServeRole(StrEnum):
    """What one `serve` process runs (`--role`)."""

    ALL = "all"  # everything, in one process: the only role on SQLite (one writer)
    INGEST = "ingest"  # one of any number of ingesters sharing the device topics
    CONTROLLER = "controller"  # rollout ticks, offline checks, upload grants; one active (lease)
    ARTIFACTS = "artifacts"  # the artifact HTTP server, /healthz and /metrics
    WEB = "web"  # the dashboard and its API ([web] listen)


def check_role(config: CloudConfig, role: ServeRole) -> str | None:
    """Why `role` cannot run on this store, or None."""
    if role != ServeRole.ALL and config.store.backend == "sqlite":
        return (
            f"serve --role {role} needs a PostgreSQL store ([store] url = "
            '"postgresql://..."): on SQLite only --role all runs, as the one writer'
        )
    return None


class CloudService:
    def __init__(
        self,
        config: CloudConfig,
        *,
        http: bool | None = None,
        web: bool | None = None,
        role: ServeRole = ServeRole.ALL,
        worker: str | None = None,
    ) -> None:
        self.config = config
        self.role = role
        self.stop_event = threading.Event()
        self.failure: str | None = None  # which worker died, and why
        runs = {role} if role != ServeRole.ALL else set(ServeRole)
        self.ingester: Ingester | None = None
        if ServeRole.INGEST in runs:
            # a worker's session outlives it: started again under the same --worker name, it
            # gets the messages the broker kept for it
            client_id = (
                f"{config.mqtt.client_id}-ingest-{worker}"
                if role == ServeRole.INGEST and worker
                else None
            )
            self.ingester = Ingester(
                config,
                client_id=client_id,
                on_death=self.worker_died,
                shared=role == ServeRole.INGEST,
            )
        self.link: CloudLink | None = None
        self.lease: ControllerLease | None = None
        self.scheduler: BackgroundScheduler | None = None
        if ServeRole.CONTROLLER in runs:
            self.link = CloudLink(
                config.mqtt,
                f"{config.mqtt.client_id}-controller-{secrets.token_hex(3)}",
                role=CloudRole.CONTROLLER,
            )
            self.lease = ControllerLease(
                config.store, config.rollout.lease_s, on_acquired=self._tick_soon
            )
            self.scheduler = BackgroundScheduler(timezone="UTC")
        self.http: ArtifactServer | None = None
        serve_http = config.http.enabled if http is None else http
        if serve_http and ServeRole.ARTIFACTS in runs:
            root = None  # artifacts in S3: devices fetch them there
            uploads = None
            if config.store.artifacts.startswith("file://"):
                root = Path(unquote(urlparse(config.store.artifacts).path))
                root.mkdir(parents=True, exist_ok=True)
                uploads = UploadSigner.from_file(config.store.db.parent / UPLOAD_KEY_FILE)
            health = HealthEndpoints(
                config.store, config.ingest.offline_after_s, self.broker_connected
            )
            self.http = ArtifactServer(
                root, config.http.host, config.http.port, routes=health.routes(), uploads=uploads
            )
        self.web: WebServer | None = None
        if (config.web.enabled if web is None else web) and ServeRole.WEB in runs:
            from cloud.web import WebServer, create_app  # FastAPI is imported only when served

            self.web = WebServer(create_app(config), config.web.host, config.web.port)
        self.grants: SampleGrants | None = None
        # upload grants are signed commands, answered by the controller role
        if config.signing.key is not None and ServeRole.CONTROLLER in runs:
            try:
                store = open_artifact_store(config.store, self._public_url())
                self.grants = SampleGrants(
                    config, store, load_signing_key(config.signing.key), self._controlling
                )
            except KeyFileError as e:
                log.warning("devices' sample uploads get no grants: %s", e)
        self._tick_lock = threading.Lock()
        self._broker_warned = False

    def _public_url(self) -> str:
        h = self.config.http
        host = "127.0.0.1" if h.host in ("0.0.0.0", "::", "") else h.host
        return f"http://{host}:{h.port}/artifacts"

    def broker_connected(self) -> bool:
        """Whether every broker connection this process has is up (True with none)."""
        links = [x for x in (self.link, self.ingester.link if self.ingester else None) if x]
        return all(x.connected for x in links)

    def _controlling(self) -> bool:
        """Whether this process is the active controller: it holds the lease."""
        return self.lease is not None and self.lease.held

    def _tick_soon(self) -> None:
        """The lease was just taken: tick now rather than at the next interval."""
        threading.Thread(target=self.tick, name="controller-takeover", daemon=True).start()

    def check_broker(self) -> None:
        """Warn once while the broker cannot be reached; say so when it is back."""
        cfg = self.config.mqtt
        if not self.broker_connected():
            if not self._broker_warned:
                log.warning(
                    "broker %s:%s unreachable: device messages and rollouts wait; "
                    "retrying in the background",
                    cfg.host,
                    cfg.port,
                )
                self._broker_warned = True
        elif self._broker_warned:
            log.info("broker %s:%s reachable again", cfg.host, cfg.port)
            self._broker_warned = False

    def tick(self) -> None:
        """One controller step: offline detection, then every running rollout."""
        if self.link is None or self.lease is None or not self.lease.held:
            return  # a standby: the active controller ticks
        if not self._tick_lock.acquire(blocking=False):
            return
        link = self.link
        db = open_store(self.config.store)
        try:
            self.check_broker()
            now = time.time()
            mark_offline(db, now, self.config.ingest.offline_after_s)
            prefix = self.config.mqtt.topic_prefix

            def publish(device_id: str, payload: bytes) -> None:
                link.publish(topic(device_id, Channel.DESIRED, prefix), payload, retain=True)

            if link.connected:
                tick_rollouts(
                    db, publish, now, self.config.rollout.device_timeout_s, _stored_root(db)
                )
        except Unavailable as e:  # the broker went away mid-tick: the next tick retries
            log.warning("controller tick: %s; retrying at the next tick", e)
        except Exception:
            log.exception("controller tick failed")
        finally:
            db.close()
            self._tick_lock.release()

    def make_partitions(self) -> None:
        """The active controller's hourly job: the coming days' partitions (PostgreSQL)."""
        if self.lease is None or not self.lease.held:
            return
        self._make_ahead()

    def _make_ahead(self) -> None:
        with open_store(self.config.store) as db:
            try:
                make_ahead(db)
            except SQLAlchemyError as e:  # a busy table (lock timeout): the next round retries
                log.warning("could not make the coming days' partitions: %s", describe_error(e))

    def start(self) -> None:
        # "Running job ... executed successfully" at every tick is noise at INFO
        if not logging.getLogger().isEnabledFor(logging.DEBUG):
            logging.getLogger("apscheduler").setLevel(logging.WARNING)
        self._make_ahead()  # days made ahead (and the store checked); the controller: hourly
        if self.http is not None:
            self.http.start()
        if self.web is not None:
            self.web.start()
        if self.ingester is not None:
            self.ingester.start(connect_timeout=None)
        if self.link is not None and self.lease is not None and self.scheduler is not None:
            self.link.start(timeout=None)
            self.lease.start()
            self.scheduler.add_job(
                self.tick,
                "interval",
                seconds=self.config.rollout.tick_s,
                id="controller",
                max_instances=1,
                coalesce=True,
            )
            self.scheduler.add_job(
                self.make_partitions,
                "interval",
                seconds=PARTITIONS_EVERY_S,
                id="partitions",
                max_instances=1,
                coalesce=True,
            )
            self.scheduler.start()
        if self.grants is not None:
            self.grants.start()
        log.info(
            "serving (role %s): ingest from %s:%s, controller every %s s",
            self.role,
            self.config.mqtt.host,
            self.config.mqtt.port,
            self.config.rollout.tick_s,
        )

    def worker_died(self, worker: str, error: BaseException | None = None) -> None:
        """A worker thread ended on its own: stop everything, and fail."""
        if self.failure is None:
            self.failure = worker + (
                f" died: {describe_error(error)}" if error is not None else " died"
            )
        self.stop_event.set()

    def _workers(self) -> list[tuple[str, Callable[[], bool]]]:
        workers: list[tuple[str, Callable[[], bool]]] = []
        ingester, link, lease, scheduler = self.ingester, self.link, self.lease, self.scheduler
        if ingester is not None:
            workers += [
                ("the ingest writer", lambda: ingester.writing),
                ("the ingester's MQTT network thread", lambda: _thread_alive(ingester.link.client)),
            ]
        if link is not None and lease is not None and scheduler is not None:
            workers += [
                ("the controller's MQTT network thread", lambda: _thread_alive(link.client)),
                ("the controller's scheduler", lambda: _thread_alive(scheduler)),
                ("the controller's lease", lambda: lease.alive),
            ]
        http = self.http
        if http is not None:
            workers.append(("the artifact HTTP server", lambda: http.serving))
        web = self.web
        if web is not None:
            workers.append(("the dashboard's web server", lambda: web.serving))
        return workers

    def check_workers(self) -> None:
        for name, alive in self._workers():
            if not alive():
                self.worker_died(name)

    def stop(self) -> None:
        self.stop_event.set()
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        if self.lease is not None and self.lease.alive:
            self.lease.stop()
        if self.link is not None:
            self.link.stop()
        if self.grants is not None:
            self.grants.stop()
        if self.ingester is not None:
            self.ingester.stop()
        if self.web is not None:
            self.web.stop()
        if self.http is not None:
            self.http.stop()
        log.info("stopped")

    def run(self) -> int:
        """Start, wait for the stop event (checking the workers), stop; the exit status."""
        self.start()
        try:
            # a timed wait, so SIGTERM/SIGINT handlers on this (main) thread run promptly
            while not self.stop_event.wait(1.0):
                self.check_workers()
        finally:
            self.stop()
        return 0 if self.failure is None else EXIT_WORKER_DIED
