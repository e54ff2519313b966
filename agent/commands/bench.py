"""`litefleet-agent bench`: the agent's real loop measured against the bare interpreter.

First the bare interpreter: one preprocessed input, then set input / invoke / read output in a
tight loop. Then the agent's own loop (capture thread, preprocessing, inference thread,
postprocessing) over a source, then the bare interpreter again; the faster bare run is the
reference. `ratio` = loop_fps / invoke_fps says what the loop costs; for tiny models
`overhead_us` is that cost per frame. With `--swap-every K` a fresh copy of the
model is hot-swapped in every K frames, and the largest gap between consecutive inferences
around a swap is reported against the median interval. Half-way between two swaps the copy
swapped out is closed and the next one loaded, as the updater loads a release before it swaps
and closes the previous model after probation; the largest gap around that is reported too
(`load_max_gap_ms`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.cli_support import EXIT_INVALID, EXIT_REJECTED

__all__ = ["register", "run_bench"]

WARMUP = 10  # inferences left out at the start of the loop run


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


@dataclass
class _Run:
    """One run of the loop: (finished at, invoke ms) per inference, and what it saw."""

    done: list[tuple[float, float]] = field(default_factory=list)
    swaps: list[tuple[int, int]] = field(default_factory=list)  # len(done) before/after each
    loads: list[tuple[int, int]] = field(default_factory=list)  # and each load of a copy
    errors: int = 0
    dropped: int = 0
    e2e: tuple[float, float] = (0.0, 0.0)
    rss_mb: float = 0.0
    model: Any = None  # the model serving at the end


def _run_loop(model: Any, source: Any, options: Any, frames: int, swap_every: int,
              load: Any) -> _Run:
    """The agent's loop over `source` until WARMUP + `frames` inferences (or the source ends)."""
    import psutil

    from agent.loop import InferenceLoop, InferenceResult

    run, total = _Run(), frames + WARMUP
    finished = threading.Event()
    swap_due, load_due = threading.Event(), threading.Event()
    load_due.set()  # the first copy loads at once

    def listen(result: InferenceResult) -> None:
        if not result.ok:
            return
        run.done.append((result.ts, result.latency_ms))
        n = len(run.done)
        if swap_every and n > WARMUP:
            phase = (n - WARMUP) % swap_every
            if phase == 0:
                swap_due.set()
            elif phase == swap_every // 2:
                load_due.set()
        if n >= total:
            finished.set()

    loop = InferenceLoop(model, source, threading.Event(), options)
    loop.add_listener(listen)
    swapper = threading.Thread(target=_swapper, args=(loop, load, (load_due, swap_due),
                                                      finished, run), daemon=True)
    loop.start()
    if swap_every:
        swapper.start()
    try:
        while not finished.wait(0.2):
            if loop.finished:
                break
            run.rss_mb = max(run.rss_mb, psutil.Process().memory_info().rss / 2**20)
        run.rss_mb = max(run.rss_mb, psutil.Process().memory_info().rss / 2**20)
    finally:
        finished.set()
        loop.stop()
        if swapper.is_alive():
            swapper.join(10)
    snap = loop.snapshot()
    run.errors, run.dropped = snap.errors, snap.dropped_frames
    run.e2e, run.model = (snap.e2e_p50_ms, snap.e2e_p95_ms), loop.model
    return run


def run_bench(model_path: Path, source_uri: str | None, frames: int, threads: int,
              swap_every: int = 0, delegates: tuple[str, ...] = (), labels: Path | None = None,
              camera_size: tuple[int, int] = (640, 480)) -> dict[str, Any]:
    """Measure and return the figures `bench --json` prints."""
    import numpy as np

    from agent.loop import LoopOptions, stage_for
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

    def load() -> Any:
        return load_model(model_path, threads, delegates)

    probe = source()
    inputs = _first_input(probe, stage_for(model.signature, probe.kind, options))
    first = _bare(model, inputs, frames)
    last = _run_loop(model, source(), options, frames, swap_every, load)
    model = last.model  # after swaps: the copy serving now
    # the bare interpreter again: of the two runs, the faster is the reference (on a busy
    # machine this keeps the ratio conservative)
    invoke_fps, bare_ms = max(first, _bare(model, inputs, frames), key=lambda run: run[0])
    measured = last.done[WARMUP:WARMUP + frames]
    if len(measured) < 2:
        raise TimeoutError(f"only {len(measured)} frames inferred from {uri}")
    loop_fps = (len(measured) - 1) / (measured[-1][0] - measured[0][0])
    latencies = [ms for _, ms in measured]
    p50, p95, p99 = (float(v) for v in np.percentile(latencies, [50, 95, 99]))
    result: dict[str, Any] = {
        "model": str(model_path), "backend": model.backend, "threads": threads, "source": uri,
        "frames": len(latencies), "invoke_fps": round(invoke_fps, 2),
        "loop_fps": round(loop_fps, 2), "ratio": round(loop_fps / invoke_fps, 4),
        "p50_ms": round(p50, 3), "p95_ms": round(p95, 3), "p99_ms": round(p99, 3),
        "invoke_p50_ms": round(float(np.percentile(bare_ms, 50)), 3),
        "e2e_p50_ms": last.e2e[0], "e2e_p95_ms": last.e2e[1],
        "overhead_us": round((1.0 / loop_fps - 1.0 / invoke_fps) * 1e6, 1),
        "errors": last.errors, "dropped_frames": last.dropped, "rss_mb": round(last.rss_mb, 1),
    }
    if swap_every:
        intervals = np.diff(np.array([t for t, _ in last.done])) * 1000.0
        around = _gaps(intervals, last.swaps)
        loading = _gaps(intervals, [(b, a) for b, a in last.loads if b >= WARMUP])
        result.update({
            "swaps": len(last.swaps),
            "swap_max_gap_ms": round(max(around), 3) if around else None,
            "load_max_gap_ms": round(max(loading), 3) if loading else None,
            "median_interval_ms": round(float(statistics.median(intervals[WARMUP:])), 3),
            # the noise floor: how long an ordinary interval gets on this machine right now
            "interval_p95_ms": round(float(np.percentile(intervals[WARMUP:], 95)), 3),
        })
    model.close()
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


def _swapper(loop: Any, load: Any, due: tuple[threading.Event, threading.Event],
             finished: threading.Event, run: _Run) -> None:
    """When a load is due: close the copy swapped out last, load the next; swap it in when due."""
    load_due, swap_due = due
    old: Any = None
    try:
        while _wait(load_due, finished):
            before = len(run.done)
            if old is not None:
                old.close()
            old = load()  # the next copy (closed here if it is never swapped in)
            run.loads.append((before, len(run.done)))
            if not _wait(swap_due, finished):
                return
            before = len(run.done)
            old = loop.swap(old)
            run.swaps.append((before, len(run.done)))
            load_due.clear()  # a load falls due half-way to the next swap, not now
    finally:
        if old is not None:
            old.close()
