"""`litefleet-agent`: the device-side command."""

from __future__ import annotations

import os
import sys

import agent
from agent import commands
from localio.cli import build_parser, run_parser

DESCRIPTION = """\
The LiteFleet device agent. It runs a TFLite model on a camera or sensor, reports telemetry
over MQTT (buffered on disk while offline), and installs signed model updates with automatic
rollback.

Typical use:
  litefleet-agent check-config --config /etc/litefleet/agent.toml
  litefleet-agent run --config /etc/litefleet/agent.toml          (what systemd runs)
  litefleet-agent status --config /etc/litefleet/agent.toml --json
  litefleet-agent apply --config /etc/litefleet/agent.toml deployment.json   (offline update)
  litefleet-agent bench --model model.tflite --json
"""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser("litefleet-agent", DESCRIPTION, commands)
    parser.add_argument(
        "--version", action="version", version=f"litefleet-agent {agent.__version__}"
    )
    try:
        return run_parser(parser, argv)
    except BrokenPipeError:  # `litefleet-agent status | head -1`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
