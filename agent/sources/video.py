"""OpenCV `VideoCapture` sources: cameras, video files and RTSP/HTTP streams.

MJPG read through FFmpeg (files, HTTP streams) is taken as JPEG packets and decoded here, at the
smallest scale (1/2, 1/4, 1/8) and in gray when that is all the model's input needs (see
`FrameNeed`): a scaled-down JPEG decode costs a fraction of a full one, and leaves the cores to
the interpreter. Other codecs and cameras are decoded by OpenCV as usual.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from agent.opencv import opencv
from agent.sources.base import BadSample, FrameNeed, Source, SourceDown, SourceEnded

logger = logging.getLogger(__name__)

opencv("video sources")  # before cv2 loads: quiets its native logging, or names the extra
import cv2  # noqa: E402

__all__ = ["VideoSource"]

OPEN_TIMEOUT_MS = 10_000
READ_TIMEOUT_MS = 5_000
DECODE_THREADS = 1  # the decoder shares the device with the interpreter: one core, not all
MJPG = frozenset({"MJPG", "mjpg", "MJPA", "AVRn", "LJPG", "JPGL"})
COLOR_FLAGS = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}
GRAY_FLAGS = {
    1: cv2.IMREAD_GRAYSCALE,
    2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
    4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
    8: cv2.IMREAD_REDUCED_GRAYSCALE_8,
}


def _fourcc(cap: cv2.VideoCapture) -> str:
    code = int(cap.get(cv2.CAP_PROP_FOURCC))
    return bytes((code >> shift) & 0xFF for shift in (0, 8, 16, 24)).decode("latin-1")


class VideoSource(Source):
    """A camera index, a device or file path, or a stream URL.

    Files (`live=False`) deliver every frame and end, as fast as they decode or, with `fps`,
    paced like a camera (for demos and soak tests); cameras and streams (`live=True`) are read
    as fast as they produce, and a failed read is a disconnect.
    """

    kind = "image"

    def __init__(
        self,
        target: str | int,
        live: bool,
        width: int | None = None,
        height: int | None = None,
        fps: int | None = None,
    ) -> None:
        self.target = target
        self.live = live
        self.size = (width, height)
        self.fps = fps
        self._cap: cv2.VideoCapture | None = None
        self._need: FrameNeed | None = None
        self._packets = False  # reading JPEG packets and decoding them here
        self._pending: np.ndarray | None = None  # a packet read (and checked) while opening
        self._size = (0, 0)
        self._decode: tuple[FrameNeed | None, int] = (None, cv2.IMREAD_COLOR)
        self._next_due = 0.0
        self.opens = 0  # a file played in a loop is opened again at each end, not per frame

    def describe(self) -> str:
        return f"video {self.target}"

    @property
    def pace(self) -> float | None:
        return None if self.live else self.fps

    def want(self, need: FrameNeed | None) -> None:
        self._need = need

    @property
    def packets(self) -> bool:
        """True while JPEG packets are decoded here (scaled to the model's need)."""
        return self._packets

    def _capture(self) -> cv2.VideoCapture:
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            OPEN_TIMEOUT_MS,
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            READ_TIMEOUT_MS,
            cv2.CAP_PROP_N_THREADS,
            DECODE_THREADS,
        ]
        cap = cv2.VideoCapture(self.target, cv2.CAP_ANY, params)
        if not cap.isOpened():
            cap.release()
            raise SourceDown(f"cannot open {self.target}")
        return cap

    def _try_packets(self, cap: cv2.VideoCapture) -> bool:
        """MJPG through FFmpeg: switch to packets if the first one decodes as a JPEG."""
        if cap.getBackendName() != "FFMPEG" or _fourcc(cap) not in MJPG:
            return False
        self._size = (
            int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )
        if min(self._size) < 1 or not cap.set(cv2.CAP_PROP_FORMAT, -1):
            return False
        ok, packet = cap.read()
        if not ok or packet is None or cv2.imdecode(packet, cv2.IMREAD_REDUCED_GRAYSCALE_8) is None:
            logger.info("%s: MJPG packets do not decode here; OpenCV decodes them", self.describe())
            return False
        self._pending = packet
        return True

    def open(self) -> None:
        target = self.target
        if isinstance(target, str) and "://" not in target and not os.path.exists(target):
            raise SourceDown(f"{target} does not exist")
        cap = self._capture()
        self._pending = None
        self._packets = self._try_packets(cap)
        if not self._packets and cap.get(cv2.CAP_PROP_FORMAT) == -1:
            cap.release()  # a capture in packet mode cannot go back: open it again
            cap = self._capture()
        if self.live and (isinstance(target, int) or str(target).startswith("/dev/")):
            width, height = self.size
            if width and height:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
            if self.fps:
                cap.set(cv2.CAP_PROP_FPS, self.fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not a backlog
        self._cap = cap
        self.opens += 1
        # once: a file played in a loop opens again at each end, and says so at debug level
        logger.log(
            logging.INFO if self.opens == 1 else logging.DEBUG,
            "opened %s%s",
            self.describe(),
            f" (open {self.opens})" if self.opens > 1 else "",
        )

    def read(self, timeout: float) -> np.ndarray | None:
        cap = self._cap
        if cap is None:
            raise SourceDown("not open")
        if self.fps and not self.live:
            wait = self._next_due - time.monotonic()
            if wait > 0:
                time.sleep(min(wait, timeout))
            self._next_due = max(self._next_due, time.monotonic()) + 1.0 / self.fps
        if self._pending is not None:
            ok, frame = True, self._pending
            self._pending = None
        else:
            ok, frame = cap.read()
        if not ok or frame is None:
            if self.live:
                raise SourceDown("no frame (disconnected or stalled)")
            raise SourceEnded(f"end of {self.target}")
        if self._packets:
            image = cv2.imdecode(frame, self._flag())
            if image is None:
                raise BadSample("a packet that is not a JPEG image")
            return image
        return frame

    def _flag(self) -> int:
        """The imdecode flag for what the model needs (recomputed when the need changes)."""
        need, flag = self._decode
        if need is not self._need:
            need = self._need
            if need is None:
                flag = cv2.IMREAD_COLOR
            else:
                flags = GRAY_FLAGS if need.gray else COLOR_FLAGS
                flag = flags[need.scale(*self._size)]
            self._decode = (need, flag)
        return flag

    def close(self) -> None:
        self._pending = None
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def camera_target(uri: str) -> str | int:
    """`camera:0` -> 0; `camera:/dev/video2` or `/dev/video2` -> the path."""
    rest = uri.removeprefix("camera:")
    if rest.isdigit():
        return int(rest)
    return str(Path(rest))
