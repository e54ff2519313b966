"""Sensor samples (one line of values each) into fixed-size windows for `[1, N]`/`[1, T, C]`."""

from __future__ import annotations

import numpy as np

from agent.processing.preprocess import InputMismatch

__all__ = ["Windower"]


class Windower:
    """Collects samples; returns a full window every `hop` samples (non-overlapping by default).

    `channels` is the width every sample must have for `[1, T, C]` inputs; for `[1, N]` inputs
    (`channels=None`) samples of any width are concatenated.
    """

    def __init__(self, values: int, channels: int | None, hop: int | None = None) -> None:
        if values < 1 or (channels is not None and values % channels):
            raise InputMismatch(f"a window of {values} values cannot hold {channels}-wide samples")
        self.values = values
        self.channels = channels
        self.hop = hop or values
        self._buffer = np.zeros(values, dtype=np.float32)
        self._filled = 0
        self._since = 0

    def add(self, sample: np.ndarray) -> np.ndarray | None:
        """Append one sample; a copy of the window when one is due. Wrong width: InputMismatch."""
        flat = np.asarray(sample, dtype=np.float32).ravel()
        if self.channels is not None and flat.size != self.channels:
            raise InputMismatch(f"a sample of {flat.size} values; the model takes {self.channels}")
        n = flat.size
        if n >= self.values:
            flat, n = flat[-self.values :], self.values
        if self._filled + n > self.values:  # slide: keep the newest values
            keep = self.values - n
            self._buffer[:keep] = self._buffer[self._filled - keep : self._filled]
            self._filled = keep
        self._buffer[self._filled : self._filled + n] = flat
        self._filled += n
        self._since += n
        if self._filled == self.values and self._since >= self.hop:
            self._since = 0
            window = self._buffer.copy()
            if self.hop >= self.values:
                self._filled = 0
            return window
        return None
