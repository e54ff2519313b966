"""`litefleet-agent bench`: the agent's real loop measured against the bare interpreter.

The bare interpreter: one preprocessed input, then set input / invoke / read output in a tight
loop. The agent's own loop: capture thread, preprocessing, inference thread, postprocessing,
over a source. The two alternate, bare-loop-bare-loop-...-bare, for `--rounds` rounds, and each
round's loop is compared with the faster of the bare runs either side of it: a burst of load
from elsewhere on the machine then spoils one round, not the figure. `ratio` = loop_fps /
invoke_fps of the median round (`round_ratios` lists them all); for tiny models `overhead_us`
is the loop's cost per frame. `outside_invoke_us` is the inference thread's time per frame
outside `invoke` (waiting for a frame, bookkeeping): when the ratio is low and this is small,
the invokes themselves ran slower beside the capture thread (shared cores or caches).

The plain loop (`naive_fps`) is what a user writes first: one thread that reads a frame (fully
decoded, as `VideoCapture.read` gives it), prepares it, invokes and interprets the output, over
the same source and model; it runs after each round's loop run. `vs_naive` = loop_fps /
naive_fps within one round, the median over rounds (`round_vs_naive`: every round), picked
apart from `ratio`'s median round (so `naive_fps` is that round's, not `loop_fps`'s round's).

With `--swap-every K` a fresh copy of the model is hot-swapped in every K frames.
`swap_max_gap_ms` is the largest interval between the last inference of one model and the first
of the next, against `median_interval_ms`; `interval_p95_ms` and `interval_p99_ms` say how long
ordinary intervals get on this machine. `swap_call_max_gap_ms` is the largest interval that
overlapped the caller's `swap()` call. Half-way between two swaps the copy swapped out is closed
and the next one loaded, as the updater loads a release before it swaps and closes the previous
model after probation; the largest interval around that is `load_max_gap_ms`. These figures
come from the median round too; `round_swap_gaps` lists every round's largest gap, in median
intervals.
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

from localio.cli import EXIT_INVALID, EXIT_REJECTED

__all__ = ["register", "run_bench"]

WARMUP = 10  # inferences left out at the start of the loop run


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "bench",
        help="measure the inference loop against the bare interpreter",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, type=Path, help="a .tflite model")
    p.add_argument("--source", help="a source URI (default: a synthetic source for the model)")
    p.add_argument("--frames", type=int, default=300, help="frames to measure (default 300)")
    p.add_argument(
        "--threads", type=int, default=None, help="interpreter threads (default: the profile's)"
    )
    p.add_argument(
        "--profile",
        default="x86-gateway",
        help="device profile for threads, delegates and camera size",
    )
    p.add_argument(
        "--swap-every",
        type=int,
        default=0,
        metavar="K",
        help="hot-swap a fresh copy of the model every K frames",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="bare/loop rounds; the median round is reported (default 5)",
    )
    p.add_argument("--labels", type=Path, help="labels file for the summary")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    from agent.opencv import OpenCVMissing
    from device_profiles import load_profile
    from device_profiles.profile import ProfileInvalid
    from shared.errors import Rejected

    if (
        args.frames < WARMUP + 2
        or args.swap_every < 0
        or (args.threads or 1) < 1
        or args.rounds < 1
    ):
        print(
            f"error: --frames must be at least {WARMUP + 2}, --threads, --rounds and "
            "--swap-every positive",
            file=sys.stderr,
        )
        return EXIT_INVALID
    try:
        profile = load_profile(args.profile)
    except ProfileInvalid as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INVALID
    try:
        result = run_bench(
            args.model,
            args.source,
            args.frames,
            args.threads or profile.runtime.threads,
            args.swap_every,
            profile.runtime.delegates,
            args.labels,
            (profile.camera.width, profile.camera.height),
            args.rounds,
        )
    except Rejected as e:
        print(f"error: {e.reason}: {e}", file=sys.stderr)
        return EXIT_REJECTED
    except (ValueError, TimeoutError, OpenCVMissing) as e:
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


def _naive(
    model: Any, source: Any, stage: Any, post: Any, frames: int, timeout: float = 60.0
) -> float:
    """Frames per second of a plain single-thread read-prepare-invoke-interpret loop.

    What a user writes first: no capture thread, no reduced decode (the frame comes whole, as
    `cv2.VideoCapture.read` gives it), the output interpreted on the spot. A finite source
    starts again at its end, as the agent's loop does with `replay`.
    """
    from agent.sources import SourceEnded

    windower = stage.windower
    if windower is not None:
        from agent.processing import Windower

        windower = Windower(windower.values, windower.channels, windower.hop)
    source.want(None)
    source.open()
    done, start = 0, 0.0
    deadline = time.monotonic() + timeout
    try:
        while done < WARMUP + frames:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the plain loop inferred {done} frames in {timeout:.0f} s")
            try:
                raw = source.read(0.5)
            except SourceEnded:
                source.close()
                source.open()
                continue
            if raw is None:
                continue
            if windower is not None:
                raw = windower.add(raw)
                if raw is None:
                    continue
            post(model.invoke(stage.prep(raw)))
            done += 1
            if done == WARMUP:
                start = time.perf_counter()
    finally:
        source.close()
    return frames / (time.perf_counter() - start)


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
    """One run of the loop: what each inference did, and what happened around them."""

    done: list[tuple[float, float, float]] = field(default_factory=list)  # finished, ms, captured
    changes: list[int] = field(default_factory=list)  # first inference of each new model
    swaps: list[tuple[int, int]] = field(default_factory=list)  # len(done) around swap()
    loads: list[tuple[int, int]] = field(default_factory=list)  # and around each load
    errors: int = 0
    dropped: int = 0
    rss_mb: float = 0.0
    model: Any = None  # the model serving at the end

    def measured(self, frames: int) -> list[tuple[float, float, float]]:
        return self.done[WARMUP : WARMUP + frames]

    def intervals(self) -> Any:
        import numpy as np

        return np.diff(np.array([t for t, _, _ in self.done])) * 1000.0


def _run_loop(
    model: Any, source: Any, options: Any, frames: int, swap_every: int, load: Any
) -> _Run:
    """The agent's loop over `source` until WARMUP + `frames` inferences (or the source ends)."""
    from agent.loop import InferenceLoop, InferenceResult
    from agent.system_metrics import read_rss_mb

    run, total = _Run(), frames + WARMUP
    finished = threading.Event()
    swap_due, load_due = threading.Event(), threading.Event()
    load_due.set()  # the first copy loads at once
    loop = InferenceLoop(model, source, threading.Event(), options)
    serving = [model]

    def listen(result: InferenceResult) -> None:
        if not result.ok:
            return
        # on the inference thread, between two frames: `loop.model` made this inference
        if loop.model is not serving[0]:
            serving[0] = loop.model
            run.changes.append(len(run.done))
        run.done.append((result.ts, result.latency_ms, result.captured))
        n = len(run.done)
        if swap_every and WARMUP < n < total:  # no swap as the run ends
            phase = (n - WARMUP) % swap_every
            if phase == 0:
                swap_due.set()
            elif phase == swap_every // 2:
                load_due.set()
        if n >= total:
            finished.set()

    loop.add_listener(listen)
    swapper = threading.Thread(
        target=_swapper, args=(loop, load, (load_due, swap_due), finished, run), daemon=True
    )
    loop.start()
    if swap_every:
        swapper.start()
    try:
        while not finished.wait(0.2):
            if loop.finished:
                break
            run.rss_mb = max(run.rss_mb, read_rss_mb() * 1e6 / 2**20)
        run.rss_mb = max(run.rss_mb, read_rss_mb() * 1e6 / 2**20)
    finally:
        finished.set()
        loop.stop()
        if swapper.is_alive():
            swapper.join(10)
    snap = loop.snapshot()
    run.errors, run.dropped, run.model = snap.errors, snap.dropped_frames, loop.model
    return run


