"""`litefleet-agent install`: --dry-run, paths checked inside --root, paths the unit hides, the
password file made readable by the service, and no "installed" where systemd cannot start it.

Nothing here installs into /: a live install is only ever a dry run."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from agent.cli import main
from agent.installer import InstallOptions, InstallRefused, install
from tests.agent.test_install import EXPECTED, INSTALLED_MODEL, MODEL, agent_toml, snapshot


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_dry_run_lists_every_file_user_and_unit_and_touches_nothing(tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path, agent_toml())
    root = tmp_path / "root"
    assert (
        main(["install", "--config", str(config), "--root", str(root), "--no-venv", "--dry-run"])
        == 0
    )
    out = capsys.readouterr().out
    assert not root.exists()  # nothing written
    for rel in EXPECTED:
        assert f"would create {root / rel}" in " ".join(out.split()), rel
    assert "user: litefleet" in out and "unit: litefleet-agent.service" in out
    assert out.splitlines()[-1].startswith("dry run:")
    # the real install makes exactly what the dry run listed
    assert main(["install", "--config", str(config), "--root", str(root), "--no-venv"]) == 0
    assert set(snapshot(root)) == EXPECTED


def test_with_root_the_model_is_looked_for_inside_the_tree(tmp_path: Path, capsys) -> None:
    root = tmp_path / "root"
    in_tree = root / str(INSTALLED_MODEL).lstrip("/")
    in_tree.parent.mkdir(parents=True)
    in_tree.write_bytes(MODEL.read_bytes())
    assert not INSTALLED_MODEL.exists()  # only in the image, not on this machine
    config = write_config(tmp_path, agent_toml())
    assert main(["install", "--config", str(config), "--root", str(root), "--no-venv"]) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.out + captured.err
    assert (root / "etc/litefleet/agent.toml").read_bytes() == config.read_bytes()


@pytest.mark.parametrize(
    ("key", "path", "setting"),
    [
        ("model", "/tmp/models/digits.tflite", "PrivateTmp=yes"),
        ("model", "/home/pi/digits.tflite", "ProtectHome=yes"),
        ("password", "/home/pi/mqtt.password", "ProtectHome=yes"),
        ("password", "/var/tmp/mqtt.password", "PrivateTmp=yes"),
    ],
)
def test_paths_the_unit_hides_are_refused_with_a_sentence(
    tmp_path: Path, capsys, key: str, path: str, setting: str
) -> None:
    root = tmp_path / "root"
    for p in (path, str(INSTALLED_MODEL)):  # present in the tree: only the hiding is wrong
        (root / p.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / p.lstrip("/")).write_bytes(b"x")
    if key == "model":
        text = agent_toml(model=Path(path))
    else:
        text = agent_toml().replace(
            "port = 1883", f'port = 1883\nusername = "cam-01"\npassword_file = "{path}"'
        )
    config = write_config(tmp_path, text)
    assert main(["install", "--config", str(config), "--root", str(root), "--no-venv"]) == 2
    err = capsys.readouterr().err
    assert f"{path} is hidden from the service ({setting}" in err
    assert len(err.strip().splitlines()) == 1
    assert not (root / "etc/litefleet/agent.toml").exists()


def test_the_password_file_becomes_readable_by_the_service_group(tmp_path: Path) -> None:
    root = tmp_path / "root"
    password = root / "etc/litefleet/mqtt.password"
    password.parent.mkdir(parents=True)
    password.write_text("s3cret\n")
    password.chmod(0o600)  # as an operator's umask or `broker-config` leaves it
    text = agent_toml().replace(
        "port = 1883",
        'port = 1883\nusername = "cam-01"\npassword_file = "/etc/litefleet/mqtt.password"',
    )
    config = write_config(tmp_path, text)
    report = install(InstallOptions(config=config, root=root, venv=False))
    assert stat.S_IMODE(password.stat().st_mode) == 0o640
    tmpfiles = (root / "etc/tmpfiles.d/litefleet.conf").read_text()
    assert "z /etc/litefleet/mqtt.password 0640 root litefleet -" in tmpfiles.splitlines()
    assert any(c.path == password and c.action == "updated" for c in report.changes)


def test_no_installed_where_systemd_cannot_start_it(tmp_path: Path) -> None:
    if MODEL.is_relative_to("/home") or MODEL.is_relative_to("/tmp"):
        pytest.skip("this checkout is where the unit hides files; a live config cannot use it")
    if Path("/etc/litefleet/agent.toml").exists():
        pytest.skip("an agent is installed on this machine")
    config = write_config(tmp_path, agent_toml(model=MODEL))
    live = InstallOptions(config=config, root=Path("/"), venv=False, dry_run=True)
    with pytest.raises(InstallRefused) as refused:
        install(live, systemd_running=False)
    assert any(
        "systemd is not running here" in p and "--no-start" in p for p in refused.value.problems
    )
    # with --no-start it goes ahead (here as a dry run: nothing is written to this machine)
    report = install(
        InstallOptions(config=config, root=Path("/"), venv=False, dry_run=True, start=False),
        systemd_running=False,
    )
    lines = report.lines()
    assert any(
        line.split()[:3] == ["would", "create", "/etc/litefleet/agent.toml"] for line in lines
    )
    assert any(line.startswith("would run: systemd-sysusers") for line in lines)
    assert not any(line.startswith("ran:") for line in lines)
    assert not Path("/etc/litefleet/agent.toml").exists()
