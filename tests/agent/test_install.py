"""`litefleet-agent install --root`: the tree it writes, idempotence, refusals, uninstall."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import main
from agent.installer import (
    InstallOptions,
    InstallRefused,
    install,
    live_systemd_commands,
    uninstall,
)
from device_profiles import bundled_profiles

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "examples" / "models" / "digits.tflite"
# where the configs put the model: a device path, not this checkout (which may be under /home,
# a path the unit hides from the service)
INSTALLED_MODEL = Path("/usr/share/litefleet/digits.tflite")
KEY = "ab" * 32
EXPECTED = {
    "etc/litefleet/agent.toml",
    "etc/systemd/system/litefleet-agent.service",
    "etc/systemd/system/litefleet-agent.service.d/50-profile.conf",
    "etc/systemd/system/multi-user.target.wants/litefleet-agent.service",
    "etc/sysusers.d/litefleet.conf",
    "etc/tmpfiles.d/litefleet.conf",
}


def agent_toml(profile: str = "x86-gateway", model: Path = INSTALLED_MODEL, extra: str = "") -> str:
    return f"""\
device_id = "cam-01"
profile = "{profile}"
state_dir = "/var/lib/litefleet"
{extra}
[mqtt]
host = "broker.local"
port = 1883

[model]
name = "digits"
initial = "{model}"

[source]
uri = "camera:0"

[trust]
keys = ["{KEY}"]
"""


def snapshot(root: Path) -> dict[str, tuple[str, int, int]]:
    """Every file and symlink under root: (sha256 or link target, mtime_ns, mode)."""
    out: dict[str, tuple[str, int, int]] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        st = path.lstat()
        if path.is_symlink():
            out[rel] = (os.readlink(path), st.st_mtime_ns, st.st_mode)
        elif path.is_file():
            out[rel] = (hashlib.sha256(path.read_bytes()).hexdigest(), st.st_mtime_ns, st.st_mode)
    return out


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(agent_toml())
    return path


def test_tree_then_nothing_changes(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    argv = ["install", "--config", str(config), "--root", str(root), "--no-venv"]
    assert main(argv) == 0
    first_out = capsys.readouterr().out
    first = snapshot(root)
    assert set(first) == EXPECTED
    assert first_out.count("created") == len(EXPECTED)
    assert first_out.rstrip().endswith("installed")

    # what landed where
    assert (root / "etc/litefleet/agent.toml").read_bytes() == config.read_bytes()
    assert (root / "etc/litefleet/agent.toml").stat().st_mode & 0o777 == 0o640
    unit = (root / "etc/systemd/system/litefleet-agent.service").read_text()
    assert unit == (REPO / "systemd/litefleet-agent.service").read_text()  # default prefix
    dropin = (root / "etc/systemd/system/litefleet-agent.service.d/50-profile.conf").read_text()
    assert "MemoryMax=1024M\n" in dropin  # x86-gateway budget.memory_mb
    assert (root / "etc/sysusers.d/litefleet.conf").read_text() == (
        REPO / "systemd/litefleet.sysusers"
    ).read_text()
    assert (root / "etc/tmpfiles.d/litefleet.conf").read_text() == (
        REPO / "systemd/litefleet.tmpfiles"
    ).read_text()
    assert (
        os.readlink(root / "etc/systemd/system/multi-user.target.wants/litefleet-agent.service")
        == "/etc/systemd/system/litefleet-agent.service"
    )

    assert main(argv) == 0
    second_out = capsys.readouterr().out
    assert snapshot(root) == first  # same files, same bytes, same mtimes, same modes
    assert "created" not in second_out and "updated" not in second_out
    assert second_out.count("unchanged") == len(EXPECTED)
    assert "nothing to do" in second_out


def test_changed_config_is_updated_alone(tmp_path: Path, config: Path) -> None:
    root = tmp_path / "root"
    options = InstallOptions(config=config, root=root, venv=False)
    install(options)
    before = snapshot(root)
    config.write_text(agent_toml(profile="rpi4"))
    report = install(options)
    after = snapshot(root)
    changed = {rel for rel in after if after[rel] != before[rel]}
    assert changed == {
        "etc/litefleet/agent.toml",
        "etc/systemd/system/litefleet-agent.service.d/50-profile.conf",
    }
    assert {
        str(c.path.relative_to(root)) for c in report.changes if c.action == "updated"
    } == changed
    assert (
        "MemoryMax=512M"
        in (root / "etc/systemd/system/litefleet-agent.service.d/50-profile.conf").read_text()
    )


def test_prefix_relocates_execstart(tmp_path: Path, config: Path) -> None:
    root = tmp_path / "root"
    install(
        InstallOptions(
            config=config, root=root, prefix="/usr/local/litefleet", venv=False, start=False
        )
    )
    unit = (root / "etc/systemd/system/litefleet-agent.service").read_text()
    assert (
        "ExecStart=/usr/local/litefleet/venv/bin/litefleet-agent run --config "
        "/etc/litefleet/agent.toml"
    ) in unit
    assert "/opt/litefleet" not in unit
    assert not (root / "etc/systemd/system/multi-user.target.wants").exists()  # --no-start


@pytest.mark.parametrize("profile", bundled_profiles())
def test_every_profile_installs_a_hardened_service(tmp_path: Path, profile: str) -> None:
    """The installed unit plus its profile drop-in still rates <= 2.0 in systemd-analyze."""
    config = tmp_path / "agent.toml"
    config.write_text(agent_toml(profile=profile))
    root = tmp_path / "root"
    install(InstallOptions(config=config, root=root, venv=False))
    dropin = (root / "etc/systemd/system/litefleet-agent.service.d/50-profile.conf").read_text()
    assert re.search(r"^MemoryMax=\d+M$", dropin, re.M)
    if profile == "coral-usb":
        assert "DeviceAllow=char-usb_device rw" in dropin
    done = subprocess.run(
        [
            "systemd-analyze",
            "security",
            "--offline=yes",
            f"--root={root}",
            "--no-pager",
            "litefleet-agent.service",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert match, done.stdout + done.stderr
    assert float(match.group(1)) <= 2.0


def test_invalid_config_is_refused_with_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        agent_toml(profile="no-such-board")
        .replace('"cam-01"', '"cam 01"')
        .replace("port = 1883", "port = 0")
    )
    root = tmp_path / "root"
    assert main(["install", "--config", str(config), "--root", str(root), "--no-venv"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) >= 3
    assert any("device_id" in line for line in err)
    assert any("no-such-board" in line for line in err)
    assert any("mqtt.port" in line for line in err)
    assert not root.exists()  # nothing written


def test_relative_model_path_is_refused(tmp_path: Path) -> None:
    """Relative paths would resolve against /etc/litefleet once the config is installed."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "digits.tflite").write_bytes(MODEL.read_bytes())
    config = tmp_path / "agent.toml"
    config.write_text(agent_toml(model=Path("models/digits.tflite")))
    with pytest.raises(InstallRefused) as e:
        install(InstallOptions(config=config, root=tmp_path / "root", venv=False))
    assert e.value.problems == [
        "model.initial: 'models/digits.tflite' is relative; the installed config lives in "
        "/etc/litefleet, so give an absolute path"
    ]
    assert not (tmp_path / "root").exists()


