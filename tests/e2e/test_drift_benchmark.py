"""benchmarks/drift_cost.py runs from a clone and prints one JSON line with its figures
(figures only: timings are never asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_drift_cost_benchmark_prints_one_json_line(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "drift_cost.py"), "--frames", "200"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["benchmark"] == "drift_cost" and result["model"] == "digits.tflite"
    for key in (
        "loop_us_per_frame",
        "drift_us_per_frame",
        "drift_pct_of_loop",
        "drift_process_us_per_sample",
    ):
        assert result[key] > 0
