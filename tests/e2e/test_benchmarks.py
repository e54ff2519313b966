"""The benchmarks run from a clone: no TensorFlow, no machine-specific path."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_ota_benchmark_runs_on_the_example_models_without_tensorflow(tmp_path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "LITEFLEET_TF_PYTHON": str(tmp_path / "no-tensorflow-here" / "python"),
    }
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "ota_update.py"), "--runs", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 1  # one JSON line, as every benchmark prints
    result = json.loads(lines[0])
    assert result["benchmark"] == "ota_update" and result["models"] == "examples"
    assert result["model_bytes"] == (REPO / "examples/models/digits-ft.tflite").stat().st_size
    assert 0 < result["delta_bytes"] < result["full_bytes"]  # only the last layer changed
    assert not (tmp_path / "cache").exists()  # nothing was built


def test_no_benchmark_or_make_target_names_a_machine_path() -> None:
    machine = re.compile(r"/work/|/home/|tfvenv")
    for path in [REPO / "Makefile", *sorted((REPO / "benchmarks").rglob("*.py"))]:
        assert not machine.search(path.read_text()), path


def test_the_partitions_benchmark_prunes_the_same_day_on_both_schemas(tmp_path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "partitions.py"),
            "--rounds",
            "2",
            "--days",
            "2",
            "--rows-per-day",
            "10000",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["rows_per_day"] == 10000
    assert result["prune_rows"] == {"plain": 10000, "partitioned": 10000}
    assert result["ingest_records_per_s_plain"] > 0 < result["ingest_records_per_s_partitioned"]
