"""`litefleet events`: what devices reported as events (source up/down, errors, detections)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

from cloud.context import CommandFailed, Context, add_config_argument, run_command
from cloud.durations import parse_duration
from cloud.store import Store
from cloud.store.records import Cursor
from cloud.store.records import events_since as stored_events
from localio.cli import EXIT_INVALID

__all__ = ["events_since", "register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "events",
        help="show device events as they were stored; --follow for new ones",
        description="Show the events devices reported (source up and down, errors, inference "
        "events over a threshold), oldest first.",
    )
    p.add_argument("--device", metavar="ID", help="only this device")
    p.add_argument("--kind", metavar="KIND", help="only events of this kind (e.g. source_down)")
    p.add_argument("--since", default="1h", help="how far back: 600, 10m, 2h, 1d (default 1h)")
    p.add_argument("--follow", action="store_true", help="keep printing new events")
    p.add_argument("--limit", type=int, default=1000, help="at most this many rows (default 1000)")
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per line with --follow, else a JSON array",
    )
    add_config_argument(p)
    p.set_defaults(func=lambda args: run_command(args, lambda ctx: _events(ctx, args)))


def events_since(
    store: Store,
    since: float,
    *,
    device_id: str | None = None,
    kind: str | None = None,
    after: Cursor | None = None,
    limit: int = 1000,
) -> list[tuple[Cursor, dict[str, Any]]]:
    """(cursor, event) pairs received since `since` (and after `after`), oldest first."""
    return [
        (
            cursor,
            {
                "device_id": r["device_id"],
                "seq": r["seq"],
                "ts": r["ts"],
                "received": r["received"],
                "kind": r["kind"],
                "detail": json.loads(r["detail"]),
            },
        )
        for cursor, r in stored_events(store, since, device_id, kind, after, limit)
    ]


def _events(ctx: Context, args: argparse.Namespace) -> int:
    try:
        since = time.time() - parse_duration(args.since)
    except ValueError as e:
        raise CommandFailed(str(e), EXIT_INVALID) from e

    def fetch(after: Cursor | None) -> list[tuple[Cursor, dict[str, Any]]]:
        return events_since(
            ctx.db, since, device_id=args.device, kind=args.kind, after=after, limit=args.limit
        )

    rows = fetch(None)
    if args.json and not args.follow:
        print(json.dumps([e for _, e in rows]))
        return 0
    last = _print_events(rows, args.json)
    try:
        while args.follow:
            time.sleep(1.0)
            last = _print_events(fetch(last), args.json) or last
    except KeyboardInterrupt:  # Ctrl-C is how a follow ends
        pass
    return 0


def _print_events(rows: list[tuple[Cursor, dict[str, Any]]], as_json: bool) -> Cursor | None:
    for _, e in rows:
        if as_json:
            print(json.dumps(e))
        else:
            when = datetime.fromtimestamp(e["ts"], UTC).strftime("%Y-%m-%d %H:%M:%S")
            detail = (
                " ".join(f"{k}={v}" for k, v in e["detail"].items())
                if isinstance(e["detail"], dict)
                else json.dumps(e["detail"])
            )
            print(f"{when}  {e['device_id']}  {e['kind']}  {detail}")
    sys.stdout.flush()  # line by line into a pipe
    return rows[-1][0] if rows else None
