"""The bounded FIFO from paho's network thread to the ingest writer (`cloud.ingest`)."""

from __future__ import annotations

import threading
import time
from collections import deque

__all__ = ["Handoff", "Item"]

Item = tuple[bytes, bytes, int, int]  # (topic, payload, mid, qos)


class Handoff:
    """The bounded FIFO from paho's network thread to the writer. Deque appends and pops are
    atomic, so a message costs no lock; an event wakes the writer when messages arrive, and
    a full queue makes the network thread wait."""

    def __init__(self, bound: int) -> None:
        self._items: deque[Item] = deque()
        self._bound = bound
        self._ready = threading.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Item, stop: threading.Event) -> None:
        while len(self._items) >= self._bound and not stop.is_set():
            time.sleep(0.01)
        self._items.append(item)
        if not self._ready.is_set():
            self._ready.set()

    def take(self, most: int, wait_s: float) -> list[Item]:
        """Up to `most` messages: waits up to 0.2 s for the first, then `wait_s` for more."""
        items, ready = self._items, self._ready
        if not items:
            ready.clear()  # cleared before looking again, so no put is missed
            if not items and not ready.wait(0.2):
                return []
        batch: list[Item] = []
        deadline = time.monotonic() + wait_s
        while True:
            while items and len(batch) < most:
                batch.append(items.popleft())
            left = deadline - time.monotonic()
            if len(batch) >= most or left <= 0:
                return batch
            ready.clear()
            if not items:
                ready.wait(min(left, 0.02))
