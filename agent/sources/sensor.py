"""Sensor sources: lines of numbers from a CSV file, a pipe or a serial/character device.

One sample per line, values separated by commas (or spaces). A first line that is not numbers is
a header. Any later line that does not parse, or is longer than `MAX_LINE_BYTES`, is a bad
sample: counted, skipped, and the stream goes on.

Regular files deliver every sample and end (paced to `rate` samples a second when given). Pipes and devices are live: when the writer goes
away the source is down and the capture thread reopens it.
"""

from __future__ import annotations

import os
import select
import stat
import termios
import tty
from pathlib import Path

import numpy as np

from agent.sources.base import BadSample, Pacer, Source, SourceDown, SourceEnded

__all__ = ["LineSource", "parse_sample"]

MAX_LINE_BYTES = 4096
MAX_VALUES = 1024
BAUDS = {
    9600: termios.B9600,
    19200: termios.B19200,
    38400: termios.B38400,
    57600: termios.B57600,
    115200: termios.B115200,
    230400: termios.B230400,
}


def parse_sample(line: bytes) -> np.ndarray:
    """`b"0.1,0.2,0.3"` -> float32 array; BadSample when it is not a row of numbers."""
    text = line.decode("ascii", errors="replace").strip().replace(",", " ")
    parts = text.split()
    if not parts or len(parts) > MAX_VALUES:
        raise BadSample(f"{len(parts)} values on a line")
    try:
        values = np.array([float(p) for p in parts], dtype=np.float32)
    except ValueError as e:
        raise BadSample(f"not a row of numbers: {text[:40]!r}") from e
    if not np.isfinite(values).all():
        raise BadSample(f"non-finite value: {text[:40]!r}")
    return values


class LineSource(Source):
    """`sensor+csv:///path` (file or FIFO) or `sensor+serial:///dev/ttyX?baud=115200`."""

    kind = "sensor"

    def __init__(
        self, path: Path, serial: bool = False, baud: int | None = None, rate: float | None = None
    ) -> None:
        self.path = path
        self._pace = Pacer(rate)  # regular files only: a pipe or device has its own pace
        self.serial = serial
        self.baud = baud
        self.live = serial
        self._fd: int | None = None
        self._pending = b""
        self._discarding = False
        self._lines = 0
        self._checked_live = False

    def describe(self) -> str:
        return f"{'serial' if self.serial else 'csv'} {self.path}"

    @property
    def pace(self) -> float | None:
        return None if self.live else self._pace.rate

    def open(self) -> None:
        flags = os.O_RDONLY | os.O_NONBLOCK | (os.O_NOCTTY if self.serial else 0)
        try:
            fd = os.open(self.path, flags)
        except OSError as e:
            raise SourceDown(f"cannot open {self.path}: {e.strerror}") from e
        mode = os.fstat(fd).st_mode
        self.live = self.serial or stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)
        if os.isatty(fd):
            tty.setraw(fd)
            if self.baud is not None:
                attrs = termios.tcgetattr(fd)
                attrs[4] = attrs[5] = BAUDS[self.baud]
                termios.tcsetattr(fd, termios.TCSANOW, attrs)
        self._fd, self._pending, self._discarding, self._lines = fd, b"", False, 0

    def read(self, timeout: float) -> np.ndarray | None:
        if not self.live and not self._pace.wait(timeout):
            return None
        line = self._line(timeout)
        if line is None:
            return None
        self._lines += 1
        try:
            return parse_sample(line)
        except BadSample:
            if self._lines == 1:
                return None  # a header
            raise

    def _line(self, timeout: float) -> bytes | None:
        while True:
            cut = self._pending.find(b"\n")
            if cut >= 0:
                line, self._pending = self._pending[:cut], self._pending[cut + 1 :]
                if self._discarding:
                    self._discarding = False
                    raise BadSample(f"a line longer than {MAX_LINE_BYTES} bytes")
                if line.strip():
                    return line
                continue
            if len(self._pending) > MAX_LINE_BYTES:
                self._pending, self._discarding = b"", True
            chunk = self._chunk(timeout)
            if chunk is None:
                return None
            if chunk == b"":
                if self._pending and not self.live:
                    line, self._pending = self._pending, b""
                    return line
                raise (
                    SourceDown("writer closed") if self.live else SourceEnded(f"end of {self.path}")
                )
            self._pending += chunk

    def _chunk(self, timeout: float) -> bytes | None:
        fd = self._fd
        if fd is None:
            raise SourceDown("not open")
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            return None
        try:
            return os.read(fd, 65536)
        except BlockingIOError:
            return None
        except OSError as e:  # EIO: the other end of a pty or a USB adapter went away
            raise SourceDown(f"read failed: {e.strerror}") from e

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
