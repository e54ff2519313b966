"""Synthetic 3-axis vibration from a rotating machine, in plain numpy.

An accelerometer on a bearing housing samples x, y (radial) and z (axial, carrying 1 g of
gravity) at ``SAMPLE_RATE_HZ``. Four machine conditions are simulated, each a textbook
signature from vibration analysis:

``normal``
    a small once-per-revolution (1x) component and sensor noise.
``imbalance``
    a large 1x component, 90 degrees apart on the two radial axes.
``bearing_fault``
    a train of short, decaying high-frequency rings at the outer-race defect frequency
    (about 3.6x the shaft speed), strongest on the loaded radial axis.
``looseness``
    harmonics of the shaft speed (2x, 3x, 4x) and a half-order component, with the vertical
    axis clipped on one side, as when a foot lifts off its mount.

The shaft speed, amplitudes and phases vary from window to window, so a classifier has to learn
the signature, not a fixed waveform. ``window`` makes one ``[length, 3]`` float32 window,
``dataset`` makes a labelled set, and ``VibrationSource`` yields an endless stream whose
condition changes every so often, for a synthetic sensor source.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

CLASSES: tuple[str, ...] = ("normal", "imbalance", "bearing_fault", "looseness")
SAMPLE_RATE_HZ = 500.0
WINDOW = 64


def window(
    condition: str,
    rng: np.random.Generator,
    length: int = WINDOW,
    sample_rate_hz: float = SAMPLE_RATE_HZ,
) -> np.ndarray:
    """One window of shape ``[length, 3]`` (x, y, z in g) for ``condition``."""
    if condition not in CLASSES:
        raise ValueError(f"unknown condition {condition!r}; expected one of {CLASSES}")
    t = np.arange(length) / sample_rate_hz
    shaft_hz = rng.uniform(20.0, 40.0)
    phase = rng.uniform(0.0, 2.0 * np.pi)
    w = 2.0 * np.pi * shaft_hz

    base = rng.uniform(0.05, 0.15)
    x = base * np.sin(w * t + phase)
    y = base * np.cos(w * t + phase)
    z = np.full(length, 1.0) + 0.3 * base * np.sin(w * t + phase + 1.0)

    if condition == "imbalance":
        amp = rng.uniform(0.5, 1.0)
        x += amp * np.sin(w * t + phase)
        y += amp * np.cos(w * t + phase)
        z += 0.1 * amp * np.sin(w * t + phase)
    elif condition == "bearing_fault":
        defect_hz = shaft_hz * rng.uniform(3.4, 3.8)
        ring_hz = rng.uniform(150.0, 220.0)
        decay = rng.uniform(150.0, 300.0)
        amp = rng.uniform(0.4, 0.9)
        start = rng.uniform(0.0, 1.0 / defect_hz)
        impulses = np.zeros(length)
        for t0 in np.arange(start, t[-1] + 1e-9, 1.0 / defect_hz):
            dt = t - t0
            on = dt >= 0
            impulses[on] += np.exp(-decay * dt[on]) * np.sin(2.0 * np.pi * ring_hz * dt[on])
        x += 0.5 * amp * impulses
        y += amp * impulses
        z += 0.3 * amp * impulses
    elif condition == "looseness":
        amps = rng.uniform(0.15, 0.35, size=4)
        for k, a in zip((2, 3, 4), amps[:3], strict=True):
            harmonic = a * np.sin(k * w * t + k * phase + rng.uniform(0.0, np.pi))
            x += 0.6 * harmonic
            y += harmonic
        y += amps[3] * np.sin(0.5 * w * t + phase)
        y = np.minimum(y, rng.uniform(0.05, 0.2))  # the mount stops travel upwards
        z += 0.2 * amps[0] * np.sin(2 * w * t + phase)

    noise = rng.normal(0.0, rng.uniform(0.02, 0.06), size=(length, 3))
    return (np.stack([x, y, z], axis=1) + noise).astype(np.float32)


def dataset(per_class: int, seed: int, length: int = WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` windows of each condition, shuffled: x ``[N, length, 3]``, y int64."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for label, condition in enumerate(CLASSES):
        for _ in range(per_class):
            xs.append(window(condition, rng, length))
            ys.append(label)
    order = rng.permutation(len(ys))
    return np.stack(xs)[order], np.asarray(ys, dtype=np.int64)[order]


class VibrationSource:
    """An endless stream of windows; the machine changes condition every few windows."""

    def __init__(self, seed: int = 0, length: int = WINDOW, dwell: tuple[int, int] = (5, 20)):
        if dwell[0] < 1 or dwell[1] < dwell[0]:
            raise ValueError(f"dwell must be 1 <= low <= high, got {dwell}")
        self._rng = np.random.default_rng(seed)
        self._length = length
        self._dwell = dwell
        self.condition = CLASSES[0]
        self._left = int(self._rng.integers(dwell[0], dwell[1] + 1))

    def next_window(self) -> np.ndarray:
        """The next ``[length, 3]`` float32 window; ``self.condition`` says what it shows."""
        if self._left == 0:
            self.condition = CLASSES[int(self._rng.integers(len(CLASSES)))]
            self._left = int(self._rng.integers(self._dwell[0], self._dwell[1] + 1))
        self._left -= 1
        return window(self.condition, self._rng, self._length)

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            yield self.next_window()
