"""A bad `[model] initial` stops the agent without bricking it: fix the config and restart.

Real `litefleet-agent run` processes, a real broker, the sample models. A file that is not a
model exits with code 2, one clear line and nothing made active in the state; once the config
names a good model, the next start serves it. While no OTA version is installed, a changed
`initial` is taken at the next start.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

from shared.keys import SigningKey

REPO = Path(__file__).resolve().parents[2]
DIGITS = REPO / "examples" / "models" / "digits.tflite"
DIGITS_FT = REPO / "examples" / "models" / "digits-ft.tflite"


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def active_link(state_dir: Path) -> str | None:
    link = state_dir / "models" / "digits" / "active"
    return os.readlink(link) if link.is_symlink() else None


def test_bad_initial_model_then_fixed_config_serves(  # type: ignore[no-untyped-def]
    mosquitto, agent_process, tmp_path: Path
) -> None:
    bad = tmp_path / "not-a-model.tflite"
    bad.write_bytes(b"this is not a flatbuffer, just some text\n" * 20)
    agent = agent_process(mosquitto, [SigningKey.generate().public.hex], start=False)
    good_config = agent.config_path.read_text()
    agent.config_path.write_text(good_config.replace(str(DIGITS), str(bad)))

    agent.start()
    assert agent.process is not None
    assert agent.process.wait(60) == 2
    log = agent.log()
    assert "does not load" in log and "fix the config and restart" in log
    assert "Traceback" not in log
    assert active_link(agent.state_dir) is None
    assert not (agent.state_dir / "models" / "digits" / f"{sha(bad)}.tflite").exists()

    agent.config_path.write_text(good_config)  # fix the config, start again
    agent.start()
    wait_until(
        lambda: "running: device dev-1, model digits v0" in agent.log(),
        60,
        "the agent serving the good model",
    )
    assert active_link(agent.state_dir) == f"{sha(DIGITS)}.tflite"
    assert agent.terminate() == 0

    # no OTA version installed: a changed `initial` is taken at the next start
    agent.config_path.write_text(good_config.replace(str(DIGITS), str(DIGITS_FT)))
    agent.start()
    wait_until(
        lambda: f"digits v0 ({sha(DIGITS_FT)[:12]})" in agent.log(),
        60,
        "the agent serving the new initial model",
    )
    assert active_link(agent.state_dir) == f"{sha(DIGITS_FT)}.tflite"
    assert agent.terminate() == 0


def test_state_left_by_a_bad_initial_recovers_once_the_config_is_fixed(  # type: ignore[no-untyped-def]
    mosquitto, agent_process, tmp_path: Path
) -> None:
    """A device whose state already names a non-model as active (older agents copied it)."""
    bad = b"not a model"
    bad_sha = hashlib.sha256(bad).hexdigest()
    agent = agent_process(mosquitto, [SigningKey.generate().public.hex], start=False)
    store = agent.state_dir / "models" / "digits"
    store.mkdir(parents=True)
    (store / f"{bad_sha}.tflite").write_bytes(bad)
    (store / "active").symlink_to(f"{bad_sha}.tflite")

    agent.start()
    wait_until(lambda: "running: device dev-1" in agent.log(), 60, "the agent serving")
    assert active_link(agent.state_dir) == f"{sha(DIGITS)}.tflite"
    assert agent.terminate() == 0
