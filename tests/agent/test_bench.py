"""`litefleet-agent bench` end to end, as a user runs it (figures are not asserted, only sanity)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "examples" / "models" / "digits.tflite"
KEYS = {
    "model",
    "frames",
    "invoke_fps",
    "loop_fps",
    "ratio",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "rss_mb",
}


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "bench", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )


def test_bench_json_over_a_video_file(tmp_path: Path) -> None:
    video = tmp_path / "v.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (640, 480))
    for i in range(40):
        writer.write(np.full((480, 640, 3), i * 5, np.uint8))
    writer.release()
    done = bench(
        "--model",
        str(DIGITS),
        "--source",
        f"file://{video}",
        "--frames",
        "60",
        "--threads",
        "1",
        "--rounds",
        "2",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(result) >= KEYS
    assert result["frames"] == 60  # the 40-frame file is replayed to reach 60
    assert result["source"] == f"file://{video}" and result["threads"] == 1
    assert result["invoke_fps"] > 0 and result["loop_fps"] > 0
    assert result["ratio"] == pytest.approx(result["loop_fps"] / result["invoke_fps"], abs=1e-4)
    assert result["rounds"] == 2 and len(result["round_ratios"]) == 2
    assert result["ratio"] == min(result["round_ratios"])  # of two rounds, the lower
    assert result["outside_invoke_us"] > 0 and result["e2e_p50_ms"] >= result["p50_ms"]
    assert 0 < result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"]
    assert result["errors"] == 0 and result["dropped_frames"] == 0 and result["rss_mb"] > 10
    # the plain single-thread loop over the same file, and the agent's loop against it
    assert result["naive_fps"] > 0 and len(result["round_vs_naive"]) == 2
    assert result["vs_naive"] == min(result["round_vs_naive"])


def test_bench_with_hot_swaps_on_the_default_synthetic_source() -> None:
    done = bench("--model", str(DIGITS), "--frames", "200", "--swap-every", "50", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["source"] == "synthetic:image"
    assert result["swaps"] >= 3 and len(result["round_swap_gaps"]) == 5
    assert result["swaps_all_rounds"] >= 5 * result["swaps"] - 4
    assert result["swap_max_gap_ms"] > 0 and result["median_interval_ms"] > 0
    assert result["load_max_gap_ms"] > 0  # loading the next copy beside the loop, reported
    assert result["errors"] == 0


def test_bench_table_for_a_sensor_model() -> None:
    done = bench(
        "--model", str(ROOT / "examples" / "models" / "vibration.tflite"), "--frames", "30"
    )
    assert done.returncode == 0, done.stderr
    assert "synthetic:sensor" in done.stdout
    assert any(line.split()[:1] == ["loop_fps"] for line in done.stdout.splitlines())


def test_bench_refuses_zero_rounds() -> None:
    done = bench("--model", str(DIGITS), "--rounds", "0", "--json")
    assert done.returncode == 2 and "--rounds" in done.stderr


def test_bench_refuses_a_broken_model(tmp_path: Path) -> None:
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"\x00" * 100)
    done = bench("--model", str(broken), "--json")
    assert done.returncode == 3
    assert "invalid_model" in done.stderr
