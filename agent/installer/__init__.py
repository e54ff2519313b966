"""Install the agent as a systemd service, into `/` or into a directory tree (an image).

`install(options)` validates the config, writes the tree (venv, config, unit, profile drop-in,
sysusers.d and tmpfiles.d snippets) changing only what differs, then, on a live system, creates
the user and directories and enables and starts the service. `uninstall(...)` removes what
`install` wrote and keeps the config and the state unless asked to purge them.

Installed layout (relative to the root):

    <prefix>/venv/                                         the agent (pip install, no TensorFlow)
    etc/litefleet/agent.toml                               the config (0640, group litefleet)
    etc/systemd/system/litefleet-agent.service             the hardened unit
    etc/systemd/system/litefleet-agent.service.d/50-profile.conf   MemoryMax= from the profile
    etc/sysusers.d/litefleet.conf, etc/tmpfiles.d/litefleet.conf
    etc/systemd/system/multi-user.target.wants/litefleet-agent.service   (--root only: enabled)

`InstallOptions(dry_run=True)` checks everything the same way and reports every file, user,
unit and command it would touch ("would create", "would run: ..."), changing nothing.
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent.config import ConfigInvalid, load_config
from agent.opencv import gives_frames
from device_profiles.profile import DeviceProfile

from .files import (
    Change,
    plan_file,
    plan_symlink,
    remove_file,
    remove_tree,
    write_file,
    write_symlink,
)
from .paths import path_problems
from .process import Runner, StepFailed, run_command
from .units import (
    DEFAULT_PREFIX,
    UNIT_NAME,
    check_prefix,
    find_templates,
    render_profile_dropin,
    render_unit,
)
from .venv import VenvPlan, default_source, ensure_venv, pip_problem

__all__ = [
    "DEFAULT_PREFIX",
    "STATE_DIR",
    "InstallOptions",
    "InstallRefused",
    "InstallReport",
    "StepFailed",
    "install",
    "live_systemd_commands",
    "uninstall",
]

STATE_DIR = "/var/lib/litefleet"
CONFIG_PATH = "/etc/litefleet/agent.toml"
UNIT_PATH = f"/etc/systemd/system/{UNIT_NAME}"
DROPIN_PATH = f"/etc/systemd/system/{UNIT_NAME}.d/50-profile.conf"
WANTS_PATH = f"/etc/systemd/system/multi-user.target.wants/{UNIT_NAME}"
SYSUSERS_PATH = "/etc/sysusers.d/litefleet.conf"
TMPFILES_PATH = "/etc/tmpfiles.d/litefleet.conf"
SERVICE_USER = "litefleet"


class InstallRefused(ValueError):
    """The install cannot go ahead as asked; `problems` has one line per reason."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class InstallOptions:
    config: Path
    root: Path = Path("/")
    prefix: str = DEFAULT_PREFIX
    source: Path | None = None  # a source tree, wheel or sdist; default: the running tree
    python: str = sys.executable
    pip_args: tuple[str, ...] = ()
    venv: bool = True
    start: bool = True
    dry_run: bool = False  # report what would be touched; touch nothing

    @property
    def live(self) -> bool:
        return self.root.resolve() == Path("/")


@dataclass
class InstallReport:
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(
            c.action not in ("unchanged", "absent", "kept", "skipped")
            and not c.action.startswith("would")
            for c in self.changes
        )

    @property
    def would_change(self) -> bool:
        return any(c.action.startswith("would") for c in self.changes)

    def lines(self) -> list[str]:
        return [str(c) for c in self.changes] + self.notes


