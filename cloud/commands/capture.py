"""`litefleet capture DEVICE... (--count N | --on | --off)`: signed sample-capture commands.

`--count N` keeps the device's next N frames as samples (even while capture is off); `--on`
and `--off` switch the device's triggered capture (low confidence, drift) and persist there.
Each command is signed with the release key, bound to one device, and valid for `--expires`.
Samples reach the artifact store through upload URLs `litefleet serve` grants.
"""

from __future__ import annotations

import argparse
import json
import secrets
from datetime import UTC, datetime
from typing import Any

from cloud.commands.command import MAX_LIFETIME_S, build_command
from cloud.context import CommandFailed, Context, add_config_argument, run_command
from cloud.durations import parse_duration
from cloud.mqtt import CloudLink
from localio.cli import EXIT_INVALID, EXIT_UNAVAILABLE
from shared.envelope import sign_envelope
from shared.errors import InvalidDeviceId, Unavailable
from shared.topics import Channel, topic

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
    try:
        lifetime = parse_duration(args.expires)
    except ValueError as e:
        raise CommandFailed(f"--expires: {e}", EXIT_INVALID) from e
    if not 0 < lifetime <= MAX_LIFETIME_S:
        raise CommandFailed("--expires must be between 1 s and 1 day", EXIT_INVALID)
    command_args: dict[str, Any]
    if args.count is not None:
        if not 0 < args.count <= MAX_COUNT:
            raise CommandFailed(f"--count must be between 1 and {MAX_COUNT}", EXIT_INVALID)
        command_args = {"count": args.count}
    else:
        command_args = {"enabled": bool(args.on)}
    key = ctx.signing_key()
    now = datetime.now(UTC)
    try:
        envelopes = {
            d: sign_envelope(build_command(d, "capture", now, lifetime, command_args), [key])
            for d in dict.fromkeys(args.devices)
        }
    except InvalidDeviceId as e:
        raise CommandFailed(str(e), EXIT_INVALID) from e
    cfg = ctx.config.mqtt
    link = CloudLink(cfg, f"{cfg.client_id}-capture-{secrets.token_hex(3)}")
    try:
        link.start(timeout=10.0)
        for device_id, envelope in envelopes.items():
            link.publish(
                topic(device_id, Channel.CMD, cfg.topic_prefix),
                json.dumps(envelope).encode("utf-8"),
            )
    except Unavailable as e:
        raise CommandFailed(f"not sent: {e}", EXIT_UNAVAILABLE) from e
    finally:
        link.stop()
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
