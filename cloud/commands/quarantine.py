"""`litefleet quarantine`: the device messages the ingester refused, newest first."""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cloud.context import CommandFailed, Context, add_config_argument, run_command
from cloud.durations import parse_duration
from cloud.quarantine import quarantine_views
from cloud.store import counter
from localio.cli import EXIT_INVALID

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    help_text = (
        "list quarantined device messages (dead letters): topic, device, size, sha256, reason"
    )
    p = subparsers.add_parser(
        "quarantine",
        help=help_text,
        description=help_text + ". --json adds the first 4 KiB of each payload.",
    )
    p.add_argument("--device", metavar="ID", help="only this device")
    p.add_argument("--since", default="7d", help="how far back: 600, 10m, 2h, 1d (default 7d)")
    p.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    p.add_argument("--json", action="store_true", help="print a JSON array")
    add_config_argument(p)
    p.set_defaults(func=lambda args: run_command(args, lambda ctx: _quarantine(ctx, args)))


def _quarantine(ctx: Context, args: argparse.Namespace) -> int:
    try:
        since = time.time() - parse_duration(args.since)
    except ValueError as e:
        raise CommandFailed(str(e), EXIT_INVALID) from e
    views = quarantine_views(ctx.db, since, args.device, limit=args.limit)
    if args.json:
        print(json.dumps(views))
        return 0
    total = counter(ctx.db, "quarantined")
    table = Table(title=f"{len(views)} quarantined message(s) shown, {total} in all")
    for col in ("received", "device", "topic", "bytes", "sha256", "reason", "detail"):
        table.add_column(col)
    for v in views:
        when = datetime.fromtimestamp(v["received"], UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(
            when,
            v["device_id"] or "-",
            escape(v["topic"]),
            str(v["size"]),
            v["sha256"][:12],
            v["reason"],
            escape(v["detail"][:120]),
        )
    Console().print(table)
    return 0
