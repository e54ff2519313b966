"""`litefleet command DEVICE... ACTION`: signed operator commands on `devices/{id}/cmd`.

Actions: `report-now` (publish telemetry at once), `rollback` (end a running probation as
failed and return to the previous model), `restart-source` (reopen the camera or sensor).
Each command is signed with the release key (refused up front when the current root does not
list it, see `cloud.signers`), bound to one device, valid for `--expires`
(default 5 minutes, at most a day) and carries a fresh nonce, so a captured command can be
neither redirected nor replayed.
"""

from __future__ import annotations

import argparse
import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from cloud import audit
from cloud.context import CommandFailed, Context, add_config_argument, run_command
from cloud.durations import parse_duration
from cloud.mqtt import CloudLink
from localio.cli import EXIT_INVALID, EXIT_UNAVAILABLE
from shared.documents import format_time
from shared.envelope import sign_envelope
from shared.errors import InvalidDeviceId, Unavailable
from shared.messages import Command
from shared.topics import Channel, topic, validate_device_id

__all__ = ["ACTIONS", "build_command", "command_lifetime", "register", "send_commands"]

ACTIONS = ("report-now", "rollback", "restart-source")
MAX_LIFETIME_S = 24 * 3600


def build_command(
    device_id: str, action: str, now: datetime, lifetime_s: int, args: dict[str, Any] | None = None
) -> dict[str, object]:
    """The `signed` part of a command for one device (the schema field included); `args`
    (integers, strings, booleans) for the commands that take some."""
    command = Command(
        device_id=validate_device_id(device_id),
        command=action,
        issued=format_time(now),
        expires=format_time(now + timedelta(seconds=lifetime_s)),
        nonce=secrets.token_urlsafe(16),
    )
    signed: dict[str, object] = {
        "schema": Command.SCHEMA,
        "device_id": command.device_id,
        "command": command.command,
        "issued": command.issued,
        "expires": command.expires,
        "nonce": command.nonce,
    }
    if args:
        signed["args"] = args
    return signed


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "command",
        help="send a signed command (report-now, rollback, restart-source) to devices",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("devices", nargs="+", metavar="DEVICE", help="device ids")
    p.add_argument("action", choices=ACTIONS, help="what the devices should do")
    p.add_argument(
        "--expires",
        default="5m",
        help="how long the command stays valid: seconds or 30s/5m/1h (default 5m)",
    )
    p.add_argument("--json", action="store_true", help="print what was sent as JSON")
    add_config_argument(p)
    p.set_defaults(func=lambda args: run_command(args, lambda ctx: _send(ctx, args)))


def command_lifetime(text: str) -> int:
    """`--expires` in seconds: 1 s to a day."""
    try:
        lifetime = parse_duration(text)
    except ValueError as e:
        raise CommandFailed(f"--expires: {e}", EXIT_INVALID) from e
    if not 0 < lifetime <= MAX_LIFETIME_S:
        raise CommandFailed("--expires must be between 1 s and 1 day", EXIT_INVALID)
    return lifetime


def send_commands(
    ctx: Context,
    devices: list[str],
    action: str,
    lifetime_s: int,
    args: dict[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Sign `action` for each device, publish it on the device's `cmd` topic and record it in
    the audit trail; returns each device's envelope."""
    now = datetime.now(UTC)
    key = ctx.release_signer()
    try:
        envelopes = {
            d: sign_envelope(build_command(d, action, now, lifetime_s, args), [key])
            for d in dict.fromkeys(devices)
        }
    except InvalidDeviceId as e:
        raise CommandFailed(str(e), EXIT_INVALID) from e
    cfg = ctx.config.mqtt
    link = CloudLink(cfg, f"{cfg.client_id}-cmd-{secrets.token_hex(3)}")
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
    for device_id, envelope in envelopes.items():
        audit.record(ctx.db, audit.Action.COMMAND, device_id, signed=envelope, detail=action)
    return envelopes


def _send(ctx: Context, args: argparse.Namespace) -> int:
    envelopes = send_commands(ctx, args.devices, args.action, command_lifetime(args.expires))
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "device_id": d,
                        "command": args.action,
                        "nonce": e["signed"]["nonce"],
                        "expires": e["signed"]["expires"],
                    }
                    for d, e in envelopes.items()
                ]
            )
        )
    else:
        for device_id in envelopes:
            print(f"sent {args.action} to {device_id}")
    return 0
