"""What drift measurement costs the inference loop, per frame, on the sample model.

Prints one JSON line. The loop's time per frame comes from `litefleet-agent bench` (the real
loop over a generated 640x480 MJPG video of held-out digits). Drift's cost is measured on the
same model's real inferences: `observe` (the inference thread's part, every frame) and
`process` (the drift thread's part, per frame it samples), amortised over the loop's frame rate
at the default sampling rate (`[drift] sample_hz`), and also for the worst case of every frame
sampled. The share is of the loop's time per frame (the issue's budget: 2 %).

    python benchmarks/drift_cost.py
    python benchmarks/drift_cost.py --frames 2000 --sample-hz 5
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the imports below need the repo

from agent.commands.bench import run_bench  # noqa: E402
from agent.drift import DriftMonitor, DriftOptions  # noqa: E402
from agent.loop import InferenceResult  # noqa: E402
from agent.references import ReferenceBook  # noqa: E402
from agent.runtime import load_model  # noqa: E402
from cloud.compress.iospec import read_io  # noqa: E402
from cloud.compress.reference import compute_reference  # noqa: E402

EVAL = ROOT / "examples/data/digits-eval.npz"


def drift_costs(model_path: Path, frames: int, tmp: Path) -> tuple[float, float, float]:
    """(observe µs for a frame handed over, observe µs for a frame the rate limit turns away,
    process µs per frame handed over) on real inferences."""
    model = load_model(model_path, threads=1)
    x = np.load(EVAL)["x"]
    book = ReferenceBook(tmp)
    book.remember(
        model.sha256, compute_reference(model_path.read_bytes(), read_io(model_path), [x])
    )
    results = []
    for i in range(frames):
        inputs = [x[i % len(x)][None].astype(np.float32)]
        results.append(
            InferenceResult(
                model.sha256, True, 1.0, inputs, i, float(i), model.invoke(inputs), True
            )
        )
    monitor = DriftMonitor(
        book,
        lambda sha: model.signature,
        threading.Event(),
        DriftOptions(sample_hz=1.0, pending=frames, score_interval_s=0.0),
    )
    start = time.perf_counter()
    for r in results:  # ts one second apart: every frame is handed over (the worst case)
        monitor.observe(r)
    observe_us = (time.perf_counter() - start) / frames * 1e6
    monitor.process()  # the first pass builds the window: not a per-frame cost
    for r in results:  # the same frames again, later
        monitor.observe(dataclasses.replace(r, ts=r.ts + frames + 1))
    start = time.perf_counter()
    processed = monitor.process()  # features and histograms of every frame, scored once
    process_us = (time.perf_counter() - start) / max(processed, 1) * 1e6
    # the common case on the inference thread: a frame the rate limit turns away
    skip = DriftMonitor(
        book, lambda sha: model.signature, threading.Event(), DriftOptions(sample_hz=1e-9)
    )
    skip.observe(results[0])
    start = time.perf_counter()
    for r in results:
        skip.observe(r)
    skip_us = (time.perf_counter() - start) / frames * 1e6
    model.close()
    return observe_us, skip_us, process_us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "examples/models/digits.tflite")
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--sample-hz", type=float, default=DriftOptions().sample_hz)
    parser.add_argument(
        "--camera-fps",
        type=float,
        default=30.0,
        help="also give the cost per frame of a live camera at this rate",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "digits.avi"
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "examples/make_digits_video.py"),
                "--out",
                str(video),
                "--frames",
                "300",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        bench = run_bench(args.model, f"file://{video}", 600, 1, 0)
        handover_us, skip_us, process_us = drift_costs(args.model, args.frames, Path(tmp) / "refs")
    loop_fps = float(bench["loop_fps"])
    loop_us = 1e6 / loop_fps
    sampled_share = min(1.0, args.sample_hz / loop_fps)  # frames the drift thread measures
    per_frame_us = skip_us * (1 - sampled_share) + (handover_us + process_us) * sampled_share
    every_frame_us = handover_us + process_us
    camera_share = min(1.0, args.sample_hz / args.camera_fps)
    camera_us = skip_us * (1 - camera_share) + (handover_us + process_us) * camera_share
    print(
        json.dumps(
            {
                "benchmark": "drift_cost",
                "model": args.model.name,
                "loop_fps": round(loop_fps, 1),
                "loop_us_per_frame": round(loop_us, 1),
                "sample_hz": args.sample_hz,
                "drift_observe_skip_us": round(skip_us, 2),
                "drift_observe_handover_us": round(handover_us, 2),
                "drift_process_us_per_sample": round(process_us, 1),
                "drift_us_per_frame": round(per_frame_us, 2),
                "drift_pct_of_loop": round(100 * per_frame_us / loop_us, 3),
                "camera_fps": args.camera_fps,
                "camera_drift_us_per_frame": round(camera_us, 2),
                "camera_drift_pct_of_loop": round(100 * camera_us / loop_us, 2),
                "every_frame_us": round(every_frame_us, 1),
                "every_frame_pct_of_loop": round(100 * every_frame_us / loop_us, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
