"""`litefleet audit [--since WHEN] [--json]`: who released, deployed, paused, commanded, rotated."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from cloud.audit import entries
from cloud.context import CommandFailed, Context, add_config_argument, run_command
from cloud.durations import parse_since
from localio.cli import EXIT_INVALID

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "audit",
        help="list the audit trail of operator actions",
        description="Every state-changing command (release, deploy, rollout pause/resume/abort, "
        "command, keys rotate, trust publish, group changes) appends one row: when, who, what, "
        "and the sha256 of the document it signed. Rows are never changed or deleted.",
    )
    p.add_argument(
        "--since",
        default=None,
        metavar="WHEN",
        help="only rows newer than a duration ago (30m, 7d) or a UTC time (2026-01-31T12:00:00Z)",
    )
    p.add_argument("--limit", type=int, default=1000, help="at most this many newest rows")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    add_config_argument(p)
    p.set_defaults(func=lambda args: run_command(args, lambda ctx: _audit(ctx, args)))


def _since(text: str | None) -> float:
    if text is None:
        return 0.0
    try:
        return parse_since(text)
    except ValueError as e:
        raise CommandFailed(str(e), EXIT_INVALID) from e


def _audit(ctx: Context, args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise CommandFailed("--limit must be at least 1", EXIT_INVALID)
    rows = entries(ctx.db, _since(args.since), args.limit)
    if args.json:
        print(json.dumps([r.to_dict() for r in rows]))
        return 0
    for r in rows:
        when = datetime.fromtimestamp(r.ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        sha = f"  sha256 {r.sha256[:16]}" if r.sha256 else ""
        detail = f"  {r.detail}" if r.detail else ""
        print(f"{when}  {r.actor:<12} {r.action:<15} {r.target}{sha}{detail}")
    if not rows:
        print("no audit entries")
    return 0
