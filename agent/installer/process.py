"""Running the external programs the installer needs (python -m venv, pip, systemctl, ...)."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable, Sequence

__all__ = ["Runner", "StepFailed", "run_command"]

log = logging.getLogger(__name__)

Runner = Callable[[Sequence[str]], None]


class StepFailed(RuntimeError):
    """An external step exited non-zero; the message has the command and its last output."""


def run_command(command: Sequence[str]) -> None:
    log.info("running %s", " ".join(command))
    try:
        done = subprocess.run(list(command), capture_output=True, text=True, check=False)
    except OSError as e:
        raise StepFailed(f"{command[0]}: {e.strerror}") from e
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-15:]
        raise StepFailed(f"{' '.join(command)} exited {done.returncode}:\n" + "\n".join(tail))