def test_state_dir_outside_the_state_directory_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(agent_toml().replace('"/var/lib/litefleet"', '"/srv/litefleet"'))
    with pytest.raises(InstallRefused) as e:
        install(InstallOptions(config=config, root=tmp_path / "root", venv=False))
    assert len(e.value.problems) == 1 and e.value.problems[0].startswith("state_dir: /srv/")
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize("prefix", ["opt/litefleet", "/home/pi/litefleet", "/opt/lite fleet"])
def test_bad_prefix_is_refused(tmp_path: Path, config: Path, prefix: str) -> None:
    with pytest.raises(InstallRefused, match="--prefix"):
        install(InstallOptions(config=config, root=tmp_path / "root", prefix=prefix, venv=False))


def test_model_missing_from_the_image_is_a_warning(tmp_path: Path, config: Path) -> None:
    report = install(InstallOptions(config=config, root=tmp_path / "root", venv=False))
    assert any(line.startswith("warning: model.initial") for line in report.notes)
    target = tmp_path / "root" / str(INSTALLED_MODEL).lstrip("/")
    target.parent.mkdir(parents=True)
    target.write_bytes(MODEL.read_bytes())
    report = install(InstallOptions(config=config, root=tmp_path / "root", venv=False))
    assert not any(line.startswith("warning:") for line in report.notes)


def test_uninstall_keeps_state_unless_purge(tmp_path: Path, config: Path) -> None:
    root = tmp_path / "root"
    install(InstallOptions(config=config, root=root, venv=False))
    state = root / "var/lib/litefleet/models/digits"
    state.mkdir(parents=True)
    (state / "active").write_text("model bytes")
    # a venv left by an earlier install (pyvenv.cfg marks it as one)
    (root / "opt/litefleet/venv/bin").mkdir(parents=True)
    (root / "opt/litefleet/venv/pyvenv.cfg").write_text("home = /usr/bin\n")

    report = uninstall(root)
    remaining = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    assert remaining == {"etc/litefleet/agent.toml", "var/lib/litefleet/models/digits/active"}
    assert not (root / "opt/litefleet").exists()
    assert {c.action for c in report.changes} >= {"removed", "kept"}

    assert main(["uninstall", "--root", str(root), "--purge"]) == 0
    assert [p for p in root.rglob("*") if p.is_file()] == []
    assert not (root / "var/lib/litefleet").exists()


def test_live_commands() -> None:
    assert live_systemd_commands(changed=True, start=True) == [
        ["systemd-sysusers", "/etc/sysusers.d/litefleet.conf"],
        ["systemd-tmpfiles", "--create", "/etc/tmpfiles.d/litefleet.conf"],
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "litefleet-agent.service"],
        ["systemctl", "restart", "litefleet-agent.service"],
    ]
    unchanged = live_systemd_commands(changed=False, start=True)
    assert ["systemctl", "daemon-reload"] not in unchanged
    assert unchanged[-1] == ["systemctl", "start", "litefleet-agent.service"]
    assert all(c[0] != "systemctl" for c in live_systemd_commands(changed=True, start=False)[:2])
    assert ["systemctl", "enable", "litefleet-agent.service"] not in live_systemd_commands(
        changed=True, start=False
    )


def test_cli_help_lists_install_and_uninstall() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agent.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=REPO,
    )
    assert "install" in done.stdout and "uninstall" in done.stdout
