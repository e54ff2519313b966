"""OpenCV, for the parts of the agent that handle frames: imported only when frames flow.

A sensor agent never imports it (it costs tens of megabytes of memory and the largest part of
the install); a device reading cameras or video installs the `camera` extra
(`pip install 'litefleet[camera]'`). Without it, a frame source or an image model is refused
with `OpenCVMissing`, a sentence naming the extra.

OpenCV and the FFmpeg inside it write their own messages to stderr, one per failed connect or
bad packet, outside logging (`[tcp @ 0x55...] Connection refused`). They are silenced here
before the first import (OpenCV: errors only; FFmpeg: quiet) and the agent says what happened in
its own lines (`source ...: down: cannot open ...`); one line at start says how to see them.
Variables already in the environment win, so `OPENCV_FFMPEG_LOGLEVEL=24 OPENCV_LOG_LEVEL=INFO`
brings them back for a debugging session.
"""

from __future__ import annotations

import logging
import os
import sys
from types import ModuleType

__all__ = ["CAMERA_EXTRA", "FRAME_SOURCES", "OpenCVMissing", "gives_frames", "opencv"]

log = logging.getLogger(__name__)

CAMERA_EXTRA = "litefleet[camera]"
NATIVE_LOG_ENV = {"OPENCV_LOG_LEVEL": "ERROR", "OPENCV_FFMPEG_LOGLEVEL": "-8"}  # -8: AV_LOG_QUIET
FRAME_SOURCES = (
    "camera:",
    "/dev/video",
    "file://",
    "rtsp://",
    "http://",
    "https://",
    "images://",
    "synthetic:image",
)


class OpenCVMissing(RuntimeError):
    """Frames to read or prepare, and no OpenCV in this install."""


def gives_frames(uri: str) -> bool:
    """The source URI delivers images (cameras, video, image folders), not sensor samples."""
    return uri.startswith(FRAME_SOURCES)


def opencv(what: str = "frames") -> ModuleType:
    """The `cv2` module; OpenCVMissing (naming the extra) when it is not installed."""
    loaded = sys.modules.get("cv2")
    if loaded is not None:
        return loaded
    quiet = {k: v for k, v in NATIVE_LOG_ENV.items() if k not in os.environ}
    os.environ.update(quiet)
    try:
        import cv2
    except ImportError as e:
        raise OpenCVMissing(
            f"{what} need OpenCV, which this install lacks: install the camera extra "
            f"(pip install '{CAMERA_EXTRA}')"
        ) from e
    if quiet:
        log.info(
            "OpenCV %s: its own and FFmpeg's stderr messages are off (set %s to see them)",
            cv2.__version__,
            " ".join(f"{k}=..." for k in quiet),
        )
    return cv2
