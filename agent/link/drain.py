"""The outbox drain: publishes stored records oldest-first with QoS 1, deletes them on PUBACK.

One thread. It keeps at most `window` messages in flight (handed to paho, not yet
acknowledged). paho holds those in memory and sends them again after a reconnect, with the DUP
flag; everything else waits in the outbox on disk. After a restart the in-flight map is empty,
so every record still in the outbox is published again: a record the broker had acknowledged
just before the process died arrives twice, and receivers dedup on `(device_id, seq)`.

A PUBACK carrying a failure reason code (MQTT 5: the broker refused the message, e.g. not
authorized) removes the record as dropped, so one refused record cannot block the rest.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Protocol

from agent.outbox import Outbox
from shared.topics import Channel

__all__ = ["OutboxDrain", "Publisher"]

log = logging.getLogger(__name__)

_WAKE = ("wake", 0, False)


class _Handle(Protocol):
    mid: int


class Publisher(Protocol):
    connected: threading.Event

    def publish(self, channel: Channel, payload: bytes, qos: int = 1) -> _Handle: ...


class OutboxDrain:
    """Moves records from the outbox to the broker; `ack(mid, failed)` is paho's hand-off."""

    def __init__(self, outbox: Outbox, publisher: Publisher, window: int = 100) -> None:
        self.outbox = outbox
        self.publisher = publisher
        self.window = max(1, window)
        self.published = 0  # messages handed to paho (including replays after a restart)
        self.acked = 0
        self._events: queue.SimpleQueue[tuple[str, int, bool]] = queue.SimpleQueue()
        self._inflight: dict[int, int] = {}  # paho mid -> seq
        self._sent_seq = 0  # highest seq handed to paho in this process
        self._delivered: list[int] = []  # acknowledged, not yet deleted (kept if a delete fails)
        self._refused: list[int] = []
        outbox.add_listener(self.wake)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- hand-offs (any thread, cheap) -------------------------------------------------------

    def ack(self, mid: int, failed: bool = False) -> None:
        self._events.put(("ack", mid, failed))

    def wake(self) -> None:
        self._events.put(_WAKE)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="outbox-drain", daemon=True)
        self._thread.start()

    def flush(self, timeout: float) -> bool:
        """Wait until the outbox is empty and nothing is in flight, while the link is up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.outbox.depth() == 0 and not self._inflight:
                return True
            if not self.publisher.connected.is_set():
                return False
            self.wake()
            time.sleep(0.02)
        return self.outbox.depth() == 0 and not self._inflight

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.wake()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    # -- the thread --------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception:
                # a store error must not end delivery for good: log, back off, carry on
                log.exception("outbox drain failed; retrying in 1s")
                self._stop.wait(1.0)

    def _step(self) -> None:
        connected = self.publisher.connected.is_set()
        if connected:
            self._publish_more()
        self._wait_and_settle(timeout=0.5 if connected else 0.2)

    def _publish_more(self) -> None:
        room = self.window - len(self._inflight)
        if room <= 0:
            return
        for entry in self.outbox.pending(self._sent_seq, room, hold=True):
            handle = self.publisher.publish(entry.channel, entry.payload, qos=1)
            self._inflight[handle.mid] = entry.seq
            self._sent_seq = entry.seq
            self.published += 1

    def _wait_and_settle(self, timeout: float) -> None:
        """Block for the next event (ack, append, connect), then settle every queued ack."""
        try:
            event: tuple[str, int, bool] | None = self._events.get(timeout=timeout)
        except queue.Empty:
            event = None
        while event is not None:
            kind, mid, failed = event
            if kind == "ack":
                seq = self._inflight.pop(mid, None)
                if seq is not None:
                    (self._refused if failed else self._delivered).append(seq)
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                event = None
        if self._delivered:
            self.outbox.remove(self._delivered)
            self.acked += len(self._delivered)
            self._delivered = []
        if self._refused:
            log.warning(
                "broker refused %s record(s) (seq %s..); dropping them",
                len(self._refused),
                self._refused[0],
            )
            self.outbox.remove(self._refused, dropped=True)
            self._refused = []
