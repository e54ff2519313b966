"""The inference loop: capture thread -> inference thread -> postprocessing thread.

The capture thread (`agent.sources.capture`) reads the source and prepares model inputs. The
inference thread sets the input, invokes, reads the output and records metrics; nothing else.
A postprocessing thread (`agent.processing.outputs`) interprets outputs (top-k, detections,
summaries) in batches and raises events.

Hot swap: `swap(model)` hands over a model that is already loaded and warmed up: `load_model`
invoked it once (allocation, XNNPACK's weight packing), off the loop, and `swap` does so on the
caller's thread for a model never invoked. The inference thread then installs it between two
frames: a few reference assignments. Every frame meets exactly one complete model, and `swap`
returns the old one for the caller to close, once the new model has taken its first frame (or
the loop has waited a while for one): the caller's work after a swap stays off that frame. Frames
prepared for the old model are prepared again on the spot when the new model's input differs.

Watchdog: `heartbeat` is the time.monotonic() of the inference thread's latest iteration. It
advances while the loop waits for frames (at most `WAIT_S` apart), so only a stuck loop goes
stale. With LITEFLEET_TEST_STALL_AFTER_FRAMES=N in the environment the inference thread blocks
for real after N frames (used to test the watchdog).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent.config import AgentConfig
from agent.metrics import DEFAULT_WINDOW, LoopMetrics
from agent.processing import (
    InputMismatch,
    OutputStream,
    Postprocess,
    PrepOptions,
    SensorPrep,
    Windower,
    input_kind,
    load_labels,
    prep_for,
)
from agent.runtime.protocol import Model
from agent.sources import Capture, Feed, Frame, FrameNeed, Source, Stage, open_source
from shared.documents import IOSignature
from shared.errors import IOSignatureMismatch
from shared.fields import FreeObject

logger = logging.getLogger(__name__)

__all__ = [
    "InferenceLoop",
    "InferenceResult",
    "LoopOptions",
    "LoopSnapshot",
    "build_loop",
    "stage_for",
]

WAIT_S = 0.5  # longest wait for a frame; the heartbeat advances at least this often
STALL_ENV = "LITEFLEET_TEST_STALL_AFTER_FRAMES"
# The longest a thread busy in Python (telemetry, an update, postprocessing) can keep the
# inference thread waiting for the GIL when an invoke returns (CPython's default is 5 ms).
GIL_SWITCH_S = 0.0005


@dataclass(slots=True)
class InferenceResult:
    model_sha256: str
    ok: bool
    latency_ms: float
    inputs: list[np.ndarray]
    index: int = -1  # the frame's position in its source
    ts: float = 0.0  # time.monotonic() when the inference finished (or failed)
    outputs: list[np.ndarray] | None = None  # None when the inference failed
    classifier: bool = False  # one [1, K] output: `top1` is its argmax
    captured: float = 0.0  # time.monotonic() when the frame was captured

    @property
    def top1(self) -> int | None:
        """The top class of a classifier (computed when asked, off the loop's budget)."""
        if not self.classifier or not self.outputs:
            return None
        return int(np.argmax(self.outputs[0]))


@dataclass(frozen=True)
class LoopSnapshot:
    frames: int
    inferences: int
    errors: int
    dropped_frames: int
    fps: float
    latency_p50_ms: float  # invoke latency of the model being served
    latency_p95_ms: float
    latency_p99_ms: float
    outputs: dict[str, Any]
    source_status: str
    heartbeat: float
    model_sha256: str
    e2e_p50_ms: float = 0.0  # capture to result
    e2e_p95_ms: float = 0.0
    e2e_p99_ms: float = 0.0
    post_dropped: int = 0


@dataclass(frozen=True)
class LoopOptions:
    prep: PrepOptions = field(default_factory=PrepOptions)
    labels: tuple[str, ...] = ()
    top_k: int = 3
    score_threshold: float = 0.5
    buffer_frames: int = 4  # prepared frames waiting for the inference thread (files)
    post_queue: int = 256  # outputs waiting for postprocessing; more are dropped and counted
    recent_inputs: int = 8  # recent real inputs kept for smoke tests and agreement checks
    metrics_window: int = DEFAULT_WINDOW
    reconnect_max_s: float = 30.0
    replay: bool = False  # file sources start again at their end
    sensor_hop: int | None = None  # samples between sensor windows (default: one window)


def stage_for(signature: IOSignature, source_kind: str, options: LoopOptions) -> Stage:
    """The preprocessing one model needs for this kind of source; IOSignatureMismatch if none."""
    try:
        kind = input_kind(signature)
        if kind != source_kind:
            raise InputMismatch(
                f"the source gives {source_kind} data; the model takes {kind} "
                f"input {list(signature.inputs[0].shape)}"
            )
        prep = prep_for(signature, options.prep)
        if isinstance(prep, SensorPrep):
            windower = Windower(prep.values, prep.channels, options.sensor_hop)
            return Stage(prep, windower, (prep.values, prep.channels or 0))
        return Stage(
            prep,
            None,
            signature.inputs[0].shape,
            FrameNeed(prep.width, prep.height, gray=prep.color == "gray"),
        )
    except InputMismatch as e:
        raise IOSignatureMismatch(str(e)) from e


@dataclass
class _Swap:
    model: Model
    stage: Stage
    post: Postprocess
    done: threading.Event = field(default_factory=threading.Event)
    old: Model | None = None


class InferenceLoop:
    def __init__(
        self,
        model: Model,
        source: Source,
        stop: threading.Event,
        options: LoopOptions = LoopOptions(),
    ) -> None:
        self.options = options
        self.stop_event = stop
        self._model = model
        self._source_kind = source.kind
        self._stage = stage_for(model.signature, source.kind, options)
        self._post = self._postprocess(model)
        self._outputs = OutputStream(self._post.kind, options.post_queue, stop, self._emit)
        self.feed = Feed(options.buffer_frames, latest_wins=source.live)
        self.capture = Capture(
            source,
            self._stage,
            self.feed,
            stop,
            options.reconnect_max_s,
            options.replay,
            on_status=self._source_status,
        )
        self.metrics = LoopMetrics(options.metrics_window)
        self.heartbeat = time.monotonic()
        self.handled = 0  # frames the inference thread took from the feed
        self.completed = 0  # and has finished with (inferred, failed or skipped)
        self._recent: deque[list[np.ndarray]] = deque(maxlen=max(1, options.recent_inputs))
        self._listeners: list[Callable[[InferenceResult], None]] = []
        self._event_listeners: list[Callable[[str, FreeObject], None]] = []
        self._pending: _Swap | None = None
        self._installed: _Swap | None = None  # installed, its caller not yet woken
        self._installed_at = (0, 0.0)  # `handled` and time.monotonic() at that install
        self._swap_lock = threading.Lock()
        self._running = False
        stall = os.environ.get(STALL_ENV, "")
        # blocks when it takes frame N + 1, i.e. after N frames
        self._stall_at = int(stall) + 1 if stall.strip().isdigit() else -1
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)

    # -- public surface ---------------------------------------------------------------------

    @property
    def model(self) -> Model:
        return self._model

    def start(self) -> None:
        # OpenCV's own thread pool would compete with the interpreter's threads for the cores;
        # preprocessing runs on the capture thread alone (process-wide setting). A sensor loop
        # never loads OpenCV.
        cv2 = sys.modules.get("cv2")
        if cv2 is not None:
            cv2.setNumThreads(1)
        if sys.getswitchinterval() > GIL_SWITCH_S:  # process-wide too
            sys.setswitchinterval(GIL_SWITCH_S)
        with self._swap_lock:
            self._running = True
        self.capture.start()
        self._thread.start()
        self._outputs.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Set the stop event and wait for the threads (the model stays loaded)."""
        self.stop_event.set()
        self.feed.wake()
        deadline = time.monotonic() + timeout
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._outputs.join(max(0.0, deadline - time.monotonic()))
        self.capture.join(max(0.0, deadline - time.monotonic()))
        with self._swap_lock:
            self._running = False
            pending, self._pending = self._pending, None
        if pending is not None and not self._thread.is_alive():
            self._install(pending)  # a swap that arrived as the loop stopped still completes
            pending.done.set()
        self._announce()

    def swap(self, model: Model, timeout: float = 5.0) -> Model:
        """Serve `model` from the next frame on; return the old model (the caller closes it).

        Raises IOSignatureMismatch when the model cannot take this source's input, and
        TimeoutError when the loop does not reach a frame boundary within `timeout`.
        """
        if model.closed:
            raise ValueError("cannot swap in a closed model")
        stage = self._stage
        if model.signature.inputs != self._model.signature.inputs:
            stage = stage_for(model.signature, self._source_kind, self.options)
        if not model.invoked:  # its first invoke initialises lazily: not on the loop
            model.invoke(model.sample_input())
        post = self._post  # the same outputs (a new version of a model): interpreted alike
        if model.signature.outputs != self._model.signature.outputs:
            post = self._postprocess(model)
        request = _Swap(model, stage, post)
        with self._swap_lock:
            if not self._running or not self._thread.is_alive():
                old = self._install(request)
                request.done.set()
                self._log_swap(request)
                return old
            self._pending = request
        self.feed.wake(producer=False)
        if not request.done.wait(timeout):
            with self._swap_lock:
                if self._pending is request:
                    self._pending = None
                    raise TimeoutError(f"the loop did not reach a frame boundary in {timeout} s")
            # installed, not yet announced: it serves from now on all the same
        self._log_swap(request)
        assert request.old is not None
        return request.old

    @staticmethod
    def _log_swap(request: _Swap) -> None:
        old = request.old.sha256[:12] if request.old is not None else "?"
        logger.info("now serving model %s (was %s)", request.model.sha256[:12], old)

    def snapshot(self, reset_outputs: bool = False) -> LoopSnapshot:
        m = self.metrics
        p50, p95, p99 = m.invoke_ms.percentiles(50, 95, 99)
        e50, e95, e99 = m.e2e_ms.percentiles(50, 95, 99)
        outputs = self._outputs.summary(reset_outputs)
        return LoopSnapshot(
            frames=self.capture.frames,
            inferences=m.inferences,
            errors=m.errors + self.capture.errors,
            dropped_frames=self.feed.dropped,
            fps=m.done.rate(),
            latency_p50_ms=p50,
            latency_p95_ms=p95,
            latency_p99_ms=p99,
            outputs=outputs,
            source_status=self.capture.status,
            heartbeat=self.heartbeat,
            model_sha256=self._model.sha256,
            e2e_p50_ms=e50,
            e2e_p95_ms=e95,
            e2e_p99_ms=e99,
            post_dropped=self._outputs.dropped,
        )

    def recent_inputs(self) -> list[list[np.ndarray]]:
        return list(self._recent)

    def restart_source(self) -> None:
        """Close the source and open it again (the operator's `restart-source`)."""
        self.capture.restart()

    def add_listener(self, fn: Callable[[InferenceResult], None]) -> None:
        """`fn(result)` after every frame, on the inference thread: it must be cheap."""
        self._listeners = [*self._listeners, fn]

    def add_event_listener(self, fn: Callable[[str, FreeObject], None]) -> None:
        """`fn(kind, detail)` for inference events over the threshold and source up/down."""
        self._event_listeners = [*self._event_listeners, fn]
        self._outputs.events = True

    @property
    def finished(self) -> bool:
        """A finite source has ended and every frame was inferred."""
        return (
            self.feed.finished
            and self.capture.status == "ended"
            and self.completed == self.capture.frames
        )

    # -- the inference thread ---------------------------------------------------------------

    def _install(self, request: _Swap) -> Model:
        old = self._model
        # the capture thread may keep a partial sensor window: its stage is the one to compare
        self._stage = self.capture.set_stage(request.stage)
        self._model, self._post = request.model, request.post
        self.metrics.new_model()
        self._outputs.use(request.post.kind)
        request.old = old
        return old

    def _take_swap(self) -> None:
        with self._swap_lock:
            request, self._pending = self._pending, None
        if request is not None:
            self._install(request)
            self._installed = request
            self._installed_at = (self.handled, time.monotonic())

    def _announce_due(self, now: float) -> bool:
        """The new model has taken a frame, or the loop has waited for one a while."""
        handled, at = self._installed_at
        return self.handled > handled or now - at >= WAIT_S / 2

    def _announce(self) -> None:
        """Wake the caller of the swap installed last (after the new model's first frame).

        The woken caller (logging, the updater's next steps) competes for the GIL; waking it
        only once the new model has served a frame keeps that off the first, cache-cold frame.
        """
        request, self._installed = self._installed, None
        if request is not None:
            request.done.set()

    def _inputs(self, frame: Frame) -> list[np.ndarray] | None:
        """Frames prepared for a previous model are prepared again for this one."""
        try:
            return self._stage.prep(frame.raw)
        except (InputMismatch, ValueError) as e:
            logger.warning("frame %d does not fit the new model: %s", frame.index, e)
            self.metrics.errors += 1
            return None

    def _run(self) -> None:
        feed, metrics, stop = self.feed, self.metrics, self.stop_event
        recent, put_outputs = self._recent, self._outputs.put
        monotonic = time.monotonic
        while not stop.is_set():
            self.heartbeat = monotonic()
            if self._installed is not None and self._announce_due(self.heartbeat):
                self._announce()
            if self._pending is not None:
                self._take_swap()
            frame = feed.get(WAIT_S)
            if frame is None:
                continue
            self.handled += 1
            if self.handled == self._stall_at:
                logger.warning(
                    "%s=%d: the inference thread stalls now", STALL_ENV, self._stall_at - 1
                )
                stop.wait()
                break
            try:
                model = self._model
                inputs = frame.inputs if frame.stage is self._stage else self._inputs(frame)
                if inputs is None:
                    continue
                start = monotonic()
                try:
                    outputs = model.invoke(inputs)
                except Exception as e:
                    metrics.errors += 1
                    if metrics.errors <= 10 or metrics.errors % 1000 == 0:
                        logger.warning("inference failed (%d errors so far): %s", metrics.errors, e)
                    self._notify(
                        InferenceResult(model.sha256, False, 0.0, inputs, frame.index, monotonic())
                    )
                    continue
                now = monotonic()
                latency_ms = (now - start) * 1000.0
                metrics.record(latency_ms, (now - frame.ts) * 1000.0, now)
                recent.append(inputs)
                put_outputs(self._post, outputs)
                if self._listeners:
                    self._notify(
                        InferenceResult(
                            model.sha256,
                            True,
                            latency_ms,
                            inputs,
                            frame.index,
                            now,
                            outputs,
                            self._post.kind == "classification",
                            frame.ts,
                        )
                    )
            finally:
                self.completed += 1  # after its result reached the listeners

    def _notify(self, result: InferenceResult) -> None:
        for fn in self._listeners:
            try:
                fn(result)
            except Exception:
                logger.exception("inference listener failed")

    # -- outputs and events -----------------------------------------------------------------

    def _postprocess(self, model: Model) -> Postprocess:
        return Postprocess(
            model.signature,
            list(self.options.labels),
            self.options.top_k,
            self.options.score_threshold,
        )

    def _source_status(self, status: str) -> None:
        self._emit("source", {"status": status})

    def _emit(self, kind: str, detail: FreeObject) -> None:
        for fn in self._event_listeners:
            try:
                fn(kind, detail)
            except Exception:
                logger.exception("event listener failed")


def build_loop(config: AgentConfig, model: Model, stop: threading.Event) -> InferenceLoop:
    """The loop the agent config describes, serving `model` (not started yet)."""
    spec = model.signature.inputs[0]
    channels = spec.shape[-1] if len(spec.shape) == 3 else 1
    source = open_source(
        config.source.uri, config.profile.camera, sensor_channels=channels, paced=True
    )
    mc = config.model
    options = LoopOptions(
        prep=PrepOptions(mc.normalization, mc.color, mc.crop),
        labels=tuple(load_labels(mc.labels)),
        top_k=mc.top_k,
        score_threshold=mc.score_threshold,
        buffer_frames=config.source.buffer_frames,
        recent_inputs=config.update.shadow_frames,
        reconnect_max_s=config.source.reconnect_max_s,
        replay=config.source.loop,
    )
    return InferenceLoop(model, source, stop, options)
