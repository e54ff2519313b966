"""The capture thread: reads a source, prepares model inputs, hands frames to the loop.

It owns the source's life: open, read, reconnect with capped exponential backoff, and a
status string for telemetry ("starting", "up", "down: <reason>", "restarting", "ended").
`restart` (the operator's `restart-source` command) closes and reopens the source at once.
Preprocessing runs here, off the inference thread; the inference thread only invokes. Nothing
a source does (missing device, disconnect, bad line, exception) ends the thread before `stop`
is set.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from agent.processing.preprocess import InputMismatch
from agent.processing.window import Windower
from agent.sources.base import BadSample, FrameNeed, Source, SourceDown, SourceEnded
from agent.sources.feed import Feed, Frame

logger = logging.getLogger(__name__)

__all__ = ["Capture", "Stage"]

READ_TIMEOUT_S = 0.5
BACKOFF_START_S = 0.25
STALL_S = 15.0  # a live source with no item for this long is reconnected


class _Restart(Exception):
    """Raised in the read loop when a restart was requested."""


@dataclass(frozen=True, eq=False)
class Stage:
    """How raw items become one model's input: a windower (sensors) and a preprocessing step."""

    prep: Callable[[np.ndarray], list[np.ndarray]]
    windower: Windower | None = None
    geometry: tuple[int, ...] = ()  # two stages with the same geometry share a window in flight
    need: FrameNeed | None = None  # image stages: how much of a frame `prep` uses


class Capture:
    def __init__(
        self,
        source: Source,
        stage: Stage,
        feed: Feed,
        stop: threading.Event,
        reconnect_max_s: float = 30.0,
        replay: bool = False,
        on_status: Callable[[str], None] | None = None,
    ) -> None:
        self.source = source
        self.stage = stage
        source.want(stage.need)
        self.feed = feed
        self.stop = stop
        self.reconnect_max_s = reconnect_max_s
        self.replay = replay  # a file source starts again at its end
        self.on_status = on_status
        self.status = "starting"
        self.frames = 0  # items handed to the feed
        self.errors = 0  # bad samples, unreadable images, preprocessing failures
        self.reconnects = 0
        self.restarts = 0  # restarts requested with `restart`
        self._restart = threading.Event()
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def restart(self) -> None:
        """Close the source and open it again, without backoff (any thread)."""
        self._restart.set()

    def set_stage(self, stage: Stage) -> Stage:
        """Prepare items for another model from now on (keeps a partial window if it fits).

        Returns the stage frames will carry from now on (compare it by identity).
        """
        if (
            stage.windower is not None
            and self.stage.windower is not None
            and stage.geometry == self.stage.geometry
        ):
            stage = Stage(stage.prep, self.stage.windower, stage.geometry, stage.need)
        self.source.want(stage.need)
        self.stage = stage
        return stage

    def _set_status(self, status: str) -> None:
        if status != self.status:
            level = logging.WARNING if status.startswith("down") else logging.INFO
            logger.log(level, "source %s: %s", self.source.describe(), status)
            self.status = status
            if self.on_status is not None:
                try:
                    self.on_status(status)
                except Exception:
                    logger.exception("source status listener failed")

    def _run(self) -> None:
        attempt = 0
        while not self.stop.is_set():
            try:
                self.source.open()
            except SourceDown as e:
                self._set_status(f"down: {e}")
                attempt = self._backoff(attempt)
                continue
            except Exception as e:
                logger.exception("source %s failed to open", self.source.describe())
                self._set_status(f"down: {e}")
                attempt = self._backoff(attempt)
                continue
            self._set_status("up")
            self.feed.restart(self.source.live)
            problem: Exception | None = None
            delivered = self.frames
            try:
                self._pump()
            except _Restart:
                self._close()
                self.restarts += 1
                self._set_status("restarting")
                continue
            except (SourceEnded, SourceDown) as e:
                problem = e
            except Exception as e:  # a source bug must not end capture for good
                logger.exception("source %s failed", self.source.describe())
                problem = e
            self._close()  # before waiting: a pipe writer must not talk to a stale reader
            if self.frames > delivered:
                attempt = 0  # it worked for a while: start the backoff afresh
            if isinstance(problem, SourceEnded):
                if not self.source.live and not self.replay:
                    self._set_status("ended")
                    self.feed.finish()
                    return
                if self.source.live:
                    self._set_status("down: ended")
                    attempt = self._backoff(attempt)
            elif problem is not None:
                self._set_status(f"down: {problem}")
                attempt = self._backoff(attempt)
        self._close()

    def _close(self) -> None:
        try:
            self.source.close()
        except Exception:
            logger.exception("closing source %s failed", self.source.describe())

    def _backoff(self, attempt: int) -> int:
        self.reconnects += 1
        delay = min(self.reconnect_max_s, BACKOFF_START_S * (2 ** min(attempt, 16)))
        self.stop.wait(delay)
        return attempt + 1

    def _pump(self) -> None:
        source, stop = self.source, self.stop
        last = time.monotonic()
        while not stop.is_set():
            if self._restart.is_set():
                self._restart.clear()
                raise _Restart
            try:
                raw = source.read(READ_TIMEOUT_S)
            except BadSample as e:
                self.errors += 1
                logger.debug("bad item from %s: %s", source.describe(), e)
                continue
            now = time.monotonic()
            if raw is None:
                if source.live and now - last > STALL_S:
                    raise SourceDown(f"stalled: nothing for {STALL_S:.0f} s")
                continue
            last = now
            stage = self.stage
            if stage.windower is not None:
                try:
                    window = stage.windower.add(raw)
                except InputMismatch as e:
                    self.errors += 1
                    logger.debug("sample does not fit the model: %s", e)
                    continue
                if window is None:
                    continue
                raw = window
            try:
                inputs = stage.prep(raw)
            except (InputMismatch, ValueError) as e:
                self.errors += 1
                logger.debug("item does not fit the model: %s", e)
                continue
            frame = Frame(self.frames, now, raw, inputs, stage)
            if not self.feed.put(frame, stop):
                return
            self.frames += 1
