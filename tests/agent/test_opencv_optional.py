"""OpenCV is the `camera` extra: a sensor agent never loads it, and works without it.

Real `litefleet-agent` processes: a sensor agent (vibration model, synthetic samples) runs with
a real broker until it has delivered inferences, and its process never imported `cv2`. With
OpenCV made unimportable (as in a base install), the sensor agent still runs, and a camera,
video or image-folder source is refused with one line naming the extra, exit 2, no traceback.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "examples" / "models"

# runs the agent's CLI, optionally as a base install without OpenCV, and says at exit whether
# OpenCV was ever imported
LAUNCHER = """
import atexit, sys
if sys.argv[1] == "no-opencv":
    sys.modules["cv2"] = None  # `import cv2` raises ImportError, as without the extra
atexit.register(lambda: print("OPENCV_IMPORTED", sys.modules.get("cv2") is not None, flush=True))
from agent.cli import main
sys.exit(main(sys.argv[2:]))
"""

CONFIG = """
device_id = "dev-1"
profile = "x86-gateway"
state_dir = "{state}"
log_format = "text"
[mqtt]
host = "{host}"
port = {port}
[model]
name = "{name}"
initial = "{model}"
[source]
uri = "{uri}"
[trust]
keys = ["{key}"]
[telemetry]
interval_s = 0.5
"""


def write_config(
    tmp_path: Path, uri: str, name: str, host: str = "127.0.0.1", port: int = 1
) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(
        CONFIG.format(
            state=tmp_path / "state",
            host=host,
            port=port,
            name=name,
            model=MODELS / f"{name}.tflite",
            uri=uri,
            key="ab" * 32,
        )
    )
    return path


def agent(mode: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, mode, *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


@pytest.mark.parametrize("mode", ["with-opencv", "no-opencv"])
def test_a_sensor_agent_runs_without_importing_opencv(  # type: ignore[no-untyped-def]
    mosquitto, mqtt_subscriber, tmp_path: Path, mode: str
) -> None:
    sub = mqtt_subscriber(mosquitto, ["litefleet/v1/devices/dev-1/telemetry"])
    config = write_config(
        tmp_path, "synthetic:sensor?rate=2000", "vibration", mosquitto.host, mosquitto.port
    )
    proc = agent(mode, "run", "--config", str(config))
    try:
        delivered = sub.wait_for(
            lambda msgs: any(json.loads(m.payload).get("inferences", 0) > 0 for m in msgs),
            timeout=60,
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert delivered, out
    assert proc.returncode == 0, out
    assert "OPENCV_IMPORTED False" in out
    assert "Traceback" not in out


@pytest.mark.parametrize(
    "uri",
    [
        "camera:0",
        "file:///srv/video.mp4?fps=5",
        "http://127.0.0.1:1/stream.mjpg",
        "images:///srv/frames",
        "synthetic:image",
    ],
)
def test_frame_sources_without_opencv_name_the_extra(tmp_path: Path, uri: str) -> None:
    config = write_config(tmp_path, uri, "digits")
    for command in (["check-config", "--no-model"], ["run"]):
        proc = agent("no-opencv", *command, "--config", str(config))
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 2, out
        lines = [line for line in out.splitlines() if not line.startswith("OPENCV_IMPORTED")]
        assert len(lines) == 1, out
        assert "litefleet[camera]" in lines[0] and "source.uri: " in lines[0]
        assert "Traceback" not in out


def test_check_config_of_a_sensor_agent_without_opencv_is_valid(tmp_path: Path) -> None:
    config = write_config(tmp_path, "synthetic:sensor", "vibration")
    proc = agent("no-opencv", "check-config", "--config", str(config))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "OPENCV_IMPORTED False" in out


def test_bench_of_an_image_model_without_opencv_names_the_extra() -> None:
    proc = agent("no-opencv", "bench", "--model", str(MODELS / "digits.tflite"), "--frames", "20")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, out
    assert "litefleet[camera]" in out and "Traceback" not in out
