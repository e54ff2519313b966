"""The inference loop: hot swap under load, failures, heartbeat and the watchdog stall."""

from __future__ import annotations

import itertools
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.config import parse_config
from agent.loop import (
    GIL_SWITCH_S,
    STALL_ENV,
    InferenceLoop,
    InferenceResult,
    LoopOptions,
    build_loop,
)
from agent.processing import OutputStream, Postprocess
from agent.runtime import load_model
from agent.sources import open_source
from shared.errors import IOSignatureMismatch

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "examples" / "models"
DIGITS, DIGITS_FT = MODELS / "digits.tflite", MODELS / "digits-ft.tflite"
TINY_UINT8 = ROOT / "tests" / "data" / "tiny_uint8.tflite"


def write_video(path: Path, frames: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (320, 240))
    for i in range(frames):
        frame = np.zeros((240, 320, 3), np.uint8)
        cv2.putText(
            frame, str(i % 10), (110, 200), cv2.FONT_HERSHEY_SIMPLEX, 6, (255, 255, 255), 12
        )
        writer.write(frame)
    writer.release()
    return path


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def swap_every(
    loop: InferenceLoop,
    k: int,
    paths: list[Path],
    results: list[InferenceResult],
    swaps: list[tuple[str, str]],
    stop: threading.Event,
) -> threading.Thread:
    """Swap in the next of `paths` (loaded off the hot path) each time k more frames are done."""

    def run() -> None:
        i = 0
        while not stop.is_set():
            fresh = load_model(paths[i % len(paths)], threads=1)
            target = len(results) + k
            while len(results) < target and not stop.is_set():
                time.sleep(0.001)
            if stop.is_set():
                fresh.close()
                return
            old = loop.swap(fresh)
            swaps.append((old.sha256, fresh.sha256))
            old.close()
            i += 1

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("second", [DIGITS_FT, TINY_UINT8], ids=["same-input", "other-input"])
def test_hot_swap_under_load_every_frame_exactly_once(tmp_path: Path, second: Path) -> None:
    video = write_video(tmp_path / "clip.avi", 400)
    first = load_model(DIGITS, threads=1)
    stop = threading.Event()
    loop = InferenceLoop(first, open_source(f"file://{video}"), stop, LoopOptions(buffer_frames=4))
    results: list[InferenceResult] = []
    loop.add_listener(results.append)
    swaps: list[tuple[str, str]] = []
    loop.start()
    swapper_stop = threading.Event()
    swapper = swap_every(loop, 25, [second, DIGITS], results, swaps, swapper_stop)
    try:
        wait_for(lambda: loop.finished)
    finally:
        swapper_stop.set()
        swapper.join(10)
        loop.stop()
    counts = Counter(r.index for r in results)
    assert sorted(counts) == list(range(400)), "a frame was lost"
    assert max(counts.values()) == 1, "a frame was processed twice"
    assert all(r.ok for r in results) and loop.snapshot().errors == 0
    assert len(swaps) >= 5
    # the model changes only at frame boundaries, in the order the swaps happened
    served = [r.model_sha256 for r in results]
    changes = [b for a, b in itertools.pairwise(served) if a != b]
    assert changes == [new for _, new in swaps][: len(changes)]
    assert len(changes) >= len(swaps) - 1


def test_swap_returns_the_old_model_and_the_new_one_serves(tmp_path: Path) -> None:
    first, second = load_model(DIGITS, threads=1), load_model(DIGITS_FT, threads=1)
    loop = InferenceLoop(first, open_source("synthetic:image"), threading.Event())
    loop.start()
    try:
        wait_for(lambda: loop.snapshot().inferences > 10)
        old = loop.swap(second)
        assert old is first and loop.model is second
        old.close()
        done = loop.snapshot().inferences
        wait_for(lambda: loop.snapshot().inferences > done + 10)
        assert loop.snapshot().model_sha256 == second.sha256
        assert loop.snapshot().errors == 0
    finally:
        loop.stop()


