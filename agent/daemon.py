"""The composition root of `litefleet-agent run`.

    config -> logging -> store -> updater.recover() -> load model -> loop -> mqtt -> scheduler

One stop event: SIGTERM and SIGINT set it, and everything winds down in reverse order. The
shutdown flushes the outbox for as long as the broker allows (`[outbox] shutdown_flush_s`)
and leaves `online: false` as the retained state.

Threads: the loop's capture, inference and postprocessing threads; paho's network thread; the
outbox drain; the inbound workers (one runs deployments, one runs commands, so a slow download
never holds up a command); one thread per periodic job (telemetry, state heartbeat, updater
tick, event flush, systemd watchdog; `agent.periodic`); drift, sample capture and sample
upload (`agent.watch`).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

import agent
from agent.config import AgentConfig
from agent.link.client import MqttLink
from agent.link.commands import CommandGate
from agent.link.drain import OutboxDrain
from agent.link.inbound import Inbound
from agent.logs import configure_logging
from agent.loop import InferenceLoop, build_loop
from agent.notify import Notifier
from agent.opencv import OpenCVMissing
from agent.outbox import Outbox
from agent.periodic import PeriodicJobs
from agent.runtime import load_model
from agent.store import open_store
from agent.system_metrics import SystemMetrics
from agent.telemetry import EventRecorder, TelemetryReporter
from agent.update import Updater
from agent.update.trust import TrustStore
from agent.watch import ModelWatch
from shared.errors import InvalidModel
from shared.messages import DeviceState, ModelIdentity, encode_message
from shared.topics import Channel
from shared.vocabulary import CommandName

__all__ = ["Daemon", "run_daemon"]

log = logging.getLogger(__name__)

TICK_S = 1.0  # updater tick (probation verdicts) and event flush
HEARTBEAT_STALE_S = 10.0  # no loop iteration for this long: stop pinging the watchdog
EXIT_MODEL_INVALID = 2


@dataclass
class _Parts:
    db: Any
    outbox: Outbox
    updater: Updater
    loop: InferenceLoop
    link: MqttLink
    drain: OutboxDrain
    inbound: Inbound
    gate: CommandGate
    telemetry: TelemetryReporter
    events: EventRecorder
    scheduler: PeriodicJobs
    watch: ModelWatch


class Daemon:
    def __init__(self, config: AgentConfig, notifier: Notifier | None = None) -> None:
        self.config = config
        self.stop_event = threading.Event()
        self.notifier = notifier or Notifier.from_env()
        self._parts: _Parts | None = None
        self._loop: InferenceLoop | None = None
        # what the retained state says, refreshed by the updater's hand-off (so paho's thread
        # never reads the updater's store)
        self._identity: ModelIdentity | None = None
        self._phase = "idle"
        # the trusted root's version, refreshed when a chain is walked and at each heartbeat
        # (`apply` may have walked one in another process); paho's thread never waits for the
        # trust store's lock, which a walk holds while it writes
        self._trust: TrustStore | None = None
        self._root_version = 0

    # -- signals -----------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        def stop(signum: int, frame: FrameType | None) -> None:
            log.info("received %s; stopping", signal.Signals(signum).name)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    # -- run ---------------------------------------------------------------------------------

    def run(self) -> int:
        cfg = self.config
        db = open_store(cfg.state_dir, cfg.outbox.synchronous)
        outbox = Outbox(db, cfg.outbox)
        trust = self._trust = TrustStore(cfg.trust, cfg.state_dir)
        self._root_version = trust.current().version
        updater = Updater(
            cfg, db, outbox, on_state_change=self._state_changed, keyring=trust.keyring
        )
        try:
            model_path = updater.recover()
        except InvalidModel as e:
            log.error(
                "[model] initial %s does not load (%s); nothing was made active: fix the "
                "config and restart",
                cfg.model.initial,
                e,
            )
            updater.close()
            outbox.close()
            return EXIT_MODEL_INVALID
        try:
            model = load_model(
                model_path, cfg.profile.runtime.threads, cfg.profile.runtime.delegates
            )
        except InvalidModel as e:
            log.error("the model to serve (%s) does not load: %s", model_path, e)
            updater.close()
            outbox.close()
            return EXIT_MODEL_INVALID
        try:
            loop = build_loop(cfg, model, self.stop_event)
        except OpenCVMissing as e:
            log.error("%s", e)
            model.close()
            updater.close()
            outbox.close()
            return EXIT_MODEL_INVALID
        self._loop = loop
        self._identity, self._phase = updater.active(), updater.phase()
        events = EventRecorder(cfg.device_id, outbox, cfg.telemetry.event_queue)
        loop.add_event_listener(events.offer)
        watch = ModelWatch(
            cfg, loop, self.stop_event, self._model_identity, self._publish_capture, events.offer
        )
        updater.on_release = watch.remember_release
        updater.variants.report = lambda detail: events.offer("variant", detail)
        updater.on_disagreement = watch.recorder.disagreement
        watch.start()
        loop.start()
        updater.attach(loop)

        gate = CommandGate(db, trust.keyring, cfg.device_id)
        telemetry = TelemetryReporter(
            cfg.device_id,
            outbox,
            SystemMetrics(cfg.state_dir),
            self._model_identity,
            lambda: loop.snapshot(reset_outputs=True),  # outputs summarised per interval
            drift=watch.summary,
        )
        inbound = Inbound(
            gate,
            updater.handle_deployment,
            handlers=self._command_handlers(updater, telemetry, loop),
            command_handlers={
                CommandName.CAPTURE: watch.capture_command,
                CommandName.UPLOAD: watch.upload_command,
            },
            max_payload_bytes=cfg.mqtt.max_payload_bytes,
            queue_size=cfg.mqtt.inbound_queue,
            supersede=updater.supersede,
            report=events.offer,
            on_refused=updater.refuse,
            on_root=self._walk_root,
        )
        link = MqttLink(cfg.device_id, cfg.mqtt, self._state_payload, inbound.offer)
        drain = OutboxDrain(outbox, link, cfg.outbox.publish_window)
        link.set_window(cfg.outbox.publish_window)
        link.set_handoffs(on_ack=drain.ack, on_connected=drain.wake)
        scheduler = PeriodicJobs()
        self._parts = _Parts(
            db,
            outbox,
            updater,
            loop,
            link,
            drain,
            inbound,
            gate,
            telemetry,
            events,
            scheduler,
            watch,
        )

        inbound.start()
        drain.start()
        link.start()
        self._schedule(scheduler)
        scheduler.start()
        self.notifier.ready()
        log.info(
            "agent %s running: device %s, model %s v%s (%s), source %s",
            agent.__version__,
            cfg.device_id,
            self._identity.name,
            self._identity.version,
            self._identity.sha256[:12],
            cfg.source.uri,
        )
        self.stop_event.wait()
        self._shutdown()
        return 0

    def _schedule(self, scheduler: PeriodicJobs) -> None:
        parts = self._parts
        assert parts is not None
        cfg = self.config
        scheduler.every(cfg.telemetry.interval_s, self._guard(parts.telemetry.report), "telemetry")
        scheduler.every(cfg.telemetry.heartbeat_s, self._guard(self._heartbeat), "heartbeat")
        scheduler.every(TICK_S, self._guard(self._tick), "tick")
        # its own job: a retried download running in the updater's tick never holds events up
        scheduler.every(TICK_S, self._guard(parts.events.flush), "events")
        interval = self.notifier.watchdog_interval_s
        if interval:
            scheduler.every(interval, self._guard(self._watchdog), "watchdog")

    # -- periodic jobs -----------------------------------------------------------------------

    def _guard(self, fn: Callable[[], Any]) -> Callable[[], None]:
        name = getattr(fn, "__name__", "job").lstrip("_")

        def run() -> None:
            if self.stop_event.is_set():
                return
            try:
                fn()
            except Exception:
                log.exception("periodic job %s failed", name)

        return run

    def _publish_capture(self, payload: bytes) -> None:
        parts = self._parts
        if parts is not None:
            parts.link.publish(Channel.CAPTURE, payload)

    def _heartbeat(self) -> None:
        parts = self._parts
        assert parts is not None
        if self._trust is not None:
            self._root_version = self._trust.current().version
        parts.link.publish_state()
        snap = parts.loop.snapshot()
        ident = self._model_identity()
        assert ident is not None
        self.notifier.status(
            f"model {ident.name} v{ident.version} ({ident.sha256[:12]}), {snap.fps:.1f} fps, "
            f"source {snap.source_status}, outbox {parts.outbox.depth()}"
        )

    def _tick(self) -> None:
        parts = self._parts
        assert parts is not None
        parts.updater.tick()

    def _watchdog(self) -> None:
        parts = self._parts
        assert parts is not None
        age = time.monotonic() - parts.loop.snapshot().heartbeat
        if age < max(HEARTBEAT_STALE_S, 2 * (self.notifier.watchdog_interval_s or 0)):
            self.notifier.watchdog()
        else:
            log.error("inference loop heartbeat is %.1fs old; not pinging the watchdog", age)

    # -- state -------------------------------------------------------------------------------

    def _model_identity(self) -> ModelIdentity | None:
        return self._identity

    def _state_changed(self) -> None:
        """The updater's hand-off (on its thread): the active model or the phase changed."""
        parts = self._parts
        if parts is None:
            return
        self._identity, self._phase = parts.updater.active(), parts.updater.phase()
        parts.link.publish_state()

    def _walk_root(self, data: bytes) -> Sequence[object]:
        """The inbound's hand-off for a root chain (on its deployment worker): walk it, and
        when the trusted root moved on, say so in a fresh retained state at once, so the fleet
        view does not wait for the next heartbeat to see the device take the new root."""
        assert self._trust is not None
        walked = self._trust.offer(data)
        if walked:
            self._root_version = walked[-1].version
            if self._parts is not None:
                self._parts.link.publish_state()
        return walked

    def _state_payload(self, online: bool) -> bytes:
        snap = self._loop.snapshot() if self._loop is not None else None
        return encode_message(
            DeviceState(
                device_id=self.config.device_id,
                online=online,
                ts=time.time(),
                agent_version=agent.__version__,
                profile=self.config.profile.name,
                model=self._identity,
                update_phase=self._phase,
                source_status=snap.source_status if snap is not None else "",
                fps=float(snap.fps) if snap is not None else 0.0,
                root_version=self._root_version,
            )
        )

    def _command_handlers(
        self, updater: Updater, telemetry: TelemetryReporter, loop: InferenceLoop
    ) -> dict[CommandName, Callable[[], None]]:
        """One handler per command in the contract (`agent.link.commands.COMMANDS`)."""

        def report_now() -> None:
            telemetry.report()
            if self._parts is not None:
                self._parts.link.publish_state()

        def rollback() -> None:
            updater.rollback()  # ends a running probation as failed; logs when there is none

        handlers: dict[CommandName, Callable[[], None]] = {
            CommandName.REPORT_NOW: report_now,
            CommandName.ROLLBACK: rollback,
            CommandName.RESTART_SOURCE: loop.restart_source,  # reports restarting, then up
        }
        return handlers

    # -- shutdown ----------------------------------------------------------------------------

    def _shutdown(self) -> None:
        parts = self._parts
        assert parts is not None
        self.notifier.stopping()
        parts.updater.interrupt()  # a running download stops now (its part is kept to resume)
        log.info("stopping: outbox depth %s", parts.outbox.depth())
        parts.scheduler.shutdown()
        parts.loop.stop()
        parts.watch.stop()
        parts.inbound.stop()
        parts.events.flush()
        flushed = parts.drain.flush(self.config.outbox.shutdown_flush_s)
        parts.drain.stop()
        parts.link.stop()
        log.info(
            "stopped: outbox %s (%s records left for the next start)",
            "flushed" if flushed else "not flushed",
            parts.outbox.depth(),
        )
        parts.updater.close()
        parts.gate.close()
        parts.outbox.close()
        parts.loop.model.close()


def run_daemon(config: AgentConfig) -> int:
    configure_logging(config.log_format)
    daemon = Daemon(config)
    daemon.install_signal_handlers()
    return daemon.run()
