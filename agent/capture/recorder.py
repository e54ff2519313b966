"""Which frames become samples: triggers, a rate limit, and the encoding off the loop.

Capture is off unless `[capture] enabled` or a signed `capture` command turns it on (that
choice is kept in `state_dir/capture.json`); a `capture N` command keeps the next N frames
even when capture is off. On the inference thread `observe` does a few comparisons and, for a
frame that triggers and fits the rate limit, one append to a bounded deque; the `capture`
thread encodes the input (JPEG for images, `.npy` otherwise) and writes the sample.

Triggers: `low_confidence` (a classifier's top score below the release's threshold), `drift`
(the drift score over the release's threshold), `command` (an operator's `capture N`) and
`disagreement` (a shadow frame on which the model on probation and the previous one disagree;
shadow frames run when the release sets `--min-agreement`).
The rate limit is `max_per_hour`: triggered frames are spaced at least 3600/max_per_hour s
apart, and no more than max_per_hour are kept in any hour (`command` frames skip the spacing
but count toward the hour).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.capture.store import SampleStore, new_sample_id
from agent.config import CaptureConfig
from agent.opencv import opencv
from agent.references import ReferenceBook
from localio.atomic import write_atomic
from shared.documents import IOSignature
from shared.features import FeatureExtractor
from shared.messages import ModelIdentity
from shared.reference import DEFAULT_CONFIDENCE_PCT

__all__ = ["CAPTURE_STATE_FILE", "MAX_COMMAND_COUNT", "SampleRecorder", "capture_enabled"]

log = logging.getLogger(__name__)

MAX_COMMAND_COUNT = 1000
CAPTURE_STATE_FILE = "capture.json"  # in the state dir: a signed command's on/off
HOUR_S = 3600.0


class SampleRecorder:
    def __init__(
        self,
        config: CaptureConfig,
        store: SampleStore,
        state_file: Path,
        references: ReferenceBook,
        signature_of: Callable[[str], IOSignature | None],
        identity: Callable[[], ModelIdentity | None],
        stop: threading.Event,
        drifting: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self._state_file = state_file
        self._references = references
        self._signature_of = signature_of
        self._identity = identity
        self._stop = stop
        self._clock = clock
        self.enabled = self._load_enabled()
        self.requested = 0  # frames an operator's `capture N` still wants
        self._drifting = drifting  # the drift score is over the release's threshold
        self._spacing = HOUR_S / config.max_per_hour
        self._next = 0.0
        self._kept: deque[float] = deque()  # monotonic times of frames handed over, last hour
        self._pending: deque[tuple[str, Any]] = deque(maxlen=4)  # frames held for the writer
        self._wake = threading.Event()
        self._model: tuple[str, FeatureExtractor | None, float] = ("", None, 0.0)
        self.kept = 0
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)

    # -- control (inbound worker) ------------------------------------------------------------

    def _load_enabled(self) -> bool:
        return capture_enabled(self.config, self._state_file)

    def set_enabled(self, enabled: bool) -> None:
        self.enabled = enabled
        self._state_file.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self._state_file, json.dumps({"enabled": enabled}).encode("utf-8"))
        log.info("sample capture %s by a signed command", "on" if enabled else "off")

    def request(self, count: int) -> None:
        self.requested = max(0, min(count, MAX_COMMAND_COUNT))
        log.info("capturing the next %s frames (operator command)", self.requested)

    # -- the inference thread ----------------------------------------------------------------

    def observe(self, result: Any) -> None:
        if not result.ok or (not self.enabled and self.requested <= 0):
            return
        now = result.ts
        kept = self._kept
        while kept and now - kept[0] >= HOUR_S:
            kept.popleft()
        if len(kept) >= self.config.max_per_hour:
            return
        trigger = None
        if self.requested > 0 and "command" in self.config.triggers:
            self.requested -= 1
            trigger = "command"
        elif not self.enabled or now < self._next:
            return
        elif "drift" in self.config.triggers and self._drifting():
            trigger = "drift"
        elif "low_confidence" in self.config.triggers:
            sha, extractor, threshold = self._model
            if sha != result.model_sha256:
                return self._refresh(result.model_sha256)
            score = extractor.top_score(result.outputs) if extractor is not None else None
            if score is not None and score < threshold:
                trigger = "low_confidence"
        if trigger is None:
            return
        kept.append(now)
        if trigger != "command":
            self._next = now + self._spacing
        self._pending.append((trigger, result))
        self._wake.set()

    def disagreement(
        self, sha256: str, inputs: list[np.ndarray], new_top1: int | None, old_top1: int | None
    ) -> None:
        """The probation's shadow thread: the two models disagree on this frame."""
        if not self.enabled or "disagreement" not in self.config.triggers:
            return
        now = time.monotonic()
        kept = self._kept
        while kept and now - kept[0] >= HOUR_S:
            kept.popleft()
        if len(kept) >= self.config.max_per_hour or now < self._next:
            return
        kept.append(now)
        self._next = now + self._spacing
        self._pending.append(("disagreement", _Shadow(sha256, inputs, new_top1, old_top1)))
        self._wake.set()

    def _refresh(self, sha256: str) -> None:
        """Learn the new model's classifier shape and threshold (cheap; once per model)."""
        signature = self._signature_of(sha256)
        reference = self._references.get(sha256)
        pct = reference.confidence_threshold_pct if reference else DEFAULT_CONFIDENCE_PCT
        extractor = FeatureExtractor(signature) if signature is not None else None
        self._model = (sha256, extractor, pct / 100.0)

    # -- the capture thread ------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float = 2.0) -> None:
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            self.drain()

    def drain(self) -> int:
        """Write the samples handed over so far; return how many were kept."""
        kept = self.kept
        while self._pending:
            trigger, result = self._pending.popleft()
            try:
                self._write(trigger, result)
            except Exception:
                log.exception("could not keep a sample")
        return self.kept - kept

    def _write(self, trigger: str, result: Any) -> None:
        signature = self._signature_of(result.model_sha256)
        x = np.asarray(result.inputs[0])
        real = x.astype(np.float32)
        if signature is not None and signature.inputs[0].scale is not None:
            spec = signature.inputs[0]
            real = (real - float(spec.zero_point or 0)) * float(spec.scale or 1)
        encoded = _jpeg(real) if x.ndim == 4 else None
        now = self._clock()
        sample_id = new_sample_id(now)
        identity = self._identity()
        meta: dict[str, Any] = {
            "id": sample_id,
            "trigger": trigger,
            "time": now,
            "model": None
            if identity is None
            else {"name": identity.name, "version": identity.version, "sha256": identity.sha256},
            "model_sha256": result.model_sha256,
            "shape": list(x.shape[1:]),
            "outputs": [
                np.asarray(o).astype(np.float32).reshape(-1).tolist()
                for o in (result.outputs or [])
            ],
        }
        if isinstance(result, _Shadow):
            meta.update(predicted=result.new_top1, previous_predicted=result.old_top1)
        if encoded is not None:
            payload, scale, offset = encoded
            ext = "jpg"
            meta.update(encoding="jpeg", pixel_scale=scale, pixel_offset=offset)
        else:
            ext = "npy"
            payload = _npy(real.reshape(x.shape[1:]))
            meta.update(encoding="npy")
        if self.store.keep(sample_id, ext, payload, meta):
            self.kept += 1
            log.info("kept sample %s (%s)", sample_id, trigger)


