"""`litefleet-agent install` and `litefleet-agent uninstall`: the agent as a systemd service."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.installer import (
    DEFAULT_PREFIX,
    InstallOptions,
    InstallRefused,
    InstallReport,
    StepFailed,
    install,
    uninstall,
)
from localio.cli import EXIT_INVALID, EXIT_UNAVAILABLE

__all__ = ["register"]

INSTALL_HELP = """\
Install the agent as the hardened systemd service litefleet-agent.service:
  <prefix>/venv                      a virtual environment with the agent (no TensorFlow)
  /etc/litefleet/agent.toml          the config (validated first; group litefleet, 0640)
  /etc/systemd/system/litefleet-agent.service and .service.d/50-profile.conf (MemoryMax=)
  /etc/sysusers.d/litefleet.conf     the litefleet user (groups video, dialout)
  /etc/tmpfiles.d/litefleet.conf     /etc/litefleet and /var/lib/litefleet
then creates the user and directories, reloads systemd, enables and starts the service.
Files already up to date are left alone (reported "unchanged"): running it twice is safe.
With --root DIR everything goes into DIR (an image) and no systemd step runs; the files the
config names (model, labels, TLS files, password file) are looked for inside DIR.
--dry-run checks the same and prints every file, user, unit and command it would touch.
Refused, with a sentence each: relative paths; a model or password file under /tmp, /var/tmp,
/home or /root (the unit's PrivateTmp= and ProtectHome= hide them from the service); a live
install where systemd is not running, unless --no-start. mqtt.password_file is made readable
by the litefleet group (0640, through tmpfiles.d).
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "install",
        help="install the agent as a systemd service (or into an image tree)",
        description=INSTALL_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, type=Path, help="the agent.toml to install")
    p.add_argument(
        "--prefix", default=DEFAULT_PREFIX, help=f"where the venv goes (default {DEFAULT_PREFIX})"
    )
    p.add_argument(
        "--root",
        type=Path,
        default=Path("/"),
        help="install into this directory tree instead of / (images, tests)",
    )
    p.add_argument(
        "--source",
        type=Path,
        help="what to pip install: a wheel, an sdist or a source folder "
        "(default: the source tree this command runs from)",
    )
    p.add_argument(
        "--python",
        default=sys.executable,
        help="the interpreter that creates the venv (default: this one)",
    )
    p.add_argument(
        "--pip-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra pip argument, repeatable (e.g. --pip-arg=--no-index "
        "--pip-arg=--find-links=/srv/wheels for an offline install)",
    )
    p.add_argument(
        "--no-venv",
        action="store_true",
        help="do not create or update the venv (it is managed some other way)",
    )
    p.add_argument(
        "--no-start",
        action="store_true",
        help="write the files only: do not enable or start the service",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check, and print every file, user, unit and command it would touch; change nothing",
    )
    p.set_defaults(func=_install)

    u = subparsers.add_parser(
        "uninstall",
        help="remove the service; keeps config and state unless --purge",
        description="Stop and disable litefleet-agent.service and remove the venv, the unit "
        "and the snippets. The config (/etc/litefleet) and the state (/var/lib/litefleet: "
        "models, update journal, unsent telemetry) are kept unless --purge.",
    )
    u.add_argument("--prefix", default=DEFAULT_PREFIX, help="the prefix used at install")
    u.add_argument("--root", type=Path, default=Path("/"), help="uninstall from this tree")
    u.add_argument("--purge", action="store_true", help="also delete the config and the state")
    u.set_defaults(func=_uninstall)


def _install(args: argparse.Namespace) -> int:
    options = InstallOptions(
        config=args.config,
        root=args.root,
        prefix=args.prefix,
        source=args.source,
        python=args.python,
        pip_args=tuple(args.pip_arg),
        venv=not args.no_venv,
        start=not args.no_start,
        dry_run=args.dry_run,
    )
    return _report(lambda: install(options), done=lambda r: _outcome(r, options))


def _outcome(report: InstallReport, options: InstallOptions) -> str:
    if options.dry_run:
        return (
            "dry run: the install above would be made"
            if report.would_change
            else "dry run: nothing to do, the installation is up to date"
        )
    if not report.changed:
        return "nothing to do: the installation is up to date"
    if not options.start:
        return "installed (not started: --no-start)"
    return "installed"


def _uninstall(args: argparse.Namespace) -> int:
    return _report(lambda: uninstall(args.root, args.prefix, args.purge))


def _report(step: Callable[[], Any], done: Callable[[Any], str] | None = None) -> int:
    """Run an install or uninstall step: print what it did, or why not, as an exit code."""
    try:
        report = step()
    except InstallRefused as e:
        for problem in e.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_INVALID
    except (StepFailed, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    for line in report.lines():
        print(line)
    if done is not None:
        print(done(report))
    return 0
