"""`synthetic:image` and `synthetic:sensor`: generated input for benchmarks, demos and tests.

Unthrottled when made without a rate (every item, as fast as the loop takes them: `bench`);
with a rate (`?fps=N` for images, `?rate=N` samples per second, or `run`'s defaults, see
`agent.sources.open_source`) they pace themselves and behave as live sources.
"""

from __future__ import annotations

import numpy as np

from agent.sources.base import Pacer, Source

__all__ = ["SyntheticImage", "SyntheticSensor"]

DISTINCT_FRAMES = 8


class SyntheticImage(Source):
    """A few distinct BGR frames (shapes on a gradient), cycled."""

    kind = "image"

    def __init__(
        self, width: int = 640, height: int = 480, fps: float | None = None, seed: int = 0
    ) -> None:
        self.width, self.height = width, height
        self._pace = Pacer(fps)
        self.live = self._pace.rate is not None
        rng = np.random.default_rng(seed)
        rows, cols = np.ogrid[:height, :width]
        ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, 0)
        self._frames = []
        for _ in range(DISTINCT_FRAMES):
            frame = np.stack([ramp, ramp[:, ::-1], ramp * 0.5], axis=-1).astype(np.uint8)
            for _ in range(6):
                x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
                color = tuple(int(c) for c in rng.integers(0, 256, 3))
                radius = int(rng.integers(10, height // 3))
                frame[(rows - y) ** 2 + (cols - x) ** 2 <= radius * radius] = color
            self._frames.append(frame)
        self._next = 0

    def describe(self) -> str:
        return "synthetic image"

    @property
    def pace(self) -> float | None:
        return self._pace.rate

    def open(self) -> None:
        self._next = 0

    def read(self, timeout: float) -> np.ndarray | None:
        if not self._pace.wait(timeout):
            return None
        frame = self._frames[self._next % len(self._frames)]
        self._next += 1
        return frame

    def close(self) -> None:
        pass


class SyntheticSensor(Source):
    """Noisy sines on `channels` axes, with a frequency that drifts from window to window."""

    kind = "sensor"

    def __init__(
        self,
        channels: int = 3,
        rate: float | None = None,
        seed: int = 0,
        sample_rate_hz: float = 500.0,
    ) -> None:
        self.channels = channels
        self._pace = Pacer(rate)
        self.live = self._pace.rate is not None
        self._rng = np.random.default_rng(seed)
        self._sample_rate = sample_rate_hz
        self._block = np.zeros((0, channels), dtype=np.float32)
        self._next = 0
        self._t = 0

    def describe(self) -> str:
        return "synthetic sensor"

    @property
    def pace(self) -> float | None:
        return self._pace.rate

    def open(self) -> None:
        pass

    def _refill(self, n: int = 1024) -> None:
        t = (self._t + np.arange(n)) / self._sample_rate
        freq = 25.0 + 10.0 * np.sin(2 * np.pi * t / 20.0)  # drifts over 20 s
        phase = 2 * np.pi * freq[:, None] * t[:, None] + np.arange(self.channels) * np.pi / 2
        noise = self._rng.normal(0.0, 0.05, (n, self.channels))
        self._block = (np.sin(phase) + noise).astype(np.float32)
        self._next = 0
        self._t += n

    def read(self, timeout: float) -> np.ndarray | None:
        if not self._pace.wait(timeout):
            return None
        if self._next >= len(self._block):
            self._refill()
        sample: np.ndarray = self._block[self._next]
        self._next += 1
        return sample

    def close(self) -> None:
        pass
