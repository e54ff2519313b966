"""`litefleet store migrate|version`: the store's schema version, and bringing it up to date."""

from __future__ import annotations

import argparse

from cloud.context import Context, add_config_argument, run_command
from cloud.store import Store, engine_url
from cloud.store.migrate import HEAD, current_version, migrate

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "store", help="the store's schema: its version, and migrating it to this LiteFleet's",
        description="`migrate` brings the store ([store] url or db) to the schema this "
        "LiteFleet needs, in versioned steps, and refuses a store newer than the code. A "
        "PostgreSQL store must be migrated before `serve` and the commands use it; an "
        "embedded SQLite store is migrated when it is opened.")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, helptext in (("migrate", "migrate the store to this LiteFleet's schema"),
                           ("version", "print the store's schema version and the code's")):
        q = sub.add_parser(name, help=helptext)
        add_config_argument(q)
        q.set_defaults(func=lambda args: run_command(args, lambda ctx: _store(ctx, args)))


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
