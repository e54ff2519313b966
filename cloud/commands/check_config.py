"""`litefleet check-config`: validate the cloud config, one line per problem, exit 2 if any.

Beyond the keys: the signing key must load when one is configured (a missing key file is a
warning: `litefleet keys generate` makes it), and the broker is tried (a warning when it cannot
be reached from here now, as `serve` keeps retrying).
"""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

from cloud.config import CloudConfig, CloudConfigInvalid, default_config_path, load_cloud_config
from localio.cli import print_check_report
from localio.keyfiles import load_signing_key
from shared.keys import KeyFileError

__all__ = ["register"]

PROBE_TIMEOUT_S = 5.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "check-config",
        help="validate the cloud config; one line per problem, exit 2 if any",
        description="Check every key of the cloud config and the signing key it names; try "
        "the broker. Problems are printed one per line and exit 2; warnings (no key file yet, "
        "broker unreachable from here) do not fail the check.",
    )
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="cloud config (default: $LITEFLEET_CONFIG or ./cloud.toml)",
    )
    p.add_argument(
        "--json", action="store_true", help="print {ok, problems, warnings, notes} as JSON"
    )
    p.add_argument("--offline", action="store_true", help="do not try the broker")
    p.set_defaults(func=_check)


def _key_findings(config: CloudConfig) -> tuple[list[str], list[str]]:
    path = config.signing.key
    if path is None:
        return [], [
            "warning: signing.key: not set; `release` and `deploy` need one "
            "(litefleet keys generate --dir keys/)"
        ]
    if not path.exists():
        return [], [
            f"warning: signing.key: {path} does not exist yet (litefleet keys generate "
            f"--dir {path.parent})"
        ]
    try:
        load_signing_key(path)
    except KeyFileError as e:
        return [f"signing.key: {e}"], []
    return [], []


def _broker_warning(config: CloudConfig) -> str | None:
    host, port = config.mqtt.host, config.mqtt.port
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return None
    except OSError as e:
        return (
            f"warning: mqtt: cannot reach the broker at {host}:{port} "
            f"({e.strerror or type(e).__name__})"
        )


def _check(args: argparse.Namespace) -> int:
    path: Path = args.config or default_config_path()
    problems: list[str] = []
    warnings: list[str] = []
    notes: list[str] = []
    try:
        config = load_cloud_config(path)
    except CloudConfigInvalid as e:
        problems = list(e.problems)
    else:
        problems, warnings = _key_findings(config)
        if not args.offline and (broker := _broker_warning(config)) is not None:
            warnings.append(broker)
        notes.append(
            f"config {path} has {len(problems)} problem(s)"
            if problems
            else f"config {path} is valid (store {_store_shown(config)}, artifacts "
            f"{config.store.artifacts}, broker {config.mqtt.host}:{config.mqtt.port})"
        )
    return print_check_report(problems, warnings, notes, args.json)


def _store_shown(config: CloudConfig) -> str:
    """The SQLite file, or the PostgreSQL URL without a password it may hold."""
    if config.store.backend == "sqlite":
        return str(config.store.db)
    from sqlalchemy.engine import make_url

    try:
        return make_url(config.store.url).render_as_string(hide_password=True)
    except Exception:  # a URL SQLAlchemy cannot parse: open_store says why, in one line
        return "postgresql://..."
