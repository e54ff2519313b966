"""Messages from the cloud (`desired`, `cmd`), handled off paho's network thread.

`offer` is the hand-off paho's `on_message` calls: it drops oversized payloads at once and puts
the rest on a small bounded queue (a full queue drops and logs; the cloud resends what matters:
`desired` is retained). One worker thread takes them in order:

- `desired`: the deployment bytes go to `on_deployment` (the updater's whole pipeline, which
  verifies and reports). The same bytes arriving again (the retained message after every
  reconnect) are handled once per process.
- `cmd`: `CommandGate.admit` verifies the signed command (keyring, device, expiry, replay);
  anything else is logged and dropped. A verified command runs its handler.

Nothing a message contains can stop the worker: every failure is logged and the next message
is taken.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from agent.link.commands import CommandGate
from shared.errors import Rejected
from shared.messages import Command
from shared.topics import Channel

__all__ = ["Inbound"]

log = logging.getLogger(__name__)


class Inbound:
    def __init__(
        self,
        gate: CommandGate,
        on_deployment: Callable[[bytes], Any],
        handlers: dict[str, Callable[[], None]],
        max_payload_bytes: int = 1024 * 1024,
        queue_size: int = 16,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        command_handlers: dict[str, Callable[[Command], None]] | None = None,
    ) -> None:
        self.gate = gate
        self.handlers = handlers
        self.command_handlers = command_handlers or {}  # handlers that read `args`
        self.max_payload_bytes = max_payload_bytes
        self.dropped = 0
        self.handled = 0
        self._on_deployment = on_deployment
        self._now = now
        self._queue: queue.Queue[tuple[Channel, bytes] | None] = queue.Queue(queue_size)
        self._last_deployment: str | None = None
        self._thread: threading.Thread | None = None

    # -- paho's hand-off ---------------------------------------------------------------------

    def offer(self, channel: Channel, payload: bytes) -> None:
        if len(payload) > self.max_payload_bytes:
            self._drop(channel, f"{len(payload)} bytes is over the {self.max_payload_bytes}-byte cap")
            return
        try:
            self._queue.put_nowait((channel, payload))
        except queue.Full:
            self._drop(channel, "the inbound queue is full")

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="inbound", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            pass  # still full after the timeout: the daemon thread is left to end with the process
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the worker --------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            channel, payload = item
            try:
                if channel is Channel.DESIRED:
                    self._deployment(payload)
                elif channel is Channel.CMD:
                    self._command(payload)
                self.handled += 1
            except Exception:
                log.exception("handling a %s message failed; dropped it", channel)
                self.dropped += 1

    def _deployment(self, payload: bytes) -> None:
        if not payload:
            log.info("desired state cleared (empty retained message); nothing to do")
            return
        digest = hashlib.sha256(payload).hexdigest()
        if digest == self._last_deployment:
            log.debug("deployment %s seen before; ignored", digest[:12])
            return
        outcome = self._on_deployment(payload)
        self._last_deployment = digest
        log.info("deployment %s handled: %s", digest[:12], outcome)

    def _command(self, payload: bytes) -> None:
        try:
            command = self.gate.admit(payload, self._now())
        except Rejected as e:
            self._drop(Channel.CMD, f"{e.reason}: {e}")
            return
        with_args = self.command_handlers.get(command.command)
        if with_args is not None:
            log.info("running operator command %r (nonce %s)", command.command, command.nonce)
            try:
                with_args(command)
            except Rejected as e:
                self._drop(Channel.CMD, f"{e.reason}: {e}")
            return
        handler = self.handlers.get(command.command)
        if handler is None:
            log.warning("command %r (nonce %s) is not supported here; ignored", command.command,
                        command.nonce)
            return
        log.info("running operator command %r (nonce %s)", command.command, command.nonce)
        handler()

    def _drop(self, channel: Channel, why: str) -> None:
        self.dropped += 1
        log.warning("dropped a %s message: %s", channel, why)
