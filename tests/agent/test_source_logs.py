"""What video sources write to the log: no native OpenCV/FFmpeg lines, one line per file.

A refused HTTP stream makes FFmpeg write `[tcp @ 0x...] Connection ... failed` straight to
the process's output, outside logging; the agent keeps those off (its own `down: cannot open` line says what
happened) unless the operator's environment asks for them. A file played in a loop is opened
once per pass and says so once at INFO.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.loop import InferenceLoop, LoopOptions
from agent.runtime import load_model
from agent.sources import open_source

REPO = Path(__file__).resolve().parents[2]
DIGITS = REPO / "examples" / "models" / "digits.tflite"

OPEN_REFUSED_STREAM = """
import logging, socket, sys
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="LOG %(name)s %(message)s")
from agent.sources import SourceDown, open_source
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]  # closed again: nothing listens there
source = open_source(f"http://127.0.0.1:{port}/stream.mjpg")
try:
    source.open()
except SourceDown as e:
    print("LOG down:", e)
"""


def run_open(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", OPEN_REFUSED_STREAM],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
    )


def test_ffmpeg_messages_stay_off_stderr_unless_asked_for() -> None:
    quiet = run_open({})
    assert "LOG down: cannot open http://127.0.0.1:" in quiet.stdout
    assert "OPENCV_FFMPEG_LOGLEVEL" in quiet.stdout  # the one line that says how to see them
    assert "Connection refused" not in quiet.stdout + quiet.stderr, quiet.stdout + quiet.stderr
    # positive control: asked for, FFmpeg's own line is written (OpenCV's logger: stdout)
    loud = run_open({"OPENCV_FFMPEG_LOGLEVEL": "24"})
    assert "Connection refused" in loud.stdout + loud.stderr


def write_video(path: Path, frames: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 15, (64, 48))
    for i in range(frames):
        writer.write(np.full((48, 64, 3), i * 20 % 255, np.uint8))
    writer.release()
    return path


def test_a_file_played_in_a_loop_opens_once_per_pass_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    video = write_video(tmp_path / "short.avi", 10)
    source = open_source(f"file://{video}")
    loop = InferenceLoop(
        load_model(DIGITS, threads=1), source, threading.Event(), LoopOptions(replay=True)
    )
    caplog.set_level(logging.DEBUG, logger="agent.sources.video")
    loop.start()
    try:
        deadline = time.monotonic() + 60
        while loop.capture.frames < 45 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        loop.stop()
    frames = loop.capture.frames
    assert frames >= 45
    assert 4 <= source.opens <= frames // 10 + 1  # once per pass of 10 frames
    info = [r for r in caplog.records if r.levelno >= logging.INFO and "opened" in r.message]
    assert len(info) == 1
