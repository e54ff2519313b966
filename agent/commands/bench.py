"""`litefleet-agent bench`: the agent's real loop measured against the bare interpreter.

First the bare interpreter: one preprocessed input, then set input / invoke / read output in a
tight loop. Then the agent's own loop (capture thread, preprocessing, inference thread,
postprocessing) over a source. `ratio` = loop_fps / invoke_fps says what the loop costs; for
tiny models `overhead_us` is that cost per frame. With `--swap-every K` a fresh copy of the
model is hot-swapped in every K frames (and the old one closed), and the largest gap between
consecutive inferences around a swap is reported against the median interval. Each copy is
loaded half-way between two swaps, as an update would arrive; the largest gap while one loads
is reported too (`load_max_gap_ms`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

from shared.cli_support import EXIT_INVALID, EXIT_REJECTED

__all__ = ["register", "run_bench"]

WARMUP = 10


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "bench", help="measure the inference loop against the bare interpreter",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, type=Path, help="a .tflite model")
    p.add_argument("--source", help="a source URI (default: a synthetic source for the model)")
    p.add_argument("--frames", type=int, default=300, help="frames to measure (default 300)")
    p.add_argument("--threads", type=int, default=None,
                   help="interpreter threads (default: the profile's)")
    p.add_argument("--profile", default="x86-gateway",
                   help="device profile for threads, delegates and camera size")
    p.add_argument("--swap-every", type=int, default=0, metavar="K",
                   help="hot-swap a fresh copy of the model every K frames")
    p.add_argument("--labels", type=Path, help="labels file for the summary")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    from device_profiles import load_profile
    from shared.errors import Rejected
    from shared.profile import ProfileInvalid

    if args.frames < WARMUP + 2 or args.swap_every < 0 or (args.threads or 1) < 1:
        print(f"error: --frames must be at least {WARMUP + 2}, --threads and --swap-every "
              "positive", file=sys.stderr)
        return EXIT_INVALID
    try:
        profile = load_profile(args.profile)
    except ProfileInvalid as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INVALID
    try:
        result = run_bench(args.model, args.source, args.frames,
                           args.threads or profile.runtime.threads, args.swap_every,
                           profile.runtime.delegates, args.labels,
                           (profile.camera.width, profile.camera.height))
    except Rejected as e:
        print(f"error: {e.reason}: {e}", file=sys.stderr)
        return EXIT_REJECTED
    except (ValueError, TimeoutError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INVALID
    if args.json:
        print(json.dumps(result))
    else:
        width = max(len(k) for k in result)
        for key, value in result.items():
            print(f"{key:<{width}}  {value}")
    return 0


def _first_input(source: Any, stage: Any, timeout: float = 10.0) -> list[Any]:
    """One real preprocessed input from the source."""
    deadline = time.monotonic() + timeout
    source.want(stage.need)  # decoded as the loop's capture thread has it decoded
    source.open()
    try:
        while time.monotonic() < deadline:
            raw = source.read(0.5)
            if raw is None:
                continue
            if stage.windower is not None:
                raw = stage.windower.add(raw)
                if raw is None:
                    continue
            inputs: list[Any] = stage.prep(raw)
            return inputs
    finally:
        source.close()
    raise TimeoutError(f"no input from {source.describe()} in {timeout:.0f} s")


def _bare(model: Any, inputs: list[Any], frames: int) -> tuple[float, list[float]]:
    for _ in range(WARMUP):
        model.invoke(inputs)
    latencies = []
    clock = time.perf_counter
    start = clock()
    for _ in range(frames):
        t = clock()
        model.invoke(inputs)
        latencies.append((clock() - t) * 1000.0)
    return frames / (clock() - start), latencies


def run_bench(model_path: Path, source_uri: str | None, frames: int, threads: int,
              swap_every: int = 0, delegates: tuple[str, ...] = (), labels: Path | None = None,
              camera_size: tuple[int, int] = (640, 480)) -> dict[str, Any]:
    """Measure and return the figures `bench --json` prints."""
    import numpy as np
    import psutil

    from agent.loop import InferenceLoop, InferenceResult, LoopOptions, stage_for
    from agent.processing import input_kind, load_labels
    from agent.runtime import load_model
    from agent.sources import open_source
    from shared.profile import CameraDefaults

    model = load_model(model_path, threads, delegates)
    kind = input_kind(model.signature)
    uri = source_uri or ("synthetic:image" if kind == "image" else "synthetic:sensor")
    spec = model.signature.inputs[0]
    channels = spec.shape[-1] if len(spec.shape) == 3 else 1
    camera = CameraDefaults(width=camera_size[0], height=camera_size[1])
    options = LoopOptions(labels=tuple(load_labels(labels)), replay=True)

    def source() -> Any:
        return open_source(uri, camera, sensor_channels=channels)

    probe = source()
    inputs = _first_input(probe, stage_for(model.signature, probe.kind, options))
    invoke_fps, bare = _bare(model, inputs, frames)

    total = frames + WARMUP
    done: list[tuple[float, float]] = []  # (finished at, invoke ms) per inference
    finished = threading.Event()
    swap_due, load_due = threading.Event(), threading.Event()
    load_due.set()  # the first copy loads at once

    def listen(result: InferenceResult) -> None:
        if not result.ok:
            return
        done.append((result.ts, result.latency_ms))
        n = len(done)
        if swap_every and n > WARMUP:
            phase = (n - WARMUP) % swap_every
            if phase == 0:
                swap_due.set()
            elif phase == swap_every // 2:
                load_due.set()
        if n >= total:
            finished.set()

    stop = threading.Event()
    loop = InferenceLoop(model, source(), stop, options)
    loop.add_listener(listen)
    swap_times: list[tuple[int, int]] = []  # len(done) just before and after each swap
    load_times: list[tuple[int, int]] = []  # and each load of the next copy
    swapper = threading.Thread(target=_swapper, args=(loop, model_path, threads, delegates,
                                                      (load_due, swap_due), finished,
                                                      (load_times, swap_times), done),
                               daemon=True) if swap_every else None
    rss = 0.0
    loop.start()
    if swapper is not None:
        swapper.start()
    try:
        while not finished.wait(0.2):
            if loop.finished:
                break
            rss = max(rss, psutil.Process().memory_info().rss / 2**20)
        rss = max(rss, psutil.Process().memory_info().rss / 2**20)
    finally:
        finished.set()
        loop.stop()
        if swapper is not None:
            swapper.join(10)
    snap = loop.snapshot()
    # the bare interpreter again: of the two runs, the faster is the reference (on a busy
    # machine this keeps the ratio conservative)
    again_fps, again = _bare(model if not model.closed else loop.model, inputs, frames)
    if again_fps > invoke_fps:
        invoke_fps, bare = again_fps, again
    measured = done[WARMUP:total]
    if len(measured) < 2:
        raise TimeoutError(f"only {len(measured)} frames inferred from {uri}")
    times = np.array([t for t, _ in measured])
    loop_fps = (len(times) - 1) / float(times[-1] - times[0])
    p50, p95, p99 = (float(v) for v in np.percentile([ms for _, ms in measured], [50, 95, 99]))
    result: dict[str, Any] = {
        "model": str(model_path), "backend": model.backend, "threads": threads, "source": uri,
        "frames": len(measured), "invoke_fps": round(invoke_fps, 2),
        "loop_fps": round(loop_fps, 2), "ratio": round(loop_fps / invoke_fps, 4),
        "p50_ms": round(p50, 3), "p95_ms": round(p95, 3), "p99_ms": round(p99, 3),
        "invoke_p50_ms": round(float(np.percentile(bare, 50)), 3),
        "e2e_p50_ms": snap.e2e_p50_ms, "e2e_p95_ms": snap.e2e_p95_ms,
        "overhead_us": round((1.0 / loop_fps - 1.0 / invoke_fps) * 1e6, 1),
        "errors": snap.errors, "dropped_frames": snap.dropped_frames, "rss_mb": round(rss, 1),
    }
    if swap_every:
        intervals = np.diff(np.array([t for t, _ in done])) * 1000.0
        around = _gaps(intervals, swap_times)
        loading = _gaps(intervals, [(b, a) for b, a in load_times if b >= WARMUP])
        result.update({
            "swaps": len(swap_times),
            "swap_max_gap_ms": round(max(around), 3) if around else None,
            "load_max_gap_ms": round(max(loading), 3) if loading else None,
            "median_interval_ms": round(float(statistics.median(intervals[WARMUP:])), 3),
            # the noise floor: how long an ordinary interval gets on this machine right now
            "interval_p95_ms": round(float(np.percentile(intervals[WARMUP:], 95)), 3),
        })
    loop.model.close()
    return result


def _gaps(intervals: Any, stretches: list[tuple[int, int]]) -> list[float]:
    """The longest interval touching each stretch of inferences.

    Something (a swap, a load) ran while the inference count went from `before` to `after`:
    the intervals from the one ending at inference `before` to the one after inference `after`
    are those it could lengthen.
    """
    return [float(intervals[max(0, before - 1):after + 1].max()) for before, after in stretches
            if after + 1 <= len(intervals)]


def _wait(event: threading.Event, finished: threading.Event) -> bool:
    while not event.wait(0.1):
        if finished.is_set():
            return False
    event.clear()
    return True


def _swapper(loop: Any, path: Path, threads: int, delegates: tuple[str, ...],
             due: tuple[threading.Event, threading.Event], finished: threading.Event,
             positions: tuple[list[tuple[int, int]], list[tuple[int, int]]],
             done: list[tuple[float, float]]) -> None:
    """Load the next copy off the hot path when due; swap it in when due; close the old one."""
    from agent.runtime import load_model

    (load_due, swap_due), (loads, swaps) = due, positions
    while _wait(load_due, finished):
        before = len(done)
        fresh = load_model(path, threads, delegates)
        loads.append((before, len(done)))
        if not _wait(swap_due, finished):
            fresh.close()
            return
        before = len(done)
        old = loop.swap(fresh)
        swaps.append((before, len(done)))
        old.close()
