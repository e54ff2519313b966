"""`litefleet users add|remove|list`: who may log in to the dashboard and its API.

`add NAME --role viewer|operator` prints a one-time password: shown once, stored only as its
argon2 hash. With `--token` the user gets an API token instead (`--json` prints
{"token": "..."}), for scripts using `Authorization: Bearer`. A viewer sees everything; an
operator may also pause, resume and abort rollouts, deploy and send commands. Adding and
removing users is recorded in the audit trail.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from cloud import audit
from cloud.context import CommandFailed, Context, add_config_argument, run_command
from cloud.store import dashboard as queries
from cloud.web.accounts import Role, UserRefused, add_user, new_token, remove_user
from localio.cli import EXIT_INVALID

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "users",
        help="add, remove and list dashboard users",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(title="actions", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="add a user; prints a one-time password or an API token")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=[r.value for r in Role])
    add.add_argument(
        "--token",
        action="store_true",
        help="give the user an API token (for `Authorization: Bearer`) instead of a password",
    )
    add.add_argument(
        "--json", action="store_true", help='print {"password": ...} or {"token": ...}'
    )
    add_config_argument(add)
    add.set_defaults(func=lambda args: run_command(args, lambda ctx: _add(ctx, args)))
    rm = sub.add_parser("remove", help="remove a user and their tokens")
    rm.add_argument("name")
    add_config_argument(rm)
    rm.set_defaults(func=lambda args: run_command(args, lambda ctx: _remove(ctx, args)))
    ls = sub.add_parser("list", help="list the users")
    ls.add_argument("--json", action="store_true", help="print a JSON array")
    add_config_argument(ls)
    ls.set_defaults(func=lambda args: run_command(args, lambda ctx: _list(ctx, args)))


def _add(ctx: Context, args: argparse.Namespace) -> int:
    role = Role(args.role)
    try:
        password = add_user(ctx.db, args.name, role, password=not args.token)
        token = new_token(ctx.db, args.name) if args.token else ""
    except UserRefused as e:
        raise CommandFailed(str(e), EXIT_INVALID) from e
    audit.record(
        ctx.db,
        audit.Action.USER_ADD,
        args.name,
        detail=f"role {role.value}{', API token' if args.token else ''}",
    )
    if args.json:
        print(json.dumps({"token": token} if args.token else {"password": password}))
    elif args.token:
        print(f"user {args.name} ({role.value}); API token, shown once:\n{token}")
    else:
        print(f"user {args.name} ({role.value}); password, shown once:\n{password}")
    return 0


def _remove(ctx: Context, args: argparse.Namespace) -> int:
    try:
        remove_user(ctx.db, args.name)
    except UserRefused as e:
        raise CommandFailed(str(e), EXIT_INVALID) from e
    audit.record(ctx.db, audit.Action.USER_REMOVE, args.name)
    print(f"removed user {args.name}")
    return 0


def _list(ctx: Context, args: argparse.Namespace) -> int:
    rows = [
        {
            "name": r["name"],
            "role": r["role"],
            "password": bool(r["has_password"]),
            "tokens": int(r["tokens"]),
            "created": r["created"],
        }
        for r in queries.users(ctx.db)
    ]
    if args.json:
        print(json.dumps(rows))
        return 0
    for r in rows:
        when = datetime.fromtimestamp(r["created"], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        how = ", ".join(
            x
            for x in (
                "password" if r["password"] else "",
                f"{r['tokens']} token(s)" if r["tokens"] else "",
            )
            if x
        )
        print(f"{r['name']:<20} {r['role']:<9} {how or '-':<22} added {when}")
    return 0
