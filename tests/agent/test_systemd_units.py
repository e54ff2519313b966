"""The unit files pass systemd's own checks: `verify` and the offline security exposure."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "systemd"
ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
MAX_EXPOSURE = 2.0


def exposure(unit: Path, root: Path | None = None) -> float:
    command = [ANALYZE, "security", "--offline=yes", "--no-pager"]
    if root is not None:
        command.append(f"--root={root}")
    command.append(unit.name if root is not None else str(unit))
    done = subprocess.run(
        command, capture_output=True, text=True, cwd=unit.parent, timeout=120, check=False
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert match, done.stdout + done.stderr
    return float(match.group(1))


@pytest.mark.parametrize(
    "name", ["litefleet-agent.service", "litefleet-cloud.service", "litefleet-cloud-prune.service"]
)
def test_exposure_is_low(name: str) -> None:
    figure = exposure(UNITS / name)
    assert figure <= MAX_EXPOSURE, f"{name}: exposure {figure}"


def test_verify_reports_only_the_missing_binaries() -> None:
    units = sorted(str(p) for p in [*UNITS.glob("*.service"), *UNITS.glob("*.timer")])
    assert len(units) == 4
    done = subprocess.run(
        [ANALYZE, "verify", *units], capture_output=True, text=True, timeout=120, check=False
    )
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert lines, "verify ran: the venv binaries do not exist on this machine"
    for line in lines:
        assert re.search(
            r"Command /opt/litefleet(-cloud)?/venv/bin/\S+ is not executable: "
            r"No such file or directory",
            line,
        ), line


def test_agent_unit_has_the_contract() -> None:
    text = (UNITS / "litefleet-agent.service").read_text()
    settings = {
        line.split("=", 1)[0]
        for line in text.splitlines()
        if "=" in line and not line.startswith("#")
    }
    for key in (
        "Type",
        "WatchdogSec",
        "Restart",
        "StartLimitBurst",
        "StateDirectory",
        "ConfigurationDirectory",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "NoNewPrivileges",
        "CapabilityBoundingSet",
        "RestrictAddressFamilies",
        "SystemCallFilter",
        "SupplementaryGroups",
        "DeviceAllow",
    ):
        assert key in settings, key
    assert "Type=notify\n" in text
    assert "CapabilityBoundingSet=\n" in text
    assert "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX\n" in text
    assert (
        "ExecStart=/opt/litefleet/venv/bin/litefleet-agent run --config /etc/litefleet/agent.toml\n"
    ) in text


def test_sysusers_and_tmpfiles_snippets_apply_to_a_tree(tmp_path: Path) -> None:
    """systemd-sysusers and systemd-tmpfiles accept the snippets and create user and dirs."""
    etc = tmp_path / "etc"
    (etc / "sysusers.d").mkdir(parents=True)
    (etc / "tmpfiles.d").mkdir()
    for name in ("passwd", "group"):
        shutil.copy(f"/etc/{name}", etc / name)  # video and dialout come from the base system
    for stem in ("litefleet", "litefleet-cloud"):
        shutil.copy(UNITS / f"{stem}.sysusers", etc / "sysusers.d" / f"{stem}.conf")
        shutil.copy(UNITS / f"{stem}.tmpfiles", etc / "tmpfiles.d" / f"{stem}.conf")
    done = subprocess.run(
        ["systemd-sysusers", f"--root={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    passwd = {
        line.split(":")[0]: line.split(":") for line in (etc / "passwd").read_text().splitlines()
    }
    assert passwd["litefleet"][6] in ("/usr/sbin/nologin", "/sbin/nologin")
    assert "litefleet-cloud" in passwd
    groups = {
        line.split(":")[0]: line.split(":") for line in (etc / "group").read_text().splitlines()
    }
    assert "litefleet" in groups["video"][3].split(",")
    assert "litefleet" in groups["dialout"][3].split(",")

    done = subprocess.run(
        ["systemd-tmpfiles", f"--root={tmp_path}", "--create"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if os.geteuid() == 0:  # as another user the chown to litefleet cannot succeed
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "var/lib/litefleet").stat().st_uid == int(passwd["litefleet"][2])
        assert (tmp_path / "etc/litefleet").stat().st_gid == int(groups["litefleet"][2])
    for folder, mode in (
        ("etc/litefleet", 0o750),
        ("var/lib/litefleet", 0o750),
        ("var/lib/litefleet/downloads", 0o750),
        ("var/lib/litefleet-cloud", 0o750),
    ):
        assert (tmp_path / folder).stat().st_mode & 0o777 == mode, folder


def test_the_prune_timer_runs_the_prune_service_daily_with_the_documented_retention() -> None:
    timer = (UNITS / "litefleet-cloud-prune.timer").read_text()
    assert "OnCalendar=daily\n" in timer and "Persistent=true\n" in timer
    service = (UNITS / "litefleet-cloud-prune.service").read_text()
    [start] = [line for line in service.splitlines() if line.startswith("ExecStart=")]
    argv = start.removeprefix("ExecStart=").split()
    assert argv[1:4] == ["store", "prune", "--older-than"]
    # the arguments parse with the CLI as shipped (a typo would fail every night)
    from cloud import commands
    from cloud.cli import DESCRIPTION, build_parser

    args = build_parser("litefleet", DESCRIPTION, commands).parse_args(argv[1:])
    assert (args.older_than, args.rollup_older_than) == ("30d", "90d")
    assert args.config == Path("/etc/litefleet-cloud/cloud.toml")
