"""`litefleet samples list|pull`: samples devices captured, and datasets made of them.

    litefleet samples list [--device D] [--since T] [--reason R] [--json]
    litefleet samples pull [--device D] [--since T] [--reason R] --out DIR

`--since` is a duration back from now (`2h`, `7d`) or a UTC time (`2026-01-31T12:00:00Z`);
`--reason` one trigger (low_confidence, disagreement, drift, command). `pull` writes
`DIR/dataset.npz` (x, the predicted y, trigger, sample) for `litefleet compress --data`, and
`DIR/dataset.json` with its sha256 for `litefleet release --samples`.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

from cloud.commands._table import print_table
from cloud.context import CommandFailed, Context, add_config_argument, run_command
from cloud.durations import parse_since
from cloud.samples.catalog import TRIGGERS, Sample, list_samples, pull_samples
from localio.cli import EXIT_INVALID
from shared.topics import validate_device_id

__all__ = ["register"]


def _since(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return parse_since(text)
    except ValueError as e:
        raise CommandFailed(str(e), EXIT_INVALID) from e


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "samples",
        help="list captured samples, or pull them as a dataset",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(title="actions", metavar="ACTION")
    for name, helptext in (
        ("list", "list the samples in the artifact store"),
        ("pull", "write the samples as a dataset.npz for compress --data"),
    ):
        a = sub.add_parser(name, help=helptext)
        a.add_argument("--device", default=None, help="one device's samples")
        a.add_argument(
            "--since",
            default=None,
            metavar="T",
            help="a duration back from now (2h, 7d) or a UTC time",
        )
        a.add_argument("--reason", choices=TRIGGERS, default=None, help="one trigger")
        if name == "pull":
            a.add_argument("--out", type=Path, required=True, metavar="DIR")
        else:
            a.add_argument("--json", action="store_true", help="print the samples as JSON")
        add_config_argument(a)
        action = _list if name == "list" else _pull
        a.set_defaults(
            func=lambda args, action=action: run_command(args, lambda ctx: action(ctx, args))
        )

    def usage(args: argparse.Namespace) -> int:
        p.print_help()
        return EXIT_INVALID

    p.set_defaults(func=usage)


def _select(ctx: Context, args: argparse.Namespace) -> list[Sample]:
    if args.device is not None:
        try:
            validate_device_id(args.device)
        except ValueError as e:
            raise CommandFailed(str(e), EXIT_INVALID) from e
    return list_samples(ctx.artifacts(), args.device, _since(args.since), args.reason)


def _list(ctx: Context, args: argparse.Namespace) -> int:
    samples = _select(ctx, args)
    if args.json:
        print(json.dumps([s.to_dict() for s in samples]))
        return 0
    rows = [
        [
            s.device_id,
            s.id,
            s.trigger,
            datetime.fromtimestamp(s.time, UTC).strftime("%Y-%m-%d %H:%M:%S"),
            f"{s.model['name']}@{s.model['version']}" if s.model else "-",
        ]
        for s in samples
    ]
    print_table(f"{len(samples)} sample(s)", ("device", "sample", "trigger", "time", "model"), rows)
    return 0


def _pull(ctx: Context, args: argparse.Namespace) -> int:
    samples = _select(ctx, args)
    selection = {"device": args.device, "since": args.since, "reason": args.reason}
    try:
        path, count = pull_samples(ctx.artifacts(), samples, args.out, selection)
    except ValueError as e:
        raise CommandFailed(str(e), EXIT_INVALID) from e
    print(f"pulled {count} sample(s) into {path}")
    return 0
