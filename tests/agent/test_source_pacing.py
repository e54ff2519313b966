"""`run` paces synthetic and file sources to the device (camera fps, sensor rate) by default.

`bench` opens the same URIs unpaced; `?fps=0` / `?rate=0` ask for no pacing in `run` too.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from agent.config import parse_config
from agent.loop import build_loop
from agent.runtime import load_model
from agent.sources import SENSOR_RATE_HZ, open_source

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "examples" / "models"

CONFIG = """
device_id = "dev-01"
profile = "x86-gateway"
state_dir = "{state}"
[model]
name = "{name}"
initial = "{model}"
[source]
uri = "{uri}"
[trust]
keys = ["{key}"]
"""


def loop_for(tmp_path: Path, uri: str, model: str = "vibration"):  # type: ignore[no-untyped-def]
    text = CONFIG.format(
        state=tmp_path, name=model, model=MODELS / f"{model}.tflite", uri=uri, key="ab" * 32
    )
    config = parse_config(text, "agent.toml", tmp_path)
    loaded = load_model(config.model.initial, config.profile.runtime.threads)
    return config, build_loop(config, loaded, threading.Event())


@pytest.mark.parametrize(
    ("uri", "model", "pace"),
    [
        ("synthetic:sensor", "vibration", SENSOR_RATE_HZ),
        ("synthetic:sensor?rate=50", "vibration", 50.0),
        ("synthetic:sensor?rate=0", "vibration", None),
        ("synthetic:image", "digits", "camera"),
        ("synthetic:image?fps=0", "digits", None),
        ("images:///nowhere", "digits", "camera"),
    ],
)
def test_run_paces_synthetic_and_file_sources_by_default(
    tmp_path: Path, uri: str, model: str, pace: object
) -> None:
    config, loop = loop_for(tmp_path, uri, model)
    expected = float(config.profile.camera.fps) if pace == "camera" else pace
    assert loop.capture.source.pace == expected


def test_bench_opens_the_same_sources_unpaced() -> None:
    assert open_source("synthetic:sensor").pace is None
    assert open_source("synthetic:image").pace is None
    assert open_source("synthetic:sensor?rate=20").pace == 20.0


def test_a_sensor_run_without_a_rate_infers_at_about_the_sensor_rate(tmp_path: Path) -> None:
    _, loop = loop_for(tmp_path, "synthetic:sensor")
    window = loop.capture.stage.geometry[0] // (loop.capture.stage.geometry[1] or 1)
    start = time.monotonic()
    loop.start()
    try:
        deadline = start + 60
        while loop.snapshot().inferences < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        inferences = loop.snapshot().inferences
        elapsed = time.monotonic() - start
    finally:
        loop.stop()
    assert inferences >= 3
    # samples read cannot outrun the pace: a bound with twice the room, not a timing window
    assert inferences * window <= SENSOR_RATE_HZ * elapsed * 2 + window
