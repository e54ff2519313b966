"""The drift monitor on real digits inferences: what the inference thread hands over is
rate-limited, the rolling window is a fixed ring (bounded memory), the score separates plain
from inverted digits, and a drift event is raised at most once per interval."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from agent.drift import DriftMonitor, DriftOptions
from agent.loop import InferenceResult
from agent.references import ReferenceBook
from agent.runtime import load_model
from cloud.compress.reference import read_reference
from tests.agent.drift_helpers import DIGITS, EVAL, digits_reference


def _results(model, images: np.ndarray, start: float = 0.0, step: float = 1.0):  # type: ignore[no-untyped-def]
    for i, image in enumerate(images):
        inputs = [image[None].astype(np.float32)]
        outputs = model.invoke(inputs)
        yield InferenceResult(
            model.sha256, True, 1.0, inputs, i, start + i * step, [o.copy() for o in outputs], True
        )


def _monitor(tmp_path: Path, model, **options):  # type: ignore[no-untyped-def]
    book = ReferenceBook(tmp_path / "state")
    book.remember(model.sha256, read_reference(digits_reference(tmp_path / "ref")))
    events: list[dict] = []  # type: ignore[type-arg]
    monitor = DriftMonitor(
        book,
        lambda sha: model.signature if sha == model.sha256 else None,
        threading.Event(),
        DriftOptions(**options),
        on_drift=events.append,
    )
    return monitor, events


def test_plain_digits_stay_under_inverted_go_over_and_one_event_per_interval(
    tmp_path: Path,
) -> None:
    model = load_model(DIGITS, threads=1)
    x = np.load(EVAL)["x"]
    monitor, events = _monitor(
        tmp_path,
        model,
        window=200,
        min_samples=100,
        sample_hz=1.0,
        event_interval_s=3600.0,
        score_interval_s=0.0,
    )
    for result in _results(model, x[:300]):
        monitor.observe(result)
        monitor.process()
    plain = monitor.summary
    assert plain is not None and plain.samples == 200  # the window is full, and no bigger
    assert plain.score < plain.threshold == 0.25, monitor.scores
    assert events == []
    ring_bytes = sum(r.nbytes for r in monitor._window.ring)  # type: ignore[union-attr]

    for result in _results(model, 1.0 - x[:400], start=1000.0):
        monitor.observe(result)
        monitor.process()
    inverted = monitor.summary
    assert inverted is not None and inverted.score > inverted.threshold
    assert monitor.scores["input.c0"] > inverted.threshold  # the pixels moved
    assert inverted.feature == max(monitor.scores, key=lambda k: monitor.scores[k])
    assert len(events) == 1  # over the threshold for 400 frames: one event in the hour
    assert events[0]["feature"] == inverted.feature and events[0]["model_sha256"] == model.sha256
    assert sum(r.nbytes for r in monitor._window.ring) == ring_bytes  # type: ignore[union-attr]
    model.close()


def test_the_inference_thread_hands_over_at_most_sample_hz_frames(tmp_path: Path) -> None:
    model = load_model(DIGITS, threads=1)
    x = np.load(EVAL)["x"][:65]
    monitor, _ = _monitor(tmp_path, model, sample_hz=4.0, pending=64)
    for result in _results(model, x, step=1 / 64):  # 64 frames a second for one second
        monitor.observe(result)
    assert len(monitor._pending) == 5  # t = 0, 0.25, 0.5, 0.75, 1.0
    assert monitor.process() == 5
    model.close()


def test_a_model_without_reference_is_not_measured(tmp_path: Path) -> None:
    model = load_model(DIGITS, threads=1)
    monitor = DriftMonitor(
        ReferenceBook(tmp_path / "state"),
        lambda sha: model.signature,
        threading.Event(),
        DriftOptions(sample_hz=1000.0),
    )
    for result in _results(model, np.load(EVAL)["x"][:20]):
        monitor.observe(result)
    assert monitor.process() == 0
    assert monitor.summary is None
    model.close()
