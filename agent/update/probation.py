"""Probation: a freshly swapped-in model proves itself on live frames, or is rolled back.

A `Probation` listens to the loop's results (on the inference thread: it only appends to
bounded buffers) and, when `decide()` is called from the updater's periodic tick, applies the
release's `ProbationPolicy`:

- at least `min_inferences` results from the new model, then
- error rate at most `max_error_rate_pct`,
- p95 latency at most `max_latency_ratio_pct` percent of the previous model's p95 (measured on
  the same loop just before the swap; skipped when there is no baseline). A slowdown of less
  than `LATENCY_NOISE_MS` never fails a model: on a busy device, sub-millisecond models see
  that much scheduling jitter, and no operator cares about it,
- with `min_agreement_pct` > 0, top-1 agreement with the previous model on shadow frames: a
  sample of the same inputs is run through the previous model on a worker thread, off the hot
  path, and compared with what the new model answered,
- undecided after `max_duration_s`: fail.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from shared.documents import ProbationPolicy

if TYPE_CHECKING:
    from agent.loop import InferenceResult

__all__ = ["LatencyWindow", "Probation", "Verdict", "top1_of"]

log = logging.getLogger(__name__)

SHADOW_QUEUE = 16  # frames waiting for the previous model; more are not sampled
MIN_SHADOW_COMPARISONS = 10
LATENCY_NOISE_MS = 2.0


class ShadowModel(Protocol):
    def invoke(self, inputs: list[np.ndarray]) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class Verdict:
    passed: bool
    detail: str


def top1_of(outputs: list[np.ndarray]) -> int | None:
    """The arg-max class of the first output, for agreement checks."""
    if not outputs:
        return None
    first = np.asarray(outputs[0]).reshape(-1)
    return int(np.argmax(first)) if first.size else None


def p95(values: list[float]) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), 95)) if values else 0.0


class LatencyWindow:
    """Recent latencies of whatever model the loop runs: the baseline for the next probation."""

    def __init__(self, size: int = 200) -> None:
        self._lock = threading.Lock()
        self._by_model: dict[str, deque[float]] = {}
        self._size = size

    def add(self, sha256: str, latency_ms: float) -> None:
        with self._lock:
            window = self._by_model.get(sha256)
            if window is None:
                self._by_model = {sha256: deque(maxlen=self._size)}  # keep one model only
                window = self._by_model[sha256]
            window.append(latency_ms)

    def p95(self, sha256: str) -> float | None:
        with self._lock:
            values = list(self._by_model.get(sha256, ()))
        return p95(values) if values else None


class Probation:
    def __init__(
        self,
        sha256: str,
        policy: ProbationPolicy,
        baseline_p95_ms: float | None,
        previous: ShadowModel | None,
        shadow_every: int = 4,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sha256 = sha256
        self.policy = policy
        self.baseline_p95_ms = baseline_p95_ms
        self._clock = clock
        self.started = clock()
        self._lock = threading.Lock()
        self.inferences = 0
        self.errors = 0
        self._latencies: deque[float] = deque(maxlen=max(policy.min_inferences, 200))
        self._agree = 0
        self._compared = 0
        self._seen = 0
        self._shadow_every = max(1, shadow_every)
        self._previous = previous if policy.min_agreement_pct > 0 else None
        self._shadow_queue: queue.Queue[tuple[list[np.ndarray], int | None] | None] = queue.Queue(
            SHADOW_QUEUE
        )
        self._shadow: threading.Thread | None = None
        # told (on the shadow thread) of each shadow frame the two models disagree on:
        # (new model's sha256, inputs, new top-1, previous top-1); sample capture keeps some
        self.on_disagreement: (
            Callable[[str, list[np.ndarray], int | None, int | None], None] | None
        ) = None
        if self._previous is not None:
            self._shadow = threading.Thread(
                target=self._shadow_run, name="probation-shadow", daemon=True
            )
            self._shadow.start()

    # called on the inference thread: cheap ------------------------------------------------

    def observe(self, result: InferenceResult) -> None:
        if result.model_sha256 != self.sha256:
            return
        with self._lock:
            self.inferences += 1
            if not result.ok:
                self.errors += 1
                return
            self._latencies.append(float(result.latency_ms))
            self._seen += 1
            sample = self._previous is not None and self._seen % self._shadow_every == 0
        if sample and result.inputs:
            try:
                self._shadow_queue.put_nowait(([np.array(a) for a in result.inputs], result.top1))
            except queue.Full:
                pass  # the shadow worker is busy: skip this frame, never block the loop

    # off the hot path ---------------------------------------------------------------------

    def _shadow_run(self) -> None:
        assert self._previous is not None
        while True:
            item = self._shadow_queue.get()
            if item is None:
                return
            inputs, new_top1 = item
            try:
                old_top1 = top1_of(self._previous.invoke(inputs))
            except Exception as e:  # the previous model closed under us: stop comparing
                log.warning("shadow inference on the previous model failed: %s", e)
                return
            with self._lock:
                self._compared += 1
                self._agree += int(old_top1 == new_top1)
            if old_top1 != new_top1 and self.on_disagreement is not None:
                try:
                    self.on_disagreement(self.sha256, inputs, new_top1, old_top1)
                except Exception:
                    log.exception("disagreement listener failed")

    def stop(self) -> None:
        if self._shadow is not None:
            try:
                self._shadow_queue.put(None, timeout=1.0)
            except queue.Full:
                pass
            self._shadow.join(timeout=5.0)
            self._shadow = None

    def decide(self) -> Verdict | None:
        """A verdict once the evidence is in (or time is up); None while undecided."""
        policy = self.policy
        with self._lock:
            inferences, errors = self.inferences, self.errors
            latencies = list(self._latencies)
            compared, agree = self._compared, self._agree
        elapsed = self._clock() - self.started
        need_compared = MIN_SHADOW_COMPARISONS if self._previous is not None else 0
        if inferences >= policy.min_inferences:
            failures = []
            if errors * 100 > policy.max_error_rate_pct * inferences:
                failures.append(
                    f"error rate {errors * 100 / inferences:.1f}% > "
                    f"{policy.max_error_rate_pct}% ({errors} of {inferences})"
                )
            new_p95 = p95(latencies)
            base = self.baseline_p95_ms
            if (
                base
                and new_p95 * 100 > base * policy.max_latency_ratio_pct
                and new_p95 - base > LATENCY_NOISE_MS
            ):
                failures.append(
                    f"p95 {new_p95:.1f} ms > {policy.max_latency_ratio_pct}% of {base:.1f} ms"
                )
            shadow_done = compared >= need_compared
            if shadow_done and need_compared and agree * 100 < policy.min_agreement_pct * compared:
                failures.append(
                    f"agreement {agree * 100 / compared:.1f}% < "
                    f"{policy.min_agreement_pct}% with the previous model "
                    f"({compared} shadow frames)"
                )
            if failures:  # every criterion that failed, so the operator sees the whole story
                return Verdict(False, "; ".join(failures))
            if shadow_done:
                baseline = f"{base:.1f} ms" if base else "no baseline"
                return Verdict(
                    True,
                    f"{inferences} inferences, {errors} errors, p95 "
                    f"{new_p95:.1f} ms (previous {baseline})"
                    + (f", agreement {agree}/{compared}" if need_compared else ""),
                )
        if elapsed > policy.max_duration_s:
            return Verdict(
                False,
                f"undecided after {policy.max_duration_s} s: {inferences} of "
                f"{policy.min_inferences} inferences, {compared} shadow frames",
            )
        return None
