"""Every bundled device profile parses, fits an agent config, and says what ARCHITECTURE.md asks."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from agent.cli import main
from agent.config import ConfigInvalid, load_config
from device_profiles import bundled_profiles, load_profile
from device_profiles.profile import QUANTIZATIONS, ProfileInvalid

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "examples" / "models" / "digits.tflite"
REQUIRED = {"rpi4", "rpi5", "jetson-orin-nano", "coral-usb", "x86-gateway"}


def agent_config(tmp_path: Path, profile: str) -> Path:
    path = tmp_path / f"{profile}.toml"
    path.write_text(f"""\
device_id = "dev-{profile}"
profile = "{profile}"
state_dir = "{tmp_path / "state"}"
[mqtt]
host = "127.0.0.1"
[model]
name = "digits"
initial = "{MODEL}"
[source]
uri = "camera:0"
[trust]
keys = ["{"cd" * 32}"]
""")
    return path


def test_the_required_profiles_are_bundled() -> None:
    assert set(bundled_profiles()) >= REQUIRED


@pytest.mark.parametrize("name", bundled_profiles())
def test_profile_is_complete(name: str) -> None:
    text = (REPO / "device_profiles" / f"{name}.toml").read_text()
    doc = tomllib.loads(text)
    # every field is written out, not left to defaults: an operator reads these files
    assert set(doc) == {
        "name",
        "arch",
        "description",
        "accelerators",
        "quantizations",
        "runtime",
        "budget",
        "telemetry",
        "camera",
    }
    assert set(doc["runtime"]) == {"threads", "delegates"}
    assert set(doc["budget"]) == {
        "max_model_bytes",
        "memory_mb",
        "max_latency_ms",
        "max_accuracy_drop",
    }
    profile = load_profile(name)
    assert profile.name == name
    assert profile.arch in ("aarch64", "x86_64", "armv7l")
    assert profile.quantizations and set(profile.quantizations) <= set(QUANTIZATIONS)
    assert profile.runtime.threads >= 1
    assert profile.budget.memory_mb >= 128
    assert profile.budget.max_model_bytes < profile.budget.memory_mb * 1024 * 1024


def test_coral_uses_the_edgetpu_delegate_and_int8_only() -> None:
    coral = load_profile("coral-usb")
    assert coral.runtime.delegates == ("libedgetpu.so.1",)
    assert coral.quantizations == ("int8",)
    assert "edgetpu" in coral.accelerators


@pytest.mark.parametrize("name", bundled_profiles())
def test_agent_config_with_each_profile_is_valid(tmp_path: Path, name: str) -> None:
    config = load_config(agent_config(tmp_path, name))
    assert config.profile == load_profile(name)
    # the telemetry interval defaults to the profile's when the config does not set one
    assert config.telemetry.interval_s == config.profile.telemetry_interval_s


def test_a_broken_profile_file_lists_each_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("""\
arch = "aarch64"
quantizations = ["int4"]
[runtime]
threads = 0
[budget]
memory_mb = "lots"
""")
    with pytest.raises(ProfileInvalid) as e:
        load_profile(str(bad))
    problems = e.value.problems
    assert len(problems) == 4, problems
    for needle in ("name", "int4", "runtime.threads", "budget.memory_mb"):
        assert any(needle in p for p in problems), (needle, problems)


def test_four_mistakes_four_lines(tmp_path: Path) -> None:
    path = agent_config(tmp_path, "rpi4")
    path.write_text(
        path.read_text()
        .replace('device_id = "dev-rpi4"', 'device_id = "dev rpi4!"')
        .replace('profile = "rpi4"', 'profile = "rpi9"')
        .replace('uri = "camera:0"', 'uri = "ftp://cam"')
        .replace("cd" * 32, "not-a-key")
    )
    with pytest.raises(ConfigInvalid) as e:
        load_config(path)
    assert len(e.value.problems) >= 4, e.value.problems
    for needle in ("device_id", "rpi9", "source.uri", "trust.keys[0]"):
        assert any(needle in p for p in e.value.problems), (needle, e.value.problems)


@pytest.mark.parametrize("name", bundled_profiles())
def test_check_config_accepts_every_profile(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`litefleet-agent check-config` validates the keys and loads the model with the profile's
    runtime (coral-usb: the Edge TPU delegate is absent here, so the CPU serves)."""
    assert main(["check-config", "--config", str(agent_config(tmp_path, name))]) == 0
    out = capsys.readouterr().out
    assert f"profile {name}" in out
    assert "loads" in out


def test_check_config_prints_one_line_per_mistake(tmp_path: Path) -> None:
    path = agent_config(tmp_path, "rpi4")
    path.write_text(
        path.read_text()
        .replace('device_id = "dev-rpi4"', 'device_id = "dev rpi4!"')
        .replace('profile = "rpi4"', 'profile = "rpi9"')
        .replace('uri = "camera:0"', 'uri = "ftp://cam"')
        .replace("cd" * 32, "not-a-key")
    )
    done = subprocess.run(
        [sys.executable, "-m", "agent.cli", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 2
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    for needle in ("device_id", "rpi9", "source.uri", "trust.keys[0]"):
        assert sum(needle in line for line in lines) == 1, (needle, lines)
    assert len(lines) >= 4
