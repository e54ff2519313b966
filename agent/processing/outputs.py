"""The postprocessing thread: model outputs become a summary and inference events, off the loop.

The inference thread only appends `(postprocess, outputs)` to a bounded queue (`put`, no lock
and no wake-up). This thread drains it every `interval_s`, interpreting runs of outputs from the
same model in one vectorised batch, so it holds the GIL briefly and rarely; the capture and
inference threads need it between their native calls.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from agent.processing.postprocess import Interpretation, OutputSummary, Postprocess

logger = logging.getLogger(__name__)

__all__ = ["EVENT_MIN_INTERVAL_S", "OutputStream"]

INTERVAL_S = 0.02  # the queue is drained this often
BATCH = 64  # outputs interpreted in one go
EVENT_MIN_INTERVAL_S = 1.0  # at most one inference event per second


class OutputStream:
    """Outputs in, a bounded summary and rate-limited events out (`emit(kind, detail)`)."""

    def __init__(self, kind: str, capacity: int, stop: threading.Event,
                 emit: Callable[[str, dict[str, Any]], None],
                 interval_s: float = INTERVAL_S) -> None:
        self.capacity = capacity
        self.dropped = 0  # outputs that found the queue full
        self.events = False  # set when someone listens: events are worked out only then
        self._queue: deque[tuple[Postprocess, list[np.ndarray]]] = deque()
        self._summary = OutputSummary(kind)
        self._lock = threading.Lock()
        self._stop = stop
        self._emit = emit
        self._interval_s = interval_s
        self._last_event: tuple[float, Any] = (0.0, None)
        self._thread = threading.Thread(target=self._run, name="postprocess", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def put(self, post: Postprocess, outputs: list[np.ndarray]) -> None:
        """From the inference thread: queue one frame's outputs (dropped and counted if full)."""
        if len(self._queue) < self.capacity:
            self._queue.append((post, outputs))
        else:
            self.dropped += 1

    def summary(self, reset: bool = False) -> dict[str, Any]:
        with self._lock:
            return self._summary.take() if reset else self._summary.peek()

    def use(self, kind: str) -> None:
        """A model with another kind of output is served: summarise that kind from now on."""
        with self._lock:
            if self._summary.kind != kind:
                self._summary = OutputSummary(kind)

    def _run(self) -> None:
        queue = self._queue
        while not self._stop.wait(self._interval_s):
            while queue:
                post, outputs = queue.popleft()
                batch = [outputs]
                while queue and queue[0][0] is post and len(batch) < BATCH:
                    batch.append(queue.popleft()[1])
                results = _interpret(post, batch)
                with self._lock:
                    for result in results:
                        self._summary.add(result)
                if self.events:
                    for result in results:
                        self._maybe_event(post, result)

    def _maybe_event(self, post: Postprocess, result: Interpretation) -> None:
        detail: dict[str, Any] | None = None
        if result.top and result.top[0][2] >= post.threshold:
            cls, label, score = result.top[0]
            detail = {"class": cls, "label": label, "score": round(score, 4)}
            key: Any = label
        elif result.detections:
            detail = {"detections": result.detections}
            key = tuple(sorted({d["label"] for d in result.detections}))
        if detail is None:
            return
        now = time.monotonic()
        last_time, last_key = self._last_event
        if key == last_key or now - last_time < EVENT_MIN_INTERVAL_S:
            return
        self._last_event = (now, key)
        self._emit("inference", detail)


def _interpret(post: Postprocess, batch: list[list[np.ndarray]]) -> list[Interpretation]:
    try:
        return post.batch(batch)
    except Exception:
        pass  # one bad output must not cost the others: interpret them one by one
    results = []
    for outputs in batch:
        try:
            results.append(post(outputs))
        except Exception:
            logger.exception("postprocessing failed")
    return results