def test_swap_returns_once_the_new_model_has_served_a_frame() -> None:
    first, second = load_model(DIGITS, threads=1), load_model(DIGITS_FT, threads=1)
    loop = InferenceLoop(first, open_source("synthetic:image?fps=100"), threading.Event())
    served: list[str] = []
    loop.add_listener(lambda result: served.append(result.model_sha256))
    loop.start()
    try:
        wait_for(lambda: len(served) > 5)
        loop.swap(second)
        assert second.sha256 in served  # its first frame is inferred before swap returns
    finally:
        loop.stop()


def test_an_idle_loop_swaps_without_waiting_for_a_frame(tmp_path: Path) -> None:
    first, second = load_model(DIGITS, threads=1), load_model(DIGITS_FT, threads=1)
    loop = InferenceLoop(
        first,
        open_source(f"camera:{tmp_path}/none"),
        threading.Event(),
        LoopOptions(reconnect_max_s=0.5),
    )
    loop.start()
    try:
        time.sleep(0.3)
        # no frame ever comes: a swap that waited for one would raise TimeoutError
        assert loop.swap(second, timeout=5.0) is first
        assert loop.model is second
        assert loop.snapshot().inferences == 0
    finally:
        loop.stop()


def test_swap_refuses_a_model_that_does_not_fit_the_source() -> None:
    loop = InferenceLoop(
        load_model(DIGITS, threads=1), open_source("synthetic:image"), threading.Event()
    )
    loop.start()
    try:
        sensor_model = load_model(MODELS / "vibration.tflite", threads=1)
        with pytest.raises(IOSignatureMismatch):
            loop.swap(sensor_model)
        done = loop.snapshot().inferences
        wait_for(lambda: loop.snapshot().inferences > done + 5)  # the old model still serves
    finally:
        loop.stop()


def test_a_broken_model_is_counted_not_fatal_and_a_swap_recovers() -> None:
    model = load_model(DIGITS, threads=1)
    loop = InferenceLoop(model, open_source("synthetic:image?fps=200"), threading.Event())
    loop.start()
    try:
        wait_for(lambda: loop.snapshot().inferences > 5)
        model.close()  # every invoke now raises
        wait_for(lambda: loop.snapshot().errors > 5)
        beat = loop.snapshot().heartbeat
        wait_for(lambda: loop.snapshot().heartbeat > beat)  # failing invokes: still alive
        loop.swap(load_model(DIGITS, threads=1))
        done = loop.snapshot().inferences
        wait_for(lambda: loop.snapshot().inferences > done + 5)
    finally:
        loop.stop()


def test_swap_before_start_installs_directly() -> None:
    first, second = load_model(DIGITS, threads=1), load_model(DIGITS_FT, threads=1)
    loop = InferenceLoop(first, open_source("synthetic:image"), threading.Event())
    assert loop.swap(second) is first and loop.model is second


def test_heartbeat_advances_while_waiting_for_frames(tmp_path: Path) -> None:
    loop = InferenceLoop(
        load_model(DIGITS, threads=1),
        open_source(f"camera:{tmp_path}/none"),
        threading.Event(),
        LoopOptions(reconnect_max_s=0.5),
    )
    loop.start()
    try:
        time.sleep(1.5)
        snap = loop.snapshot()
        assert snap.inferences == 0 and snap.source_status.startswith("down")
        wait_for(lambda: loop.snapshot().heartbeat > snap.heartbeat)  # still beating
    finally:
        loop.stop()


def test_stall_env_blocks_the_inference_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STALL_ENV, "5")
    stop = threading.Event()
    loop = InferenceLoop(load_model(DIGITS, threads=1), open_source("synthetic:image"), stop)
    loop.start()
    try:
        wait_for(lambda: loop.snapshot().inferences == 5)  # it ran and beat up to here
        time.sleep(0.5)  # into the stall
        before = loop.snapshot()
        time.sleep(1.0)
        snap = loop.snapshot()
        assert snap.inferences == 5
        assert snap.heartbeat == before.heartbeat  # stale: a watchdog would fire
    finally:
        loop.stop()
    assert not loop._thread.is_alive()  # the stop event releases it