def run_bench(
    model_path: Path,
    source_uri: str | None,
    frames: int,
    threads: int,
    swap_every: int = 0,
    delegates: tuple[str, ...] = (),
    labels: Path | None = None,
    camera_size: tuple[int, int] = (640, 480),
    rounds: int = 5,
) -> dict[str, Any]:
    """Measure and return the figures `bench --json` prints."""
    import numpy as np

    from agent.loop import LoopOptions, stage_for
    from agent.processing import Postprocess, input_kind, load_labels
    from agent.runtime import load_model
    from agent.sources import open_source
    from device_profiles.profile import CameraDefaults

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
    bare = [_bare(model, inputs, frames)]
    runs: list[_Run] = []
    naive: list[float] = []
    for _ in range(rounds):
        run = _run_loop(model, source(), options, frames, swap_every, load)
        model = run.model  # after swaps: the copy serving now
        runs.append(run)
        post = Postprocess(
            model.signature, list(options.labels), options.top_k, options.score_threshold
        )
        naive.append(
            _naive(model, source(), stage_for(model.signature, probe.kind, options), post, frames)
        )
        bare.append(_bare(model, inputs, frames))
    model.close()
    per_round = []  # (ratio, loop_fps, invoke_fps)
    vs_naive = []  # (loop_fps / naive_fps, naive_fps)
    for i, run in enumerate(runs):
        measured = run.measured(frames)
        if len(measured) < 2:
            raise TimeoutError(f"only {len(measured)} frames inferred from {uri}")
        loop_fps = (len(measured) - 1) / (measured[-1][0] - measured[0][0])
        # the faster bare run either side is the reference: conservative on a busy machine
        invoke_fps = max(bare[i][0], bare[i + 1][0])
        per_round.append((loop_fps / invoke_fps, loop_fps, invoke_fps))
        vs_naive.append((loop_fps / naive[i], naive[i]))
    _, loop_fps, invoke_fps = sorted(per_round)[(len(per_round) - 1) // 2]  # the median round
    measured = [m for run in runs for m in run.measured(frames)]
    latencies = [ms for _, ms, _ in measured]
    e2e = [(done - captured) * 1000.0 for done, _, captured in measured]
    p50, p95, p99 = (float(v) for v in np.percentile(latencies, [50, 95, 99]))
    bare_ms = [ms for _, run_ms in bare for ms in run_ms]
    result: dict[str, Any] = {
        "model": str(model_path),
        "backend": model.backend,
        "threads": threads,
        "source": uri,
        "frames": len(runs[0].measured(frames)),
        "rounds": rounds,
        "invoke_fps": round(invoke_fps, 2),
        "loop_fps": round(loop_fps, 2),
        "ratio": round(loop_fps / invoke_fps, 4),
        "round_ratios": [round(r, 4) for r, _, _ in per_round],
        "naive_fps": round(sorted(vs_naive)[(len(vs_naive) - 1) // 2][1], 2),
        "vs_naive": round(sorted(vs_naive)[(len(vs_naive) - 1) // 2][0], 4),
        "round_vs_naive": [round(r, 4) for r, _ in vs_naive],
        "p50_ms": round(p50, 3),
        "p95_ms": round(p95, 3),
        "p99_ms": round(p99, 3),
        "invoke_p50_ms": round(float(np.percentile(bare_ms, 50)), 3),
        "e2e_p50_ms": round(float(np.percentile(e2e, 50)), 3),
        "e2e_p95_ms": round(float(np.percentile(e2e, 95)), 3),
        "overhead_us": round((1.0 / loop_fps - 1.0 / invoke_fps) * 1e6, 1),
        "outside_invoke_us": round(
            float(np.mean([_outside_invoke_us(run, frames) for run in runs])), 1
        ),
        "errors": sum(run.errors for run in runs),
        "dropped_frames": sum(run.dropped for run in runs),
        "rss_mb": round(max(run.rss_mb for run in runs), 1),
    }
    if swap_every:
        result.update(_swap_figures(runs))
    return result


def _outside_invoke_us(run: _Run, frames: int) -> float:
    measured = run.measured(frames)
    span_ms = (measured[-1][0] - measured[0][0]) * 1000.0
    invoking_ms = sum(ms for _, ms, _ in measured[1:])
    return (span_ms - invoking_ms) / (len(measured) - 1) * 1000.0


def _swap_figures(runs: list[_Run]) -> dict[str, Any]:
    """The swap figures of the median round (by largest gap over median interval)."""
    import numpy as np

    rounds = []
    for run in runs:
        intervals = run.intervals()
        ordinary = intervals[WARMUP:]
        # the interval that ends with a new model's first inference spans the change
        changes = [float(intervals[k - 1]) for k in run.changes if 0 < k <= len(intervals)]
        calls = _gaps(intervals, run.swaps)
        loads = _gaps(intervals, [(b, a) for b, a in run.loads if b >= WARMUP])
        median = float(statistics.median(ordinary))
        figures: dict[str, Any] = {
            "swaps": len(changes),
            "swap_max_gap_ms": round(max(changes), 3) if changes else None,
            "swap_call_max_gap_ms": round(max(calls), 3) if calls else None,
            "load_max_gap_ms": round(max(loads), 3) if loads else None,
            "median_interval_ms": round(median, 3),
            # the noise floor: how long an ordinary interval gets on this machine right now
            "interval_p95_ms": round(float(np.percentile(ordinary, 95)), 3),
            "interval_p99_ms": round(float(np.percentile(ordinary, 99)), 3),
        }
        rounds.append((max(changes, default=0.0) / median, figures))
    rounds.sort(key=lambda r: r[0])
    result: dict[str, Any] = dict(rounds[(len(rounds) - 1) // 2][1])
    result["round_swap_gaps"] = [round(r, 2) for r, _ in rounds]  # in median intervals, sorted
    result["swaps_all_rounds"] = sum(f["swaps"] for _, f in rounds)
    return result


def _gaps(intervals: Any, stretches: list[tuple[int, int]]) -> list[float]:
    """The longest interval touching each stretch of inferences.

    Something (a swap, a load) ran while the inference count went from `before` to `after`:
    the intervals from the one ending at inference `before` to the one after inference `after`
    are those it could lengthen.
    """
    return [
        float(intervals[max(0, before - 1) : after + 1].max())
        for before, after in stretches
        if after + 1 <= len(intervals)
    ]


def _wait(event: threading.Event, finished: threading.Event) -> bool:
    while not event.wait(0.1):
        if finished.is_set():
            return False
    event.clear()
    return True


def _swapper(
    loop: Any,
    load: Any,
    due: tuple[threading.Event, threading.Event],
    finished: threading.Event,
    run: _Run,
) -> None:
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
