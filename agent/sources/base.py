"""What every frame or sample source implements, and how it reports trouble.

A source is opened, read until it ends or fails, and closed; the capture thread around it
(`agent.sources.capture`) handles reconnects, status and hand-off. `read` returns one raw item
(a BGR uint8 frame, or a 1-D float32 sensor sample) or None when nothing arrived within the
timeout, so the capture thread stays responsive to stop requests.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

__all__ = ["BadSample", "Source", "SourceDown", "SourceEnded"]


class SourceDown(Exception):
    """The source cannot be opened or read right now (missing device, disconnect, stall)."""


class SourceEnded(Exception):
    """A finite source (file, folder, CSV) has no more items."""


class BadSample(Exception):
    """One item could not be read or parsed; the source itself is fine (counted as an error)."""


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