def install(
    options: InstallOptions, run: Runner = run_command, systemd_running: bool | None = None
) -> InstallReport:
    """Write the tree and (live, with systemd running) enable and start the service."""
    running = Path("/run/systemd/system").is_dir() if systemd_running is None else systemd_running
    profile, config_bytes, warnings, password_file = _check(options, running)
    templates = find_templates()
    report = InstallReport(notes=warnings)
    at = _under(options.root)
    put_file = plan_file if options.dry_run else write_file
    put_link = plan_symlink if options.dry_run else write_symlink
    if options.venv:
        source = options.source or default_source()
        assert source is not None  # _check refused otherwise
        final = f"{options.prefix.rstrip('/')}/venv"
        uri = tomllib.loads(config_bytes.decode("utf-8")).get("source", {}).get("uri", "")
        extras = ("camera",) if gives_frames(str(uri)) else ()  # OpenCV for frames only
        plan = VenvPlan(
            at(final), final, source.resolve(), options.python, options.pip_args, extras
        )
        report.changes.append(
            Change(
                "would update" if plan.bin_python.exists() else "would create",
                plan.path,
                f"pip install {plan.requirement}",
            )
            if options.dry_run
            else ensure_venv(plan, run)
        )
    else:
        report.changes.append(Change("skipped", at(options.prefix), "--no-venv"))
    tmpfiles = templates.tmpfiles
    if password_file is not None:  # the service user reads it; nobody else does
        tmpfiles += (
            f"# The broker password named by mqtt.password_file.\n"
            f"z {password_file} 0640 root {SERVICE_USER} -\n"
        )
    report.changes += [
        put_file(at(CONFIG_PATH), config_bytes, 0o640),
        put_file(at(UNIT_PATH), render_unit(templates.unit, options.prefix).encode(), 0o644),
        put_file(at(DROPIN_PATH), render_profile_dropin(profile).encode(), 0o644),
        put_file(at(SYSUSERS_PATH), templates.sysusers.encode(), 0o644),
        put_file(at(TMPFILES_PATH), tmpfiles.encode(), 0o644),
    ]
    if password_file is not None:
        report.changes.append(_share_password(at(password_file), options.dry_run))
    report.notes.append(
        f"user: {SERVICE_USER} (groups video, dialout), made by "
        f"systemd-sysusers from {SYSUSERS_PATH}"
    )
    report.notes.append(f"unit: {UNIT_NAME}")
    if options.dry_run:
        report.notes.append("dry run: nothing was changed")
    if not options.live:
        if options.start:
            report.changes.append(put_link(at(WANTS_PATH), UNIT_PATH))
        report.notes.append(
            f"systemd steps skipped (--root {options.root}): on first boot systemd-sysusers "
            "creates the litefleet user and systemd-tmpfiles the directories"
            + (
                "; the service is enabled and starts on boot"
                if options.start
                else f"; enable it with: systemctl --root={options.root} enable {UNIT_NAME}"
            )
        )
        return report
    commands = live_systemd_commands(
        report.changed or report.would_change, options.start and running
    )
    if not running:
        commands = [c for c in commands if c[0] != "systemctl"]
        report.notes.append(
            "systemd is not running here: service not reloaded, enabled or "
            "started; it starts on the next boot with systemd"
        )
    elif not options.start:
        report.notes.append(
            f"--no-start: enable and start with: systemctl enable --now {UNIT_NAME}"
        )
    for command in commands:
        if options.dry_run:
            report.notes.append(f"would run: {' '.join(command)}")
            continue
        run(command)
        report.notes.append(f"ran: {' '.join(command)}")
    return report


def _share_password(path: Path, dry_run: bool) -> Change:
    """The password file, readable by the service's group (tmpfiles.d sets the group)."""
    if not path.is_file():
        return Change(
            "absent",
            path,
            f"mqtt.password_file: tmpfiles.d makes it 0640 root:{SERVICE_USER} once it is there",
        )
    if path.stat().st_mode & 0o7777 == 0o640:
        return Change("unchanged", path)
    if not dry_run:
        path.chmod(0o640)
    return Change(
        "would update" if dry_run else "updated",
        path,
        f"mode 0640, group {SERVICE_USER} by tmpfiles.d",
    )


def live_systemd_commands(changed: bool, start: bool) -> list[list[str]]:
    """What a live install runs after writing the tree (user, dirs, reload, enable, start)."""
    commands = [
        ["systemd-sysusers", SYSUSERS_PATH],
        ["systemd-tmpfiles", "--create", TMPFILES_PATH],
    ]
    if changed:
        commands.append(["systemctl", "daemon-reload"])
    if start:
        commands.append(["systemctl", "enable", UNIT_NAME])
        # start is a no-op when running; a changed install must restart to take effect
        commands.append(["systemctl", "restart" if changed else "start", UNIT_NAME])
    return commands


