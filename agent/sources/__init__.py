"""Frame and sample sources, named by URI (see `agent.config.SOURCE_SCHEMES`).

    camera:0 | camera:/dev/video2 | /dev/video0      OpenCV camera (live)
    file:///srv/video.mp4[?fps=N]                     video file (every frame)
    rtsp://... | http://... | https://...             network stream (live)
    images:///srv/frames[?fps=N]                      image folder (every image)
    sensor+csv:///path[?rate=N]                       CSV file (every sample) or FIFO (live)
    sensor+serial:///dev/ttyUSB0?baud=115200          serial / character device (live)
    synthetic:image[?fps=N] | synthetic:sensor[?rate=N]

Pacing: files, folders and synthetic sources deliver as fast as they are read unless `?fps=`
(images) or `?rate=` (samples per second) says otherwise. With `paced=True` (what `run` asks
for) they default to the device's pace instead: the profile's camera fps for images,
`SENSOR_RATE_HZ` for samples; `?fps=0` / `?rate=0` asks for no pacing. `bench` stays unpaced.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from agent.opencv import gives_frames, opencv
from agent.sources.base import BadSample, FrameNeed, Source, SourceDown, SourceEnded
from agent.sources.capture import Capture, Stage
from agent.sources.feed import Feed, Frame
from agent.sources.sensor import BAUDS, LineSource, parse_sample
from agent.sources.synthetic import SyntheticImage, SyntheticSensor
from device_profiles.profile import CameraDefaults

if TYPE_CHECKING:  # they import OpenCV: loaded on first use (see __getattr__), never for sensors
    from agent.sources.images import ImageFolder
    from agent.sources.video import VideoSource

SENSOR_RATE_HZ = 100.0  # `run`'s default pace for sensor files and synthetic samples

__all__ = [
    "SENSOR_RATE_HZ",
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


def __getattr__(name: str) -> Any:
    """`VideoSource` and `ImageFolder` import OpenCV: only when someone asks for them."""
    if name == "VideoSource":
        from agent.sources.video import VideoSource

        return VideoSource
    if name == "ImageFolder":
        from agent.sources.images import ImageFolder

        return ImageFolder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _path(uri: str, scheme: str) -> Path:
    rest = uri[len(scheme) :]
    return Path(unquote(urlsplit("file://" + rest).path if rest.startswith("/") else rest))


def _number(query: dict[str, list[str]], key: str, zero: bool = False) -> float | None:
    """`?key=N` as a positive number (or 0 when `zero`); None when absent."""
    if key not in query:
        return None
    try:
        value = float(query[key][0])
    except ValueError as e:
        raise ValueError(f"{key}={query[key][0]!r} is not a number") from e
    if value < 0 or (value == 0 and not zero) or value != value or value == float("inf"):
        raise ValueError(f"{key} must be {'zero or ' if zero else ''}a positive number")
    return value


def open_source(  # noqa: C901 — one branch per URI scheme, each a line; a table would hide the argument checks
    uri: str,
    camera: CameraDefaults | None = None,
    sensor_channels: int = 3,
    paced: bool = False,
) -> Source:
    """The source a URI names (not opened yet). ValueError for a URI it does not understand.

    `paced`: files, folders and synthetic sources without `?fps=`/`?rate=` keep the device's
    pace (camera fps, `SENSOR_RATE_HZ`) rather than run as fast as they are read.
    A camera, video or image source without OpenCV installed: `agent.opencv.OpenCVMissing`.
    """
    camera = camera or CameraDefaults()
    split = urlsplit(uri)
    query = parse_qs(split.query)
    fps = _number(query, "fps", zero=True)
    rate = _number(query, "rate", zero=True)
    if fps is None and paced:
        fps = float(camera.fps)
    if rate is None and paced:
        rate = SENSOR_RATE_HZ
    if gives_frames(uri) and not uri.startswith("synthetic:"):
        opencv(f"the frames of {uri.split('?', 1)[0]}")
        from agent.sources.images import ImageFolder
        from agent.sources.video import VideoSource, camera_target
    if uri.startswith("camera:") or uri.startswith("/dev/video"):
        return VideoSource(
            camera_target(uri), live=True, width=camera.width, height=camera.height, fps=camera.fps
        )
    if uri.startswith("file://"):
        return VideoSource(
            str(_path(uri.split("?", 1)[0], "file://")), live=False, fps=int(fps) if fps else None
        )
    if uri.startswith(("rtsp://", "http://", "https://")):
        return VideoSource(uri, live=True)
    if uri.startswith("images://"):
        return ImageFolder(_path(uri.split("?", 1)[0], "images://"), fps=fps or None)
    if uri.startswith("sensor+csv://"):
        return LineSource(Path(unquote(split.path)), rate=rate or None)
    if uri.startswith("sensor+serial://"):
        baud = _number(query, "baud")
        if baud is not None and int(baud) not in BAUDS:
            raise ValueError(f"baud {int(baud)} is not one of {sorted(BAUDS)}")
        return LineSource(
            Path(unquote(split.path)), serial=True, baud=int(baud) if baud is not None else None
        )
    if uri.startswith("synthetic:image"):
        return SyntheticImage(camera.width, camera.height, fps=fps or None)
    if uri.startswith("synthetic:sensor"):
        return SyntheticSensor(sensor_channels, rate=rate or None)
    raise ValueError(f"{uri!r} is not a source URI this agent knows")
