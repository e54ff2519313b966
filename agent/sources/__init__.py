"""Frame and sample sources, named by URI (see `agent.config.SOURCE_SCHEMES`).

    camera:0 | camera:/dev/video2 | /dev/video0      OpenCV camera (live)
    file:///srv/video.mp4[?fps=N]                     video file (every frame; ?fps paces playback)
    rtsp://... | http://... | https://...             network stream (live)
    images:///srv/frames                              image folder (every image)
    sensor+csv:///path                                CSV file (every sample) or FIFO (live)
    sensor+serial:///dev/ttyUSB0?baud=115200          serial / character device (live)
    synthetic:image[?fps=N] | synthetic:sensor[?rate=N]
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from agent.sources.base import BadSample, FrameNeed, Source, SourceDown, SourceEnded
from agent.sources.capture import Capture, Stage
from agent.sources.feed import Feed, Frame
from agent.sources.images import ImageFolder
from agent.sources.sensor import BAUDS, LineSource, parse_sample
from agent.sources.synthetic import SyntheticImage, SyntheticSensor
from agent.sources.video import VideoSource, camera_target
from shared.profile import CameraDefaults

__all__ = [
    "BadSample",
    "Capture",
    "Feed",
    "Frame",
    "FrameNeed",
    "ImageFolder",
    "LineSource",
    "Source",
    "SourceDown",
    "SourceEnded",
    "Stage",
    "SyntheticImage",
    "SyntheticSensor",
    "VideoSource",
    "open_source",
    "parse_sample",
]


def _path(uri: str, scheme: str) -> Path:
    rest = uri[len(scheme):]
    return Path(unquote(urlsplit("file://" + rest).path if rest.startswith("/") else rest))


def _number(query: dict[str, list[str]], key: str) -> float | None:
    if key not in query:
        return None
    try:
        value = float(query[key][0])
    except ValueError as e:
        raise ValueError(f"{key}={query[key][0]!r} is not a number") from e
    if value <= 0:
        raise ValueError(f"{key} must be positive")
    return value


def open_source(uri: str, camera: CameraDefaults | None = None,
                sensor_channels: int = 3) -> Source:
    """The source a URI names (not opened yet). ValueError for a URI it does not understand."""
    camera = camera or CameraDefaults()
    split = urlsplit(uri)
    query = parse_qs(split.query)
    if uri.startswith("camera:") or uri.startswith("/dev/video"):
        return VideoSource(camera_target(uri), live=True, width=camera.width,
                           height=camera.height, fps=camera.fps)
    if uri.startswith("file://"):
        pace = _number(query, "fps")
        return VideoSource(str(_path(uri.split("?", 1)[0], "file://")), live=False,
                           fps=int(pace) if pace else None)
    if uri.startswith(("rtsp://", "http://", "https://")):
        return VideoSource(uri, live=True)
    if uri.startswith("images://"):
        return ImageFolder(_path(uri, "images://"))
    if uri.startswith("sensor+csv://"):
        return LineSource(Path(unquote(split.path)))
    if uri.startswith("sensor+serial://"):
        baud = _number(query, "baud")
        if baud is not None and int(baud) not in BAUDS:
            raise ValueError(f"baud {int(baud)} is not one of {sorted(BAUDS)}")
        return LineSource(Path(unquote(split.path)), serial=True,
                          baud=int(baud) if baud is not None else None)
    if uri.startswith("synthetic:image"):
        return SyntheticImage(camera.width, camera.height, fps=_number(query, "fps"))
    if uri.startswith("synthetic:sensor"):
        return SyntheticSensor(sensor_channels, rate=_number(query, "rate"))
    raise ValueError(f"{uri!r} is not a source URI this agent knows")
