"""OpenCV, for the parts of the agent that handle frames: imported only when frames flow.

A sensor agent never imports it (it costs tens of megabytes of memory and the largest part of
the install); a device reading cameras or video installs the `camera` extra
(`pip install 'litefleet[camera]'`). Without it, a frame source or an image model is refused
with `OpenCVMissing`, a sentence naming the extra.
"""

from __future__ import annotations

from types import ModuleType

__all__ = ["CAMERA_EXTRA", "FRAME_SOURCES", "OpenCVMissing", "gives_frames", "opencv"]

CAMERA_EXTRA = "litefleet[camera]"
FRAME_SOURCES = ("camera:", "/dev/video", "file://", "rtsp://", "http://", "https://",
                 "images://", "synthetic:image")


class OpenCVMissing(RuntimeError):
    """Frames to read or prepare, and no OpenCV in this install."""


def gives_frames(uri: str) -> bool:
    """The source URI delivers images (cameras, video, image folders), not sensor samples."""
    return uri.startswith(FRAME_SOURCES)


def opencv(what: str = "frames") -> ModuleType:
    """The `cv2` module; OpenCVMissing (naming the extra) when it is not installed."""
    try:
        import cv2
    except ImportError as e:
        raise OpenCVMissing(
            f"{what} need OpenCV, which this install lacks: install the camera extra "
            f"(pip install '{CAMERA_EXTRA}')") from e
    return cv2
