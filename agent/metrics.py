"""Loop metrics cheap enough for the hot path.

Each recording is a few array stores and integer additions on the inference thread; the
percentiles and rates are computed only when someone asks (`LatencyWindow.percentiles`,
`RateWindow.rate`), from fixed-size rings of the most recent values. Readers on other threads
see values that are at most one frame old.
"""

from __future__ import annotations

import time

import numpy as np

__all__ = ["DEFAULT_WINDOW", "LatencyWindow", "LoopMetrics", "RateWindow"]

DEFAULT_WINDOW = 1024  # latencies and completion times kept for percentiles and fps


class LatencyWindow:
    """The last `size` latencies (ms) in a ring; percentiles over what it holds."""

    def __init__(self, size: int = DEFAULT_WINDOW) -> None:
        if size < 1:
            raise ValueError("a latency window holds at least one value")
        self._values = np.zeros(size, dtype=np.float64)
        self._count = 0

    def add(self, value_ms: float) -> None:
        self._values[self._count % self._values.size] = value_ms
        self._count += 1

    def clear(self) -> None:
        self._count = 0

    def __len__(self) -> int:
        return min(self._count, self._values.size)

    def percentiles(self, *qs: float) -> tuple[float, ...]:
        n = len(self)
        if n == 0:
            return tuple(0.0 for _ in qs)
        values = np.percentile(self._values[:n].copy(), qs)
        return tuple(round(float(v), 4) for v in values)


class RateWindow:
    """Events per second over the last `size` events (and no older than `horizon_s`)."""

    def __init__(self, size: int = DEFAULT_WINDOW, horizon_s: float = 10.0) -> None:
        self._times = np.zeros(size, dtype=np.float64)
        self._count = 0
        self.horizon_s = horizon_s

    def add(self, now: float) -> None:
        self._times[self._count % self._times.size] = now
        self._count += 1

    def clear(self) -> None:
        self._count = 0

    def rate(self, now: float | None = None) -> float:
        n = min(self._count, self._times.size)
        if n < 2:
            return 0.0
        now = time.monotonic() if now is None else now
        times = self._times[:n]
        recent = times[times >= now - self.horizon_s]
        if recent.size < 2:
            return 0.0
        span = now - float(recent.min())  # grows while nothing completes: fps decays
        return round((recent.size - 1) / span, 3) if span > 0 else 0.0


class LoopMetrics:
    """Counters and windows of one inference loop (written by the inference thread only)."""

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        self.inferences = 0
        self.errors = 0
        self.invoke_ms = LatencyWindow(window)
        self.e2e_ms = LatencyWindow(window)
        self.done = RateWindow(window)

    def record(self, invoke_ms: float, e2e_ms: float, now: float) -> None:
        self.inferences += 1
        self.invoke_ms.add(invoke_ms)
        self.e2e_ms.add(e2e_ms)
        self.done.add(now)

    def new_model(self) -> None:
        """Latencies describe the model being served: start afresh after a swap."""
        self.invoke_ms.clear()
        self.e2e_ms.clear()
