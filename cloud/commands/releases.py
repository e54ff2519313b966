"""`litefleet releases [NAME]`: what has been released, per model, version and profile."""

from __future__ import annotations

import argparse
import json
from typing import Any

from cloud.commands._table import add_wide_argument, print_table
from cloud.context import Context, add_config_argument, run_command
from cloud.store import Store
from cloud.store.releases import envelopes
from shared.documents import Release

__all__ = ["register", "release_views"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "releases",
        help="list releases: model, version, profile, sizes, deltas, provenance",
        description="List the signed releases in the store, newest version first: the model's "
        "size, the compressed artifact's, each delta (from which base, how large) and the "
        "provenance signed into the release (parent model, recipe, evaluation figures).",
    )
    p.add_argument("name", nargs="?", help="only this model")
    p.add_argument("--json", action="store_true", help="print a JSON array")
    add_wide_argument(p)
    add_config_argument(p)
    p.set_defaults(func=lambda args: run_command(args, lambda ctx: _releases(ctx, args)))


def release_views(store: Store, name: str | None = None) -> list[dict[str, Any]]:
    out = []
    for envelope in envelopes(store, name):
        r = Release.parse_signed(json.loads(envelope)["signed"])
        out.append(
            {
                "name": r.name,
                "version": r.version,
                "profile": r.profile,
                "created": r.created,
                "expires": r.expires,
                "target": {"sha256": r.target.sha256, "size": r.target.size},
                "artifact": {
                    "url": r.artifact.url,
                    "sha256": r.artifact.sha256,
                    "size": r.artifact.size,
                    "codec": r.artifact.codec,
                },
                "deltas": [
                    {"base_sha256": d.base_sha256, "url": d.url, "sha256": d.sha256, "size": d.size}
                    for d in r.deltas
                ],
                "provenance": {
                    "parent_sha256": r.provenance.parent_sha256,
                    "recipe": r.provenance.recipe,
                    "metrics": dict(r.provenance.metrics),
                },
            }
        )
    return out


def _size(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.1f} MiB"


def _releases(ctx: Context, args: argparse.Namespace) -> int:
    views = release_views(ctx.db, args.name)
    if args.json:
        print(json.dumps(views))
        return 0
    sha = 64 if args.wide else 12
    rows = []
    for v in views:
        deltas = (
            ", ".join(f"{_size(d['size'])} from {d['base_sha256'][:sha]}" for d in v["deltas"])
            or "-"
        )
        p = v["provenance"]
        figures = " ".join(f"{k}={val}" for k, val in sorted(p["metrics"].items()))
        provenance = " ".join(x for x in (p["recipe"], figures) if x) or "-"
        rows.append(
            [
                v["name"],
                str(v["version"]),
                v["profile"],
                v["target"]["sha256"][:sha],
                _size(v["target"]["size"]),
                _size(v["artifact"]["size"]),
                deltas,
                provenance,
                v["created"],
            ]
        )
    print_table(
        f"{len(views)} release(s)",
        (
            "model",
            "version",
            "profile",
            "sha256",
            "size",
            "artifact",
            "deltas",
            "provenance",
            "created",
        ),
        rows,
        wide=args.wide,
    )
    return 0
