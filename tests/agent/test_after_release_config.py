"""[drift] and [capture] in the agent config: capture is off by default, drift on; every
problem is one line naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigInvalid, parse_config

REPO = Path(__file__).resolve().parents[2]
BASE = f"""
device_id = "cam-01"
profile = "x86-gateway"
[model]
name = "digits"
initial = "{REPO / "examples" / "models" / "digits.tflite"}"
[source]
uri = "synthetic:image"
[trust]
keys = ["{"ab" * 32}"]
"""


def test_defaults_capture_off_drift_on() -> None:
    config = parse_config(BASE)
    assert config.capture.enabled is False
    assert config.drift.enabled is True and config.drift.reference is None
    assert config.capture.triggers == ("low_confidence", "disagreement", "drift", "command")


def test_settings_are_read() -> None:
    config = parse_config(
        BASE
        + """
[drift]
window = 120
sample_hz = 2
[capture]
enabled = true
max_disk_mb = 5
max_per_hour = 10
triggers = ["command"]
"""
    )
    assert (config.drift.window, config.drift.sample_hz) == (120, 2.0)
    assert config.capture.enabled and config.capture.max_disk_mb == 5.0
    assert config.capture.max_per_hour == 10 and config.capture.triggers == ("command",)


def test_each_problem_is_one_line_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigInvalid) as e:
        parse_config(
            BASE
            + f"""
[drift]
window = 0
reference = "{tmp_path / "missing.json"}"
[capture]
max_per_hour = -1
triggers = ["sometimes"]
colour = "red"
"""
        )
    problems = "\n".join(e.value.problems)
    for key in (
        "drift.window",
        "drift.reference",
        "capture.max_per_hour",
        "capture.triggers",
        "capture.colour",
    ):
        assert key in problems, problems


def test_status_shows_capture_and_the_samples_waiting(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    import json

    from agent.capture.store import SampleStore
    from agent.cli import main

    state = tmp_path / "state"
    config = tmp_path / "agent.toml"
    config.write_text(
        BASE.replace('profile = "x86-gateway"', f'profile = "x86-gateway"\nstate_dir = "{state}"')
    )
    assert main(["status", "--config", str(config), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["capture"]["enabled"] is False and report["capture"]["files_waiting"] == 0
    SampleStore(state / "samples", 10**6).keep(
        "20260101T000000-0123abcd", "npy", b"x" * 100, {"trigger": "command"}
    )
    (state / "capture.json").write_text('{"enabled": true}')  # a signed command turned it on
    assert main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "capture     on, 2 sample file(s) waiting for upload" in out
