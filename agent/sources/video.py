"""OpenCV `VideoCapture` sources: cameras, video files and RTSP/HTTP streams."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import cv2
import numpy as np

from agent.sources.base import Source, SourceDown, SourceEnded

logger = logging.getLogger(__name__)

__all__ = ["VideoSource"]

OPEN_TIMEOUT_MS = 10_000
READ_TIMEOUT_MS = 5_000
DECODE_THREADS = 1  # the decoder shares the device with the interpreter: one core, not all


class VideoSource(Source):
    """A camera index, a device or file path, or a stream URL.

    Files (`live=False`) deliver every frame and end, as fast as they decode or, with `fps`,
    paced like a camera (for demos and soak tests); cameras and streams (`live=True`) are read
    as fast as they produce, and a failed read is a disconnect.
    """

    kind = "image"

    def __init__(self, target: str | int, live: bool, width: int | None = None,
                 height: int | None = None, fps: int | None = None) -> None:
        self.target = target
        self.live = live
        self.size = (width, height)
        self.fps = fps
        self._cap: cv2.VideoCapture | None = None
        self._next_due = 0.0

    def describe(self) -> str:
        return f"video {self.target}"

    def open(self) -> None:
        target = self.target
        if isinstance(target, str) and "://" not in target and not os.path.exists(target):
            raise SourceDown(f"{target} does not exist")
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS,
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS,
                  cv2.CAP_PROP_N_THREADS, DECODE_THREADS]
        cap = cv2.VideoCapture(target, cv2.CAP_ANY, params)
        if not cap.isOpened():
            cap.release()
            raise SourceDown(f"cannot open {target}")
        if self.live and (isinstance(target, int) or str(target).startswith("/dev/")):
            width, height = self.size
            if width and height:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
            if self.fps:
                cap.set(cv2.CAP_PROP_FPS, self.fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not a backlog
        self._cap = cap
        logger.info("opened %s", self.describe())

    def read(self, timeout: float) -> np.ndarray | None:
        cap = self._cap
        if cap is None:
            raise SourceDown("not open")
        if self.fps and not self.live:
            wait = self._next_due - time.monotonic()
            if wait > 0:
                time.sleep(min(wait, timeout))
            self._next_due = max(self._next_due, time.monotonic() - 1.0) + 1.0 / self.fps
        ok, frame = cap.read()
        if not ok or frame is None:
            if self.live:
                raise SourceDown("no frame (disconnected or stalled)")
            raise SourceEnded(f"end of {self.target}")
        return frame

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def camera_target(uri: str) -> str | int:
    """`camera:0` -> 0; `camera:/dev/video2` or `/dev/video2` -> the path."""
    rest = uri.removeprefix("camera:")
    if rest.isdigit():
        return int(rest)
    return str(Path(rest))
