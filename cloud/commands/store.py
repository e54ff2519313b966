"""`litefleet store migrate|version|prune`: the store's schema version, bringing it up to date,
and dropping old telemetry."""

from __future__ import annotations

import argparse
import time

from cloud.context import CommandFailed, Context, add_config_argument, run_command
from cloud.durations import parse_duration
from cloud.store import Store, engine_url
from cloud.store.migrate import HEAD, current_version, migrate
from cloud.store.records import prune
from cloud.store.rollup import prune_minutes
from localio.cli import EXIT_INVALID

__all__ = ["register"]

ROLLUP_KEPT = "90d"  # 7-day charts and `telemetry --every` over a quarter


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "store",
        help="the store's schema: its version, and migrating it to this LiteFleet's",
        description="`migrate` brings the store ([store] url or db) to the schema this "
        "LiteFleet needs, in versioned steps, and refuses a store newer than the code. A "
        "PostgreSQL store must be migrated before `serve` and the commands use it; an "
        "embedded SQLite store is migrated when it is opened.",
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, helptext in (
        ("migrate", "migrate the store to this LiteFleet's schema"),
        ("version", "print the store's schema version and the code's"),
    ):
        q = sub.add_parser(name, help=helptext)
        add_config_argument(q)
        q.set_defaults(func=lambda args: run_command(args, lambda ctx: _store(ctx, args)))
    q = sub.add_parser(
        "prune",
        help="delete telemetry and events older than a duration "
        "(update reports, rollouts and the audit trail stay)",
        description="Removes telemetry and events received before --older-than (SQLite "
        "deletes the rows; PostgreSQL drops whole UTC days, so a record may stay up to a day "
        "longer), and the per-minute rollup (what `telemetry --every` and the dashboard's "
        "7-day charts read) before --rollup-older-than. Update reports, rollouts and the "
        "audit trail stay. Run it daily, e.g. from a systemd timer or cron.",
    )
    q.add_argument(
        "--older-than",
        required=True,
        metavar="DURATION",
        help="received longer ago than this: 3600, 12h, 30d",
    )
    q.add_argument(
        "--rollup-older-than",
        default=ROLLUP_KEPT,
        metavar="DURATION",
        help=f"rollup minutes older than this (default {ROLLUP_KEPT}; one row per device "
        "and minute it sent telemetry in)",
    )
    add_config_argument(q)
    q.set_defaults(func=lambda args: run_command(args, lambda ctx: _prune(ctx, args)))


def _prune(ctx: Context, args: argparse.Namespace) -> int:
    try:
        age = parse_duration(args.older_than)
        rollup_age = parse_duration(args.rollup_older_than)
    except ValueError as e:
        raise CommandFailed(str(e), EXIT_INVALID) from e
    now = time.time()
    deleted = prune(ctx.db, now - age)
    print(
        ", ".join(f"{n} {kind} record(s)" for kind, n in deleted.items())
        + f" older than {args.older_than} deleted"
    )
    minutes = prune_minutes(ctx.db, now - rollup_age)
    print(f"{minutes} rollup minute(s) older than {args.rollup_older_than} deleted")
    return 0


def _store(ctx: Context, args: argparse.Namespace) -> int:
    cfg = ctx.config.store
    store = Store(engine_url(cfg.url, cfg.password_file))  # unchecked: this is the check
    try:
        if args.action == "version":
            with store.connect() as conn:
                version = current_version(conn)
            print(f"store {store.location}: schema {version or '(none)'}; this LiteFleet: {HEAD}")
            return 0
        before, after = migrate(store)
        if before == after:
            print(f"store {store.location}: schema {after}, up to date")
        else:
            print(f"store {store.location}: migrated from schema {before or '(none)'} to {after}")
        return 0
    finally:
        store.close()
