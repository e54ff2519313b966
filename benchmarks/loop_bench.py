"""The agent's inference loop against the bare interpreter over a 640x480 video file.

Prints one JSON line (the figures of `litefleet-agent bench --json`). By default: the sample
digits model, one interpreter thread, a generated 640x480 MJPG video of held-out digits (made in
a temporary folder), 600 frames. Any model works, e.g. the ones benchmarks/models/make_models.py
writes into .bench-models/:

    python benchmarks/loop_bench.py
    python benchmarks/loop_bench.py --model .bench-models/mobilenet_v2_035_160_int8.tflite
    python benchmarks/loop_bench.py --swap-every 50
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the imports below need the repo

from agent.commands.bench import run_bench  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "examples/models/digits.tflite")
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--swap-every", type=int, default=0)
    parser.add_argument("--video", type=Path, help="an existing video (default: generate one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        video = args.video
        if video is None:
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
        result = run_bench(
            args.model, f"file://{video}", args.frames, args.threads, args.swap_every
        )
    result["video"] = "640x480 MJPG digits" if args.video is None else str(args.video)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
