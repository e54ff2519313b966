"""`images:///dir`: every image in a folder, in name order."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from agent.opencv import opencv
from agent.sources.base import BadSample, Pacer, Source, SourceDown, SourceEnded

opencv("image folders")  # before cv2 loads: quiets its native logging, or names the extra
import cv2  # noqa: E402

__all__ = ["ImageFolder"]

SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"}
MAX_IMAGES = 1_000_000
MAX_IMAGE_BYTES = 64 * 1024 * 1024


class ImageFolder(Source):
    kind = "image"
    live = False

    def __init__(self, folder: Path, fps: float | None = None) -> None:
        self.folder = folder
        self._pace = Pacer(fps)
        self._files: list[Path] = []
        self._next = 0

    def describe(self) -> str:
        return f"images {self.folder}"

    @property
    def pace(self) -> float | None:
        return self._pace.rate

    def open(self) -> None:
        try:
            names = sorted(
                e.name
                for e in os.scandir(self.folder)
                if e.is_file() and Path(e.name).suffix.lower() in SUFFIXES
            )
        except OSError as e:
            raise SourceDown(f"cannot list {self.folder}: {e.strerror}") from e
        self._files = [self.folder / n for n in names[:MAX_IMAGES]]
        self._next = 0

    def read(self, timeout: float) -> np.ndarray | None:
        if not self._pace.wait(timeout):
            return None
        if self._next >= len(self._files):
            raise SourceEnded(f"{len(self._files)} images read")
        path = self._files[self._next]
        self._next += 1
        try:
            if path.stat().st_size > MAX_IMAGE_BYTES:
                raise BadSample(f"{path.name}: larger than {MAX_IMAGE_BYTES} bytes")
        except OSError as e:
            raise BadSample(f"{path.name}: {e.strerror}") from e
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise BadSample(f"{path.name}: not a readable image")
        return image

    def close(self) -> None:
        self._files = []