@dataclass(frozen=True)
class _Shadow:
    """A shadow frame the two models disagreed on (what `_write` needs of a result)."""

    model_sha256: str
    inputs: list[np.ndarray]
    new_top1: int | None
    old_top1: int | None
    outputs: None = None


def capture_enabled(config: CaptureConfig, state_file: Path) -> bool:
    """On or off: the last signed `capture` command's choice, else the config's."""
    try:
        value = json.loads(state_file.read_text())
        return bool(value.get("enabled")) if isinstance(value, dict) else config.enabled
    except (OSError, ValueError):
        return config.enabled


def _jpeg(real: np.ndarray) -> tuple[bytes, float, float] | None:
    """A [1, H, W, C] image input as JPEG, and how pixels map back: x = pixel*scale + offset."""
    lo, hi = float(real.min()), float(real.max())
    if lo >= 0.0 and hi <= 1.0:
        scale, offset = 1.0 / 255.0, 0.0
    elif lo >= -1.0 and hi <= 1.0:
        scale, offset = 2.0 / 255.0, -1.0
    elif lo >= 0.0 and hi <= 255.0:
        scale, offset = 1.0, 0.0
    else:
        return None
    pixels = np.clip(np.round((real[0] - offset) / scale), 0, 255).astype(np.uint8)
    cv2 = opencv("JPEG samples")  # frames only: a sensor agent never loads OpenCV
    ok, data = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        return None
    return data.tobytes(), scale, offset


def _npy(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()