def uninstall(
    root: Path = Path("/"),
    prefix: str = DEFAULT_PREFIX,
    purge: bool = False,
    run: Runner = run_command,
    systemd_running: bool | None = None,
) -> InstallReport:
    """Remove the service, the venv and the snippets; the config and state stay unless `purge`."""
    live = root.resolve() == Path("/")
    if live and os.geteuid() != 0:
        raise InstallRefused(["uninstalling from / needs root (or pass --root DIR)"])
    at = _under(root)
    report = InstallReport()
    running = live and (
        Path("/run/systemd/system").is_dir() if systemd_running is None else systemd_running
    )
    if running:
        try:
            run(["systemctl", "disable", "--now", UNIT_NAME])
            report.notes.append(f"ran: systemctl disable --now {UNIT_NAME}")
        except StepFailed as e:  # not loaded or already gone: the files still go
            report.notes.append(f"systemctl disable failed, continuing: {e}")
    for path in (WANTS_PATH, DROPIN_PATH, UNIT_PATH, SYSUSERS_PATH, TMPFILES_PATH):
        report.changes.append(remove_file(at(path)))
    _remove_if_empty(at(DROPIN_PATH).parent)
    venv = at(f"{prefix.rstrip('/')}/venv")
    if (venv / "pyvenv.cfg").is_file():
        report.changes.append(remove_tree(venv))
        _remove_if_empty(venv.parent)
    else:
        report.changes.append(Change("absent", venv))
    if purge:
        report.changes.append(remove_file(at(CONFIG_PATH)))
        if not _remove_if_empty(at(CONFIG_PATH).parent) and at(CONFIG_PATH).parent.exists():
            report.changes.append(Change("kept", at(CONFIG_PATH).parent, "holds other files"))
        report.changes.append(remove_tree(at(STATE_DIR), "models, update journal, outbox"))
    else:
        for path in (CONFIG_PATH, STATE_DIR):
            if at(path).exists():
                report.changes.append(Change("kept", at(path), "--purge removes it"))
    if running:
        run(["systemctl", "daemon-reload"])
        report.notes.append("ran: systemctl daemon-reload")
    report.notes.append("the litefleet user is kept (userdel litefleet removes it)")
    return report


def _check(
    options: InstallOptions, systemd_running: bool
) -> tuple[DeviceProfile, bytes, list[str], str | None]:
    """Validate everything before touching the tree; return (profile, config bytes, warnings,
    the password file the config names)."""
    problems: list[str] = []
    if (prefix_problem := check_prefix(options.prefix)) is not None:
        problems.append(prefix_problem)
    if options.live and os.geteuid() != 0 and not options.dry_run:
        problems.append("installing into / needs root (or pass --root DIR to build a tree)")
    if options.live and options.start and not systemd_running:
        problems.append(
            "systemd is not running here, so the service cannot be started: pass "
            "--no-start to write the files only (the service starts at the next "
            "boot with systemd), or --root DIR to build an image"
        )
    if options.venv:
        source = options.source or default_source()
        if source is None:
            problems.append(
                "not running from a source tree: pass --source (a wheel, an sdist "
                "or a source folder)"
            )
        elif not source.exists():
            problems.append(f"--source {source}: no such file or folder")
        if (pip := pip_problem(options.python)) is not None:
            problems.append(pip)
    try:
        # with --root the files the config names are looked for in the tree, below
        config = load_config(options.config, check_files=options.live)
    except ConfigInvalid as e:
        raise InstallRefused([*problems, *e.problems]) from e
    config_bytes = options.config.read_bytes()
    raw = tomllib.loads(config_bytes.decode("utf-8"))
    path_issues, warnings = path_problems(
        raw,
        str(Path(CONFIG_PATH).parent),
        None if options.live else options.root,
        _under(options.root),
    )
    problems += path_issues
    profile_ref = raw.get("profile", "")
    if ("/" in profile_ref or profile_ref.endswith(".toml")) and not profile_ref.startswith("/"):
        problems.append(
            f"profile: {profile_ref!r} is relative; give an absolute path or a bundled profile name"
        )
    state = Path(config.state_dir)
    if state != Path(STATE_DIR) and Path(STATE_DIR) not in state.parents:
        problems.append(
            f"state_dir: {state} is not writable by the service (ProtectSystem=strict "
            f"allows only its StateDirectory {STATE_DIR})"
        )
    if problems:
        raise InstallRefused(problems)
    password = raw.get("mqtt", {}).get("password_file")
    return config.profile, config_bytes, warnings, password if isinstance(password, str) else None


def _under(root: Path) -> Callable[[str], Path]:
    def at(path: str) -> Path:
        return root / path.lstrip("/")

    return at


def _remove_if_empty(folder: Path) -> bool:
    try:
        folder.rmdir()
    except OSError:
        return False
    return True
