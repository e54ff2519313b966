"""The hand-off between the capture thread and the inference thread.

Live sources use a one-slot feed where the latest frame wins and every overwritten frame is
counted as dropped. Files use a small bounded queue whose producer waits, so every frame is
inferred exactly once.

Waking a thread costs the waker a system call and, on a small device, the woken thread then
competes for the cores and the GIL. So each side is woken only when it has to be: the consumer
when a frame arrives while it waits, the producer (waiting for room) only once the queue has
drained to its low-water mark, from where it refills in one go while the consumer invokes.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Feed", "Frame"]


@dataclass(slots=True)
class Frame:
    index: int  # position in the source: 0, 1, 2, ... (files: the frame number)
    ts: float  # time.monotonic() when it was captured
    raw: np.ndarray  # the frame (BGR uint8) or sensor window (float32)
    inputs: list[np.ndarray]  # the model input, prepared by `stage`
    stage: Any  # the preprocessing that made `inputs` (compared by identity)


class Feed:
    def __init__(self, capacity: int, latest_wins: bool) -> None:
        if capacity < 1:
            raise ValueError("a feed holds at least one frame")
        self.buffer = capacity
        self.capacity = 1 if latest_wins else capacity
        self.latest_wins = latest_wins
        self.dropped = 0
        self._items: deque[Frame] = deque()
        lock = threading.Lock()
        self._arrived = threading.Condition(lock)  # the consumer waits for a frame
        self._room = threading.Condition(lock)  # the producer waits for room
        self._producer_waits = False
        self._finished = False
        self._woken = False

    @property
    def low_water(self) -> int:
        """A producer waiting for room is woken once the queue holds this many frames."""
        return (self.capacity - 1) // 2

    def put(self, frame: Frame, stop: threading.Event) -> bool:
        """Hand over a frame. Files wait for room (False if `stop` is set meanwhile)."""
        with self._room:
            if self.latest_wins:
                if self._items:
                    self._items.popleft()
                    self.dropped += 1
            else:
                while len(self._items) >= self.capacity:
                    if stop.is_set():
                        return False
                    self._producer_waits = True
                    try:
                        self._room.wait(0.25)
                    finally:
                        self._producer_waits = False
            self._items.append(frame)
            self._arrived.notify()
            return True

    def get(self, timeout: float) -> Frame | None:
        """The next frame, or None after `timeout` or a `wake()`."""
        with self._arrived:
            items = self._items
            if not items:
                if not self._woken:
                    self._arrived.wait(timeout)
                if not items:
                    self._woken = False
                    return None
            frame = items.popleft()
            if self._producer_waits and len(items) <= self.low_water:
                self._room.notify()
            return frame

    def wake(self, producer: bool = True) -> None:
        """Make a waiting `get` return now (the consumer has something else to do).

        A producer waiting for room is woken too (to see a stop), unless `producer` is False.
        """
        with self._arrived:
            self._woken = True
            self._arrived.notify_all()
            if producer:
                self._room.notify_all()

    def finish(self) -> None:
        """The source has ended: no more frames will come."""
        with self._arrived:
            self._finished = True
            self._arrived.notify_all()

    def restart(self, live: bool) -> None:
        """A (re)opened source: expect frames again, live or not (known only once open)."""
        with self._arrived:
            self._finished = False
            self.latest_wins = live
            self.capacity = 1 if live else self.buffer

    @property
    def finished(self) -> bool:
        """True once the source ended and every frame was taken."""
        with self._arrived:
            return self._finished and not self._items

    def __len__(self) -> int:
        return len(self._items)