def test_recent_inputs_are_bounded_real_inputs() -> None:
    loop = InferenceLoop(
        load_model(DIGITS, threads=1),
        open_source("synthetic:image"),
        threading.Event(),
        LoopOptions(recent_inputs=3),
    )
    loop.start()
    try:
        wait_for(lambda: loop.snapshot().inferences > 20)
        recent = loop.recent_inputs()
    finally:
        loop.stop()
    assert len(recent) == 3
    assert all(r[0].shape == (1, 28, 28, 1) and r[0].dtype == np.float32 for r in recent)
    assert loop.model.invoke(recent[0])[0].shape == (1, 10)


def test_events_and_summary_from_a_real_classifier(tmp_path: Path) -> None:
    video = write_video(tmp_path / "digits.avi", 120)
    labels = tuple((MODELS / "digits.labels.txt").read_text().split())
    loop = InferenceLoop(
        load_model(DIGITS, threads=1),
        open_source(f"file://{video}"),
        threading.Event(),
        LoopOptions(labels=labels, score_threshold=0.3),
    )
    events: list[tuple[str, dict[str, object]]] = []
    loop.add_event_listener(lambda kind, detail: events.append((kind, detail)))
    loop.start()
    try:
        wait_for(lambda: loop.finished)
        time.sleep(0.2)  # the postprocessing thread drains every 20 ms
        snap = loop.snapshot()
    finally:
        loop.stop()
    assert snap.outputs["kind"] == "classification"
    assert snap.outputs["count"] + snap.post_dropped == 120  # bounded, and counted when full
    assert {t["label"] for t in snap.outputs["top"]} <= set(labels)
    assert ("source", {"status": "up"}) in events and ("source", {"status": "ended"}) in events
    inference = [d for k, d in events if k == "inference"]
    assert inference and all(d["label"] in labels for d in inference)


CONFIG = """
device_id = "cam-01"
profile = "x86-gateway"
state_dir = "{state}"
[model]
name = "digits"
initial = "{model}"
labels = "{labels}"
top_k = 2
[source]
uri = "file://{video}"
buffer_frames = 2
[trust]
keys = ["{key}"]
"""


