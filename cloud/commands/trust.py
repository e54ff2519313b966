"""`litefleet trust publish|show|status`: send the chain of roots to the fleet, list it, or see
which devices have taken the newest root.

`publish` sends every stored root (the chain since version 2, oldest first, see `cloud.roots`)
as one retained message on `{prefix}/trust/root`. Every device subscribes to it, walks the
roots above the one it trusts, and from then on verifies releases, deployments and commands
with the newest root's release keys. A device that was offline gets the retained chain when
it reconnects.

`status` counts the devices per root version they report in their retained state (0: an agent
that does not report it) and lists those still behind the newest stored root: after a rotation,
watch it until every device reports the new version.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import secrets
import sys
import time
from datetime import UTC, datetime

from cloud import audit
from cloud.commands._table import print_table
from cloud.context import CommandFailed, Context, add_config_argument, run_command
from cloud.mqtt import CloudLink
from cloud.roots import adoption, chain_message, current_root, stored_roots
from cloud.signers import UntrustedSigner, check_signers
from localio.cli import EXIT_INVALID, EXIT_UNAVAILABLE
from shared.errors import Unavailable
from shared.root import describe, parse_root
from shared.topics import FleetChannel, fleet_topic

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    trust = subparsers.add_parser(
        "trust",
        help="publish or show the chain of signed roots devices trust; which devices hold it",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = trust.add_subparsers(title="actions", metavar="ACTION")
    pub = sub.add_parser("publish", help="send the root chain, retained, to every device")
    pub.add_argument("--json", action="store_true", help="print what was sent as JSON")
    add_config_argument(pub)
    pub.set_defaults(func=lambda args: run_command(args, lambda ctx: _publish(ctx, args)))
    show = sub.add_parser("show", help="list the roots in the store, oldest first")
    show.add_argument("--json", action="store_true", help="print as JSON")
    add_config_argument(show)
    show.set_defaults(func=lambda args: run_command(args, lambda ctx: _show(ctx, args)))
    status = sub.add_parser(
        "status",
        help="devices per root version they report, and those behind the newest root",
    )
    status.add_argument(
        "--limit",
        type=int,
        default=20,
        metavar="N",
        help="list at most N devices still behind (default 20; 0 lists none)",
    )
    status.add_argument("--json", action="store_true", help="print as JSON")
    add_config_argument(status)
    status.set_defaults(func=lambda args: run_command(args, lambda ctx: _status(ctx, args)))

    def usage(_args: argparse.Namespace) -> int:
        trust.print_help()
        return EXIT_INVALID

    trust.set_defaults(func=usage)


def _publish(ctx: Context, args: argparse.Namespace) -> int:
    payload = chain_message(ctx.db)
    if payload is None:
        raise CommandFailed(
            "no root to publish: write one with `litefleet keys rotate`", EXIT_INVALID
        )
    newest = current_root(ctx.db, None)
    if newest.root.expires_at is not None and newest.root.expires_at <= datetime.now(UTC):
        raise CommandFailed(
            f"root v{newest.version} expired at {newest.root.expires}; devices "
            "would refuse it: renew it with `litefleet keys rotate --sign ...`",
            EXIT_INVALID,
        )
    cfg = ctx.config.mqtt
    name = fleet_topic(FleetChannel.TRUST_ROOT, cfg.topic_prefix)
    link = CloudLink(cfg, f"{cfg.client_id}-trust-{secrets.token_hex(3)}")
    try:
        link.start(timeout=10.0)
        link.publish(name, payload, retain=True)
    except Unavailable as e:
        raise CommandFailed(f"not published: {e}", EXIT_UNAVAILABLE) from e
    finally:
        link.stop()
    digest = hashlib.sha256(payload).hexdigest()
    audit.record(
        ctx.db,
        audit.Action.TRUST_PUBLISH,
        f"root v{newest.version}",
        sha256=digest,
        detail=f"{len(stored_roots(ctx.db))} root(s) on {name}",
    )
    if args.json:
        print(
            json.dumps(
                {"topic": name, "version": newest.version, "sha256": digest, "bytes": len(payload)}
            )
        )
    else:
        print(f"published   {describe(newest.root)}")
        print(f"topic       {name} (retained, {len(payload)} bytes)")
    _warn_untrusted_signer(ctx)
    return 0


def _warn_untrusted_signer(ctx: Context) -> None:
    """Publishing a root that drops the `[signing] key` is a step of a rotation, not an error;
    but until the key is pointed at a listed one, every command that signs refuses: say so."""
    if ctx.config.signing.key is None:
        return
    try:
        check_signers(ctx.db, [ctx.signing_key()], datetime.now(UTC))
    except CommandFailed:
        return  # an unreadable key: the commands that sign say why
    except UntrustedSigner as e:
        print(f"warning: {e}", file=sys.stderr)


def _status(ctx: Context, args: argparse.Namespace) -> int:
    if args.limit < 0:
        raise CommandFailed(f"--limit {args.limit}: give 0 or more", EXIT_INVALID)
    seen = adoption(ctx.db, args.limit)
    offline_after, now = ctx.config.ingest.offline_after_s, time.time()
    listed = [
        {
            "device_id": d["device_id"],
            "root_version": d["root_version"],
            "online": bool(d["online"]) and now - d["last_seen"] < offline_after,
            "last_seen": d["last_seen"] or None,
        }
        for d in seen.listed
    ]
    if args.json:
        print(
            json.dumps(
                {
                    "root_version": seen.newest,
                    "stored": seen.stored,
                    "devices": seen.total,
                    "current": seen.versions.get(seen.newest, 0),
                    "behind": seen.behind,
                    "versions": [
                        {"root_version": v, "devices": n} for v, n in seen.versions.items()
                    ],
                    "behind_devices": listed,
                }
            )
        )
        return 0
    where = "stored" if seen.stored else "implicit: no root stored, devices trust [trust] keys"
    print(f"newest root v{seen.newest} ({where})")
    for version, n in sorted(seen.versions.items(), reverse=True):
        label = f"v{version}" if version else "unknown"
        note = " (agents that do not report their root)" if not version else ""
        print(f"  {label:<8} {n} device(s){note}")
    if not seen.total:
        print("no device has reported yet")
    elif not seen.behind:
        print(f"every device ({seen.total}) reports root v{seen.newest}")
        return 0
    else:
        print(f"{seen.behind} of {seen.total} device(s) behind root v{seen.newest}")
    if listed:
        print_table(
            "behind",
            ("device", "root", "online", "last seen"),
            [
                [
                    d["device_id"],
                    f"v{d['root_version']}" if d["root_version"] else "unknown",
                    "yes" if d["online"] else "no",
                    _when(d["last_seen"]),
                ]
                for d in listed
            ],
        )
        if len(listed) < seen.behind:
            print(f"... and {seen.behind - len(listed)} more (--limit)")
    return 0


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _show(ctx: Context, args: argparse.Namespace) -> int:
    roots = [parse_root(e["signed"]) for e in stored_roots(ctx.db)]
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "version": r.version,
                        "issued": r.issued,
                        "expires": r.expires,
                        "release_keys": [k.hex for k in r.release_keys],
                        "release_threshold": r.release_threshold,
                        "root_keys": [k.hex for k in r.root_keys],
                        "root_threshold": r.root_threshold,
                    }
                    for r in roots
                ]
            )
        )
        return 0
    if not roots:
        print("no root stored: devices trust version 1 (their [trust] keys)")
    for root in roots:
        print(describe(root))
    return 0
