"""Shared by the drift and capture tests: digits videos (plain or inverted) and the digits
model's reference profile, built the way `litefleet compress` builds it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cloud.compress.iospec import read_io
from cloud.compress.reference import compute_reference, write_reference

REPO = Path(__file__).resolve().parents[2]
DIGITS = REPO / "examples" / "models" / "digits.tflite"
EVAL = REPO / "examples" / "data" / "digits-eval.npz"
SIDE = 112  # 4 x 28: the centre crop resized to 28 x 28 gives the digit back


def digits_video(path: Path, *, inverted: bool, frames: int = 450) -> Path:
    x = np.load(EVAL)["x"][:frames]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 20.0, (SIDE, SIDE))
    for digit in x:
        pixels = np.round(digit[:, :, 0] * 255).astype(np.uint8)
        if inverted:
            pixels = 255 - pixels
        big = cv2.resize(pixels, (SIDE, SIDE), interpolation=cv2.INTER_NEAREST)
        writer.write(cv2.cvtColor(big, cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


def digits_reference(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    reference = compute_reference(DIGITS.read_bytes(), read_io(DIGITS), [np.load(EVAL)["x"]])
    return write_reference(folder, reference)


def looping_agent(agent_process: Any, broker: Any, keys: list[str], **options: Any) -> Any:
    """An `agent_process` whose file source replays from the start when it ends."""
    agent = agent_process(broker, keys, start=False, **options)
    text = agent.config_path.read_text()
    agent.config_path.write_text(text.replace("\n[trust]", "loop = true\n\n[trust]", 1))
    agent.start()
    return agent
