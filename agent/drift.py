"""Drift on the device: the live inputs and outputs against the release's reference profile.

The inference thread only hands a frame over (`observe`: a time check and, a few times a
second at most, one append to a bounded deque; no copy, no numpy). A `drift` thread takes the
frames, computes their features (`shared.features`) and keeps, per feature, a rolling window of
the last `window` frames' histograms (a fixed ring: bounded memory). The score of a feature is
the population stability index of the window's histogram against the reference's; the drift
score is the worst feature's. Above the reference's threshold, `on_drift` is called at most
once per `event_interval_s`.
"""

from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.references import ReferenceBook
from shared.documents import IOSignature
from shared.features import FeatureExtractor, fractions, psi
from shared.messages import DriftSummary
from shared.reference import SCALE, ReferenceProfile

__all__ = ["DriftMonitor", "DriftOptions"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DriftOptions:
    enabled: bool = True
    window: int = 300  # sampled frames in the rolling window
    min_samples: int = 100  # no score before the window holds this many (PSI of fewer is noise)
    sample_hz: float = 5.0  # frames handed to the drift thread per second, at most
    event_interval_s: float = 3600.0  # at most one drift event this often
    pending: int = 4  # frames waiting for the drift thread; older ones are dropped
    score_interval_s: float = 1.0  # the scores are recomputed at most this often


class _Window:
    """The rolling histograms of one model's features against one reference.

    A feature with one value per frame (top class, top score) keeps each frame's bin index in
    a ring and its counts; a feature with many (an input channel) keeps each frame's shares.
    """

    def __init__(
        self, sha256: str, reference: ReferenceProfile, signature: IOSignature, size: int
    ) -> None:
        self.sha256 = sha256
        self.reference = reference
        self.extractor = FeatureExtractor(signature)
        names = self.extractor.names
        if tuple(f.name for f in reference.features) != names:
            raise ValueError(f"the reference profile's features are not {', '.join(names)}")
        self.edges = [np.asarray(f.edges, dtype=np.float64) / SCALE for f in reference.features]
        self.edge_lists = [e.tolist() for e in self.edges]
        self.expected = [
            np.asarray(f.counts, dtype=np.float64) / sum(f.counts) for f in reference.features
        ]
        self.single = [not name.startswith("input.") for name in names]
        # float32 shares: window x bins x 4 bytes (at most 300 x MAX_BINS x 4 = 2.4 MB)
        self.ring = [
            np.zeros((size if not one else 1, len(e) + 1), dtype=np.float32)
            for e, one in zip(self.edges, self.single, strict=True)
        ]
        self.bins = [[-1] * size if one else [] for one in self.single]
        self.sums = [np.zeros(len(e) + 1) for e in self.edges]
        self.size = size
        self.count = 0  # frames added in all

    def add(self, inputs: list[np.ndarray], outputs: list[np.ndarray]) -> None:
        slot = self.count % self.size
        for k, values in enumerate(self.extractor.frame(inputs, outputs)):
            sums = self.sums[k]
            if self.single[k]:
                index = bisect_right(self.edge_lists[k], float(values[0]))
                old = self.bins[k][slot]
                if old >= 0:
                    sums[old] -= 1.0
                sums[index] += 1.0
                self.bins[k][slot] = index
            else:
                ring = self.ring[k]
                sums -= ring[slot]
                ring[slot] = fractions(values, self.edges[k])
                sums += ring[slot]
        self.count += 1

    def scores(self) -> dict[str, float]:
        n = min(self.count, self.size)
        return {
            name: psi(np.maximum(s, 0.0) / n, expected)
            for name, s, expected in zip(
                self.extractor.names, self.sums, self.expected, strict=True
            )
        }


class DriftMonitor:
    def __init__(
        self,
        references: ReferenceBook,
        signature_of: Callable[[str], IOSignature | None],
        stop: threading.Event,
        options: DriftOptions = DriftOptions(),
        on_drift: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.options = options
        self._references = references
        self._signature_of = signature_of
        self._stop = stop
        self._on_drift = on_drift
        self._interval = 1.0 / options.sample_hz if options.sample_hz > 0 else float("inf")
        self._next = 0.0
        self._pending: deque[tuple[str, list[np.ndarray], list[np.ndarray]]] = deque(
            maxlen=options.pending
        )
        self._wake = threading.Event()
        self._window: _Window | None = None
        self._skipped: str | None = None  # a model with no usable reference
        self._last_event = float("-inf")
        self._scored_at = float("-inf")
        self.summary: DriftSummary | None = None
        self.scores: dict[str, float] = {}
        self._thread = threading.Thread(target=self._run, name="drift", daemon=True)

    # -- the inference thread ---------------------------------------------------------------

    def observe(self, result: Any) -> None:
        """Loop listener: at most `sample_hz` frames a second go to the drift thread."""
        if result.ts < self._next or not result.ok:
            return
        self._next = result.ts + self._interval
        self._pending.append((result.model_sha256, result.inputs, result.outputs))
        self._wake.set()

    # -- the drift thread -------------------------------------------------------------------

    def start(self) -> None:
        if self.options.enabled:
            self._thread.start()

    def join(self, timeout: float = 2.0) -> None:
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            try:
                self.process()
            except Exception:
                log.exception("drift measurement failed")

    def process(self) -> int:
        """Take the frames handed over so far; return how many were measured."""
        done = 0
        while self._pending:
            sha256, inputs, outputs = self._pending.popleft()
            window = self._window_for(sha256)
            if window is None:
                continue
            window.add(inputs, outputs)
            done += 1
        now = time.monotonic()
        if done and now - self._scored_at >= self.options.score_interval_s:
            self._scored_at = now
            self._score()
        return done

    def _window_for(self, sha256: str) -> _Window | None:
        window = self._window
        if window is not None and window.sha256 == sha256:
            return window
        if self._skipped == sha256:
            return None
        reference = self._references.get(sha256)
        signature = self._signature_of(sha256)
        if reference is None or signature is None:
            self._skipped, self._window, self.summary = sha256, None, None
            log.info("model %s has no reference profile: drift is not measured", sha256[:12])
            return None
        try:
            self._window = _Window(sha256, reference, signature, self.options.window)
        except ValueError as e:
            log.warning("model %s: %s; drift is not measured", sha256[:12], e)
            self._skipped, self._window, self.summary = sha256, None, None
            return None
        self.summary = None
        log.info(
            "measuring drift of model %s against its reference profile (%d features)",
            sha256[:12],
            len(reference.features),
        )
        return self._window

    def _score(self) -> None:
        window = self._window
        if window is None or window.count < self.options.min_samples:
            return
        scores = window.scores()
        worst = max(scores, key=lambda k: scores[k])
        threshold = window.reference.drift_threshold
        summary = DriftSummary(
            score=round(scores[worst], 4),
            feature=worst,
            threshold=threshold,
            samples=min(window.count, window.size),
        )
        self.scores, self.summary = scores, summary
        now = time.monotonic()
        if summary.score > threshold and now - self._last_event >= self.options.event_interval_s:
            self._last_event = now
            log.warning(
                "drift %.3f over the threshold %.3f (worst feature %s)",
                summary.score,
                threshold,
                worst,
            )
            if self._on_drift is not None:
                self._on_drift(
                    {
                        "score": summary.score,
                        "feature": worst,
                        "threshold": threshold,
                        "samples": summary.samples,
                        "model_sha256": window.sha256,
                    }
                )
