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
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from apscheduler.schedulers.background import BackgroundScheduler
from sqlite_utils import Database

from cloud.artifacts import open_artifact_store
from cloud.artifacts.files import UPLOAD_KEY_FILE
from cloud.artifacts.http import ArtifactServer
from cloud.artifacts.upload import UploadSigner
from cloud.config import CloudConfig, CloudRole
from cloud.health import HealthEndpoints
from cloud.ingest import Ingester
from cloud.mqtt import CloudLink
from cloud.rollout import tick_rollouts
from cloud.samples.grants import SampleGrants
from cloud.store import open_store
from shared.errors import Unavailable
from shared.keys import KeyFileError, load_signing_key
from shared.topics import Channel, topic

if TYPE_CHECKING:
    from cloud.web import WebServer

__all__ = ["EXIT_WORKER_DIED", "CloudService", "mark_offline"]

log = logging.getLogger(__name__)
EXIT_WORKER_DIED = 70  # EX_SOFTWARE: a worker thread died; a restart gets a whole process back


def _thread_alive(owner: object) -> bool:
    """Whether the thread a paho client or an APScheduler scheduler started runs (both keep it
    in `_thread`; True when this version keeps it elsewhere)."""
    thread = getattr(owner, "_thread", None)
    return not isinstance(thread, threading.Thread) or thread.is_alive()


def mark_offline(db: Database, now: float, offline_after_s: float) -> int:
    """Devices silent for `offline_after_s` are marked offline; returns how many changed."""
    with db.conn:
        cur = db.conn.execute(
            "UPDATE devices SET online = 0 WHERE online = 1 AND last_seen < ?",
            (now - offline_after_s,))
    if cur.rowcount:
        log.info("%s device(s) went silent for %s s: marked offline", cur.rowcount,
                 offline_after_s)
    return int(cur.rowcount)


class CloudService:
    def __init__(self, config: CloudConfig, *, http: bool | None = None,
                 web: bool | None = None) -> None:
        self.config = config
        self.stop_event = threading.Event()
        self.failure: str | None = None  # which worker died, and why
        self.ingester = Ingester(config, on_death=self.worker_died)
        self.link = CloudLink(config.mqtt, f"{config.mqtt.client_id}-controller-"
                              f"{secrets.token_hex(3)}", role=CloudRole.CONTROLLER)
        self.scheduler = BackgroundScheduler(timezone="UTC")
        self.http: ArtifactServer | None = None
        serve_http = config.http.enabled if http is None else http
        if serve_http:
            root = None  # artifacts in S3: devices fetch them there
            uploads = None
            if config.store.artifacts.startswith("file://"):
                root = Path(unquote(urlparse(config.store.artifacts).path))
                root.mkdir(parents=True, exist_ok=True)
                uploads = UploadSigner.from_file(config.store.db.parent / UPLOAD_KEY_FILE)
            health = HealthEndpoints(config.store.db, config.ingest.offline_after_s,
                                     self.broker_connected)
            self.http = ArtifactServer(root, config.http.host, config.http.port,
                                       routes=health.routes(), uploads=uploads)
        self.web: WebServer | None = None
        if config.web.enabled if web is None else web:
            from cloud.web import WebServer, create_app  # FastAPI is imported only when served

            self.web = WebServer(create_app(config), config.web.host, config.web.port)
        self.grants: SampleGrants | None = None
        if config.signing.key is not None:  # upload grants are signed commands
            try:
                store = open_artifact_store(config.store, self._public_url())
                self.grants = SampleGrants(config, store, load_signing_key(config.signing.key))
            except KeyFileError as e:
                log.warning("devices' sample uploads get no grants: %s", e)
        self._tick_lock = threading.Lock()
        self._broker_warned = False

    def _public_url(self) -> str:
        h = self.config.http
        host = "127.0.0.1" if h.host in ("0.0.0.0", "::", "") else h.host
        return f"http://{host}:{h.port}/artifacts"

    def broker_connected(self) -> bool:
        return self.link.connected and self.ingester.link.connected

    def check_broker(self) -> None:
        """Warn once while the broker cannot be reached; say so when it is back."""
        cfg = self.config.mqtt
        if not self.broker_connected():
            if not self._broker_warned:
                log.warning("broker %s:%s unreachable: device messages and rollouts wait; "
                            "retrying in the background", cfg.host, cfg.port)
                self._broker_warned = True
        elif self._broker_warned:
            log.info("broker %s:%s reachable again", cfg.host, cfg.port)
            self._broker_warned = False

    def tick(self) -> None:
        """One controller step: offline detection, then every running rollout."""
        if not self._tick_lock.acquire(blocking=False):
            return
        db = open_store(self.config.store.db)
        try:
            self.check_broker()
            now = time.time()
            mark_offline(db, now, self.config.ingest.offline_after_s)
            prefix = self.config.mqtt.topic_prefix

            def publish(device_id: str, payload: bytes) -> None:
                self.link.publish(topic(device_id, Channel.DESIRED, prefix), payload, retain=True)

            if self.link.connected:
                tick_rollouts(db, publish, now, self.config.rollout.device_timeout_s)
        except Unavailable as e:  # the broker went away mid-tick: the next tick retries
            log.warning("controller tick: %s; retrying at the next tick", e)
        except Exception:
            log.exception("controller tick failed")
        finally:
            db.conn.close()
            self._tick_lock.release()

    def start(self) -> None:
        # "Running job ... executed successfully" at every tick is noise at INFO
        if not logging.getLogger().isEnabledFor(logging.DEBUG):
            logging.getLogger("apscheduler").setLevel(logging.WARNING)
        open_store(self.config.store.db).conn.close()
        if self.http is not None:
            self.http.start()
        if self.web is not None:
            self.web.start()
        self.ingester.start(connect_timeout=None)
        self.link.start(timeout=None)
        if self.grants is not None:
            self.grants.start()
        self.scheduler.add_job(self.tick, "interval", seconds=self.config.rollout.tick_s,
                               id="controller", max_instances=1, coalesce=True)
        self.scheduler.start()
        log.info("serving: ingest from %s:%s, controller every %s s", self.config.mqtt.host,
                 self.config.mqtt.port, self.config.rollout.tick_s)

    def worker_died(self, worker: str, error: BaseException | None = None) -> None:
        """A worker thread ended on its own: stop everything, and fail."""
        if self.failure is None:
            self.failure = worker + (f" died: {type(error).__name__}: {error}"
                                     if error is not None else " died")
        self.stop_event.set()

    def _workers(self) -> list[tuple[str, Callable[[], bool]]]:
        workers: list[tuple[str, Callable[[], bool]]] = [
            ("the ingest writer", lambda: self.ingester.writing),
            ("the ingester's MQTT network thread", lambda: _thread_alive(self.ingester.link.client)),
            ("the controller's MQTT network thread", lambda: _thread_alive(self.link.client)),
            ("the controller's scheduler", lambda: _thread_alive(self.scheduler)),
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
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        self.link.stop()
        if self.grants is not None:
            self.grants.stop()
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