def test_build_loop_from_the_agent_config(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.avi", 30)
    text = CONFIG.format(
        state=tmp_path,
        model=DIGITS,
        labels=MODELS / "digits.labels.txt",
        video=video,
        key="ab" * 32,
    )
    config = parse_config(text, "agent.toml", tmp_path)
    model = load_model(config.model.initial, config.profile.runtime.threads)
    loop = build_loop(config, model, threading.Event())
    assert loop.feed.buffer == 2 and loop.options.top_k == 2
    loop.start()
    try:
        wait_for(lambda: loop.finished)
    finally:
        loop.stop()
    assert loop.snapshot().inferences == 30


def test_a_model_never_invoked_is_warmed_up_on_the_callers_thread(tmp_path: Path) -> None:
    first, second = load_model(DIGITS, threads=1), load_model(DIGITS_FT, threads=1)
    assert second.invoked  # load_model's smoke test: the first invoke happens at load
    second.invoked = False  # as if it had never run: swap must not leave that to the loop
    threads: list[str] = []
    invoke = second.invoke

    def recorded(inputs: list[np.ndarray]) -> list[np.ndarray]:
        threads.append(threading.current_thread().name)
        return invoke(inputs)

    second.invoke = recorded  # type: ignore[method-assign]
    loop = InferenceLoop(first, open_source("synthetic:image"), threading.Event())
    loop.start()
    try:
        wait_for(lambda: loop.snapshot().inferences > 5)
        assert loop.swap(second) is first
        wait_for(lambda: len(threads) > 3)
    finally:
        loop.stop()
    assert threads[0] == threading.current_thread().name
    assert set(threads[1:]) == {"inference"}


def test_results_carry_outputs_and_a_classifiers_top1() -> None:
    loop = InferenceLoop(
        load_model(DIGITS, threads=1), open_source("synthetic:image"), threading.Event()
    )
    results: list[InferenceResult] = []
    loop.add_listener(results.append)
    loop.start()
    try:
        wait_for(lambda: len(results) > 5)
    finally:
        loop.stop()
    for r in results[:5]:
        assert r.ok and r.outputs is not None and r.outputs[0].shape == (1, 10)
        assert r.top1 == int(np.argmax(r.outputs[0]))
    failed = InferenceResult("x", False, 0.0, results[0].inputs)
    assert failed.top1 is None


def test_a_sensor_swap_keeps_frames_prepared_once() -> None:
    vibration = MODELS / "vibration.tflite"
    loop = InferenceLoop(
        load_model(vibration, threads=1), open_source("synthetic:sensor"), threading.Event()
    )
    loop.start()
    try:
        wait_for(lambda: loop.snapshot().inferences > 3)
        loop.swap(load_model(vibration, threads=1)).close()
        # the capture thread keeps its partial window in a stage of its own: the loop compares
        # frames against that one, so it does not prepare every frame a second time
        assert loop._stage is loop.capture.stage
        done = loop.snapshot().inferences
        wait_for(lambda: loop.snapshot().inferences > done + 3)
        assert loop.snapshot().errors == 0
    finally:
        loop.stop()


def test_start_bounds_how_long_a_busy_thread_holds_the_gil() -> None:
    previous = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    loop = InferenceLoop(
        load_model(DIGITS, threads=1), open_source("synthetic:image"), threading.Event()
    )
    try:
        loop.start()
        assert sys.getswitchinterval() == pytest.approx(GIL_SWITCH_S)
    finally:
        loop.stop()
        sys.setswitchinterval(previous)


def drain(stream: OutputStream, stop: threading.Event, count: int) -> None:
    """Run the postprocessing thread until its summary has counted `count` outputs."""
    stream.start()
    try:
        wait_for(lambda: stream.summary()["count"] == count, timeout=10)
    finally:
        stop.set()
        stream.join(2)


def test_one_bad_output_costs_only_itself() -> None:
    model = load_model(DIGITS, threads=1)
    stop = threading.Event()
    stream = OutputStream("classification", 64, stop, lambda kind, detail: None, interval_s=0.01)
    post = Postprocess(model.signature, [], top_k=2)
    good = model.invoke(model.sample_input())
    for i in range(6):
        stream.put(post, [] if i == 2 else good)  # an output list the model cannot give
    drain(stream, stop, 5)
    assert stream.summary()["count"] == 5 and stream.dropped == 0


def test_classifier_events_from_a_batch_are_rate_limited_and_name_the_class() -> None:
    model = load_model(DIGITS, threads=1)
    stop = threading.Event()
    events: list[tuple[str, dict[str, object]]] = []
    stream = OutputStream(
        "classification",
        64,
        stop,
        lambda kind, detail: events.append((kind, detail)),
        interval_s=0.01,
    )
    stream.events = True
    post = Postprocess(model.signature, [f"digit{i}" for i in range(10)], threshold=0.9)

    def scores(cls: int, top: float) -> list[np.ndarray]:
        row = np.full((1, 10), (1.0 - top) / 9, np.float32)
        row[0, cls] = top
        return [row]

    for frame in [scores(3, 0.5), scores(4, 0.6), scores(7, 0.95), scores(8, 0.99)]:
        stream.put(post, frame)  # one batch: the first confident frame wins, the rest wait 1 s
    drain(stream, stop, 4)
    assert events == [("inference", {"class": 7, "label": "digit7", "score": 0.95})]
    summary = stream.summary()
    assert {d["label"] for d in summary["top"]} == {"digit3", "digit4", "digit7", "digit8"}


def test_the_output_queue_is_bounded_by_bytes_as_well_as_count() -> None:
    model = load_model(DIGITS, threads=1)
    stream = OutputStream(
        "generic", 1000, threading.Event(), lambda kind, detail: None, max_bytes=11 * 2**20
    )
    post = Postprocess(model.signature, [])
    feature_map = [np.zeros((1, 64, 64, 128), np.float32)]  # 2 MiB a frame
    for _ in range(8):
        stream.put(post, feature_map)  # the thread is not started: nothing drains
    assert stream.queued_bytes == 5 * 2**21 and stream.dropped == 3
    stream.put(post, [np.zeros((1, 10), np.float32)])  # a small one still fits
    assert stream.dropped == 3 and stream.queued_bytes == 5 * 2**21 + 40
