"""`litefleet-agent run --config F`: the daemon (what the systemd unit runs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from agent.commands._config import load_or_report
from localio.cli import EXIT_INVALID

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "run",
        help="run the agent: inference loop, telemetry over MQTT, model updates",
        description="Run the device agent until SIGTERM or SIGINT. It serves the active model "
        "(or [model] initial), streams telemetry over MQTT with a durable outbox, and installs "
        "signed deployments from the `desired` topic. Under systemd (Type=notify) it reports "
        "READY=1 once the model runs and pings the watchdog while the loop is alive.",
    )
    p.add_argument("--config", required=True, type=Path, help="the agent config (agent.toml)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return EXIT_INVALID
    from agent.daemon import run_daemon  # the runtime and its dependencies load only here

    return run_daemon(config)
