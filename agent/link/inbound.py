"""Messages from the cloud (`desired`, `cmd`, the fleet's `trust/root`), handled off paho's
network thread.

`offer` is the hand-off paho's `on_message` calls; it never blocks and never raises. Oversized
payloads are dropped at once (counted and logged; an oversized `desired` is reported as
refused, `payload_too_large`, through `on_refused`). Then each channel has its own worker, so
a slow download never holds up an operator's command:

- `desired` goes to a one-message mailbox: the retained deployment is the whole desired state,
  so the newest wins. One that replaces a message not yet taken is counted and logged. The
  deployment worker hands the bytes to `on_deployment` (the updater's whole pipeline, which
  verifies and reports); the same bytes arriving again (the retained message after every
  reconnect) are handled once per process. When a different deployment arrives while one is
  being handled, the command worker asks `supersede` to look at it: an authentic newer
  deployment cancels the running download, and the deployment worker takes it next (the
  deployment worker asks too before it starts one, for a retry downloading elsewhere).
- `cmd` goes to a bounded queue (`[mqtt] inbound_queue`); the command worker verifies each
  with `CommandGate.admit` (keyring, device, expiry, replay) and runs its handler. Every
  command's outcome is reported through `report` (an event of kind `command`: done, refused
  with its reason, failed, or dropped because the queue was full), and counted.
- `trust/root` (fleet-wide, retained) goes to its own one-message mailbox (the newest chain
  wins), taken by the deployment worker before any deployment: `on_root` (the trust store)
  walks and persists it. When it moved the trusted root forward, the last deployment is
  handled again: it may have been refused under the old keys, or be signed by a key now
  revoked.

Nothing a message contains can stop a worker: every failure is logged, counted and reported,
and the next message is taken.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Protocol

from agent.link.commands import CommandGate
from shared.errors import PayloadTooLarge, Rejected, reason_of
from shared.fields import FreeObject
from shared.messages import Command
from shared.topics import Channel, FleetChannel
from shared.vocabulary import CommandName

__all__ = ["COMMAND_EVENT", "Inbound"]

log = logging.getLogger(__name__)

COMMAND_EVENT = "command"  # the event kind that reports a command's outcome
_SCREEN = None  # a command-queue item: look at the desired mailbox (a deployment is running)


class Handled(Protocol):
    """What the deployment handler returns (the updater's `UpdateOutcome`): one log line."""

    def describe(self) -> str: ...


Report = Callable[[str, FreeObject], None]  # (event kind, detail)


class Inbound:
    def __init__(
        self,
        gate: CommandGate,
        on_deployment: Callable[[bytes], Handled],
        handlers: Mapping[CommandName, Callable[[], None]],
        max_payload_bytes: int = 1024 * 1024,
        queue_size: int = 16,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        *,
        supersede: Callable[[bytes], bool] | None = None,
        report: Report | None = None,
        on_refused: Callable[[Rejected], object] | None = None,
        on_root: Callable[[bytes], Sequence[object]] | None = None,
        command_handlers: Mapping[CommandName, Callable[[Command], None]] | None = None,
    ) -> None:
        self.gate = gate
        self.handlers = handlers
        self.command_handlers = command_handlers or {}  # handlers that read `args`
        self.max_payload_bytes = max_payload_bytes
        self.dropped = 0  # messages not handled: oversized, refused, queue full, failed
        self.replaced = 0  # desired messages replaced by a newer one before they were taken
        self.handled = 0
        self._on_deployment = on_deployment
        self._supersede = supersede
        self._on_refused = on_refused
        self._on_root = on_root
        self._report = report
        self._now = now
        self._commands: queue.Queue[bytes | None] = queue.Queue(queue_size)
        self._mailbox = threading.Condition()
        # the newest desired message not yet taken, or the refusal of one too big to keep
        self._desired: bytes | Rejected | None = None
        self._running: str | None = None  # digest of the deployment being handled
        self._stopping = False
        self._last_deployment: str | None = None
        self._root: bytes | None = None  # the newest root chain not yet walked
        self._handled_desired = b""  # the last deployment handled, for a re-run after a new root
        self._threads: list[threading.Thread] = []

    # -- paho's hand-off ---------------------------------------------------------------------

    def offer(self, channel: Channel | FleetChannel, payload: bytes) -> None:
        try:
            if len(payload) > self.max_payload_bytes:
                why = f"{len(payload)} bytes is over the {self.max_payload_bytes}-byte cap"
                self._drop(channel, why, "payload_too_large")
                if channel is Channel.DESIRED and self._on_refused is not None:
                    self._offer_desired(
                        PayloadTooLarge(
                            f"a desired message of {len(payload)} bytes; at most "
                            f"{self.max_payload_bytes} are taken"
                        )
                    )
            elif channel is Channel.DESIRED:
                self._offer_desired(payload)
            elif channel is Channel.CMD:
                self._enqueue_command(payload)
            elif channel is FleetChannel.TRUST_ROOT:
                with self._mailbox:
                    self._root = payload
                    self._mailbox.notify_all()
        except Exception:  # never into paho's thread
            log.exception("taking a %s message failed", channel)

    def _offer_desired(self, payload: bytes | Rejected) -> None:
        with self._mailbox:
            if self._desired is not None:
                self.replaced += 1
                log.warning(
                    "a newer desired message replaced one not yet handled (%s so far)",
                    self.replaced,
                )
            self._desired = payload
            busy = self._running is not None
            self._mailbox.notify_all()
        if busy and self._supersede is not None and isinstance(payload, bytes):
            try:
                self._commands.put_nowait(_SCREEN)
            except queue.Full:
                log.warning(
                    "the command queue is full: the new deployment waits for the running one to end"
                )

    def _enqueue_command(self, payload: bytes) -> None:
        try:
            self._commands.put_nowait(payload)
        except queue.Full:
            self._drop(Channel.CMD, "the command queue is full", "queue_full")

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._threads = [
            threading.Thread(target=self._run_deployments, name="inbound-desired", daemon=True),
            threading.Thread(target=self._run_commands, name="inbound-cmd", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._mailbox:
            self._stopping = True
            self._mailbox.notify_all()
        try:
            self._commands.put(_SCREEN, timeout=timeout)
        except queue.Full:
            pass  # still full after the timeout: the daemon thread is left to end with the process
        for thread in self._threads:
            thread.join(timeout)

    # -- the deployment worker ---------------------------------------------------------------

    def _run_deployments(self) -> None:
        while True:
            with self._mailbox:
                while self._desired is None and self._root is None and not self._stopping:
                    self._mailbox.wait()
                if self._stopping:
                    return
                root, self._root = self._root, None
            if root is not None:  # walked outside the lock: it persists the trusted root
                if not self._walk_root(root):
                    continue
                with self._mailbox:
                    if self._desired is not None or not self._handled_desired:
                        continue  # a newer deployment waits: it is taken under the new root
                    self._desired = self._handled_desired
                    self._last_deployment = None
            with self._mailbox:
                payload, self._desired = self._desired, None
                if self._stopping or payload is None:
                    return
                if isinstance(payload, bytes):
                    self._running = hashlib.sha256(payload).hexdigest()
            try:
                if isinstance(payload, Rejected):
                    assert self._on_refused is not None
                    self._on_refused(payload)
                else:
                    self._deployment(payload)
                self.handled += 1
            except Exception:
                log.exception("handling a desired message failed; dropped it")
                self.dropped += 1
            finally:
                with self._mailbox:
                    self._running = None

    def _deployment(self, payload: bytes) -> None:
        if not payload:
            log.info("desired state cleared (empty retained message); nothing to do")
            return
        digest = hashlib.sha256(payload).hexdigest()
        if digest == self._last_deployment:
            log.debug("deployment %s seen before; ignored", digest[:12])
            return
        if self._supersede is not None:  # a retry may be downloading on the updater's tick
            self._screen(payload)
        outcome = self._on_deployment(payload)
        self._last_deployment, self._handled_desired = digest, payload
        log.info("deployment %s handled: %s", digest[:12], outcome.describe())

    def _walk_root(self, payload: bytes) -> bool:
        """Walk a root chain; True when the trusted root moved on."""
        if self._on_root is None or not payload:
            return False
        try:
            walked = self._on_root(payload)
        except Rejected as e:
            self._drop(FleetChannel.TRUST_ROOT, f"root refused: {e.reason}: {e}", e.reason)
            return False
        except Exception:
            log.exception("walking a root chain failed")
            self.dropped += 1
            return False
        if walked:
            log.info("the trusted root changed; handling the last deployment again")
        return bool(walked)

    # -- the command worker ------------------------------------------------------------------

    def _run_commands(self) -> None:
        while True:
            item = self._commands.get()
            if item is _SCREEN:
                with self._mailbox:
                    if self._stopping:
                        return
                    waiting, running = self._desired, self._running
                if (
                    isinstance(waiting, bytes)
                    and waiting
                    and running
                    and hashlib.sha256(waiting).hexdigest() != running
                ):
                    self._screen(waiting)
                continue
            try:
                self._command(item)
                self.handled += 1
            except Exception as e:
                log.exception("a command failed")
                self.dropped += 1
                self._tell({"outcome": "failed", "reason": reason_of(e), "detail": str(e)[:200]})

    def _screen(self, payload: bytes) -> None:
        assert self._supersede is not None
        try:
            self._supersede(payload)
        except Exception:
            log.exception("checking whether a new deployment supersedes the running one failed")

    def _command(self, payload: bytes) -> None:
        try:
            command = self.gate.admit(payload, self._now())
        except Rejected as e:
            self._drop(Channel.CMD, f"{e.reason}: {e}", e.reason)
            return
        name = CommandName(command.command)  # the gate checked it
        with_args = self.command_handlers.get(name)
        if with_args is not None:
            log.info("running operator command %r (nonce %s)", command.command, command.nonce)
            try:
                with_args(command)
            except Rejected as e:
                self._drop(Channel.CMD, f"{e.reason}: {e}", e.reason)
                return
            self._tell({"outcome": "done", "command": command.command, "nonce": command.nonce})
            return
        handler = self.handlers.get(name)
        if handler is None:  # every command in the contract has one; a gap is a bug here
            log.error("command %r (nonce %s) has no handler", command.command, command.nonce)
            self._tell(
                {
                    "outcome": "failed",
                    "reason": "unsupported",
                    "command": command.command,
                    "nonce": command.nonce,
                }
            )
            return
        log.info("running operator command %r (nonce %s)", command.command, command.nonce)
        handler()
        self._tell({"outcome": "done", "command": command.command, "nonce": command.nonce})

    def _drop(self, channel: Channel | FleetChannel, why: str, reason: str) -> None:
        self.dropped += 1
        log.warning("dropped a %s message: %s", channel, why)
        if channel is Channel.CMD:
            self._tell({"outcome": "refused", "reason": reason, "detail": why[:200]})

    def _tell(self, detail: FreeObject) -> None:
        if self._report is None:
            return
        try:
            self._report(COMMAND_EVENT, detail)
        except Exception:
            log.exception("could not report a command outcome")
