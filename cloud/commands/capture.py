"""`litefleet capture DEVICE... (--count N | --on | --off)`: signed sample-capture commands.

`--count N` keeps the device's next N frames as samples (even while capture is off); `--on`
and `--off` switch the device's triggered capture (low confidence, drift) and persist there.
Each command is signed with the release key, bound to one device, and valid for `--expires`.
Samples reach the artifact store through upload URLs `litefleet serve` grants.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from cloud.commands.command import command_lifetime, send_commands
from cloud.context import CommandFailed, Context, add_config_argument, run_command
from localio.cli import EXIT_INVALID

__all__ = ["register"]

MAX_COUNT = 1000


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "capture",
        help="ask devices to capture samples (signed command)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("devices", nargs="+", metavar="DEVICE", help="device ids")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--count", type=int, metavar="N", help=f"keep the next N frames (1-{MAX_COUNT})"
    )
    what.add_argument("--on", action="store_true", help="turn triggered capture on")
    what.add_argument("--off", action="store_true", help="turn triggered capture off")
    p.add_argument("--expires", default="5m", help="how long the command stays valid (default 5m)")
    p.add_argument("--json", action="store_true", help="print what was sent as JSON")
    add_config_argument(p)
    p.set_defaults(func=lambda args: run_command(args, lambda ctx: _send(ctx, args)))


def _send(ctx: Context, args: argparse.Namespace) -> int:
    lifetime = command_lifetime(args.expires)
    command_args: dict[str, Any]
    if args.count is not None:
        if not 0 < args.count <= MAX_COUNT:
            raise CommandFailed(f"--count must be between 1 and {MAX_COUNT}", EXIT_INVALID)
        command_args = {"count": args.count}
    else:
        command_args = {"enabled": bool(args.on)}
    envelopes = send_commands(ctx, args.devices, "capture", lifetime, command_args)
    if args.json:
        print(
            json.dumps(
                [{"device_id": d, "command": "capture", "args": command_args} for d in envelopes]
            )
        )
    else:
        for device_id in envelopes:
            print(f"sent capture {json.dumps(command_args)} to {device_id}")
    return 0
