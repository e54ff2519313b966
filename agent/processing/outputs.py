"""The postprocessing thread: model outputs become a summary and inference events, off the loop.

The inference thread only appends `(postprocess, outputs)` to a queue bounded in count and
bytes (`put`, no lock and no wake-up). This thread drains it every `interval_s`, interpreting
runs of outputs from the same model in one vectorised batch, so it holds the GIL briefly and
rarely; the capture and inference threads need it between their native calls. A classifier's
batch becomes two arrays (best class, its score) that the summary counts as they are: building
one Python object per frame held the GIL for about half a millisecond per 64 frames, a stall
for a loop whose frames take a third of that.
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
from shared.fields import FreeObject

logger = logging.getLogger(__name__)

__all__ = ["EVENT_MIN_INTERVAL_S", "OutputStream"]

INTERVAL_S = 0.02  # the queue is drained this often
BATCH = 64  # outputs interpreted in one go
MAX_QUEUED_BYTES = 64 * 2**20  # output tensors waiting, whatever their count (feature maps)
EVENT_MIN_INTERVAL_S = 1.0  # at most one inference event per second


class OutputStream:
    """Outputs in, a bounded summary and rate-limited events out (`emit(kind, detail)`)."""

    def __init__(
        self,
        kind: str,
        capacity: int,
        stop: threading.Event,
        emit: Callable[[str, FreeObject], None],
        interval_s: float = INTERVAL_S,
        max_bytes: int = MAX_QUEUED_BYTES,
    ) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.dropped = 0  # outputs that found the queue full
        self.events = False  # set when someone listens: events are worked out only then
        self._queue: deque[tuple[Postprocess, list[np.ndarray], int]] = deque()
        # bytes queued = in - out; each counter has one writer, so no lock is needed
        self._bytes_in = 0  # the inference thread's
        self._bytes_out = 0  # this thread's
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
        size = 0
        for out in outputs:
            size += out.nbytes
        if (
            len(self._queue) < self.capacity
            and self._bytes_in - self._bytes_out + size <= self.max_bytes
        ):
            self._bytes_in += size
            self._queue.append((post, outputs, size))
        else:
            self.dropped += 1

    @property
    def queued_bytes(self) -> int:
        return self._bytes_in - self._bytes_out

    def summary(self, reset: bool = False) -> FreeObject:
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
                post, outputs, size = queue.popleft()
                batch = [outputs]
                while queue and queue[0][0] is post and len(batch) < BATCH:
                    _, more, more_size = queue.popleft()
                    batch.append(more)
                    size += more_size
                self._bytes_out += size
                if post.kind == "classification" and self._absorb_top1(post, batch):
                    continue
                results = _interpret(post, batch)
                with self._lock:
                    for result in results:
                        self._summary.add(result)
                if self.events:
                    for result in results:
                        self._maybe_event(post, result)

    def _absorb_top1(self, post: Postprocess, batch: list[list[np.ndarray]]) -> bool:
        """A classifier's batch as two arrays (False if it does not fit: frame by frame then)."""
        try:
            classes, scores = post.top1(batch)
        except Exception:
            return False
        with self._lock:
            self._summary.add_top1(classes, scores, post.label)
        if self.events and time.monotonic() - self._last_event[0] >= EVENT_MIN_INTERVAL_S:
            for i in np.flatnonzero(scores >= post.threshold).tolist():
                cls = int(classes[i])
                result = Interpretation(top=[(cls, post.label(cls), float(scores[i]))])
                if self._maybe_event(post, result):
                    break
        return True

    def _maybe_event(self, post: Postprocess, result: Interpretation) -> bool:
        """Emit an event for `result` if it is one and none was emitted lately (True if so)."""
        detail: dict[str, Any] | None = None
        if result.top and result.top[0][2] >= post.threshold:
            cls, label, score = result.top[0]
            detail = {"class": cls, "label": label, "score": round(score, 4)}
            key: Any = label
        elif result.detections:
            detail = {"detections": result.detections}
            key = tuple(sorted({d["label"] for d in result.detections}))
        if detail is None:
            return False
        now = time.monotonic()
        last_time, last_key = self._last_event
        if key == last_key or now - last_time < EVENT_MIN_INTERVAL_S:
            return False
        self._last_event = (now, key)
        self._emit("inference", detail)
        return True


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
