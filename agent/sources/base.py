"""What every frame or sample source implements, and how it reports trouble.

A source is opened, read until it ends or fails, and closed; the capture thread around it
(`agent.sources.capture`) handles reconnects, status and hand-off. `read` returns one raw item
(a BGR uint8 frame, or a 1-D float32 sensor sample) or None when nothing arrived within the
timeout, so the capture thread stays responsive to stop requests.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

__all__ = ["BadSample", "FrameNeed", "Pacer", "Source", "SourceDown", "SourceEnded"]

SCALES = (8, 4, 2)  # the scale-downs a JPEG decoder does for a fraction of a full decode


class SourceDown(Exception):
    """The source cannot be opened or read right now (missing device, disconnect, stall)."""


class SourceEnded(Exception):
    """A finite source (file, folder, CSV) has no more items."""


class BadSample(Exception):
    """One item could not be read or parsed; the source itself is fine (counted as an error)."""


@dataclass(frozen=True)
class FrameNeed:
    """How much of a frame the model's preprocessing uses: a source may decode no more.

    `width` x `height` is the model's input; a frame scaled down by `scale()` still covers it
    wherever the model looks (centre crop or stretch). `gray`: the model reads luma only.
    """

    width: int
    height: int
    gray: bool = False

    def scale(self, frame_width: int, frame_height: int) -> int:
        """The largest of 8, 4, 2 (or 1) that keeps a frame at least the model's size."""
        fit = min(frame_width / self.width, frame_height / self.height)
        return next((s for s in SCALES if fit >= s), 1)


class Pacer:
    """Items at `rate` per second (None or 0: as fast as they are asked for)."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate or None
        self.period = 1.0 / rate if rate else 0.0
        self._due = 0.0

    def wait(self, timeout: float) -> bool:
        """True when the next item is due (sleeping up to `timeout` for it)."""
        if not self.period:
            return True
        now = time.monotonic()
        if self._due <= now:
            self._due = max(self._due + self.period, now - self.period)
            return True
        delay = self._due - now
        if delay > timeout:
            time.sleep(timeout)
            return False
        time.sleep(delay)
        self._due += self.period
        return True


class Source(ABC):
    kind: str = "image"  # "image" frames or "sensor" samples
    live: bool = False  # live: latest item wins, reconnect when it ends; else: every item

    @abstractmethod
    def open(self) -> None:
        """Connect; raise `SourceDown` with a short reason when that is not possible now."""

    @abstractmethod
    def read(self, timeout: float) -> np.ndarray | None:
        """One item, or None after `timeout` seconds without one."""

    @abstractmethod
    def close(self) -> None: ...

    def describe(self) -> str:
        return type(self).__name__

    @property
    def pace(self) -> float | None:
        """Items per second this source paces itself to (None: as fast as they come)."""
        return None

    def want(self, need: FrameNeed | None) -> None:
        """A hint from the capture thread: frames reduced to `need` are enough (None: full).

        Sources that can decode smaller or gray frames for less work (MJPG video) do so from
        their next frame on; the others ignore it.
        """
        del need
