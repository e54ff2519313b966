"""The fleet view: `devices`, `telemetry`, `rollouts`, `rollout pause|resume|abort`, `groups`.

Tables on a terminal (rich); `--json` prints a JSON array for scripts.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from datetime import UTC, datetime
from typing import Any, TypeAlias

from cloud import audit
from cloud.commands._table import add_wide_argument, print_table
from cloud.context import CommandFailed, Context, add_config_argument, run_command
from cloud.durations import parse_duration
from cloud.fleet import (
    add_to_group,
    device_views,
    group_views,
    remove_from_group,
    rollout_views,
    telemetry_since,
    unknown_devices,
)
from cloud.mqtt import CloudLink
from cloud.rollout import abort_rollout, pause_rollout, resume_rollout
from cloud.store.records import Cursor
from cloud.store.rollup import BucketCursor
from cloud.telemetry import ROLLUP_AFTER_S, TelemetryFollower, telemetry_buckets
from localio.cli import EXIT_INVALID
from shared.errors import Unavailable
from shared.topics import Channel, topic

__all__ = ["register"]

Sub: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _num(v: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def _add(
    sub: Sub, name: str, help_text: str, body: Any, json_flag: bool = True
) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_text, description=help_text)
    if json_flag:
        p.add_argument("--json", action="store_true", help="print a JSON array")
    add_config_argument(p)
    p.set_defaults(func=lambda args: run_command(args, lambda ctx: body(ctx, args)))
    return p


def register(subparsers: Sub) -> None:
    d = _add(
        subparsers,
        "devices",
        "list known devices: online, profile, model, source, fps, p95",
        _devices,
    )
    add_wide_argument(d)
    t = _add(
        subparsers,
        "telemetry",
        "show telemetry records as they were stored; over a window longer than 6h, each "
        "device's hourly means from the per-minute rollup instead (--every, --raw)",
        _telemetry,
    )
    t.add_argument("--device", metavar="ID", help="only this device")
    t.add_argument("--since", default="10m", help="how far back: 600, 10m, 2h, 1d (default 10m)")
    t.add_argument(
        "--follow", action="store_true", help="keep printing new records (records, never means)"
    )
    how = t.add_mutually_exclusive_group()
    how.add_argument(
        "--every",
        metavar="DUR",
        help="per device and bucket of DUR (1m, 5m, 1h, 1d: whole minutes of device time): "
        "records, mean fps, mean p95, from the per-minute rollup (the default, per 1h, when "
        "--since is longer than 6h)",
    )
    how.add_argument(
        "--raw", action="store_true", help="every record, however long the window (no rollup)"
    )
    t.add_argument("--limit", type=int, default=1000, help="at most this many rows (default 1000)")
    r = _add(
        subparsers, "rollouts", "list rollouts with their progress and failure reasons", _rollouts
    )
    r.add_argument("id", nargs="?", help="one rollout")
    add_wide_argument(r)
    ro = subparsers.add_parser(
        "rollout",
        help="pause, resume or abort a rollout",
        description="Pause, resume or abort a rollout.",
    )
    ro_sub = ro.add_subparsers(title="actions", metavar="ACTION")
    for action in ("pause", "resume", "abort"):
        a = _add(ro_sub, action, f"{action} a rollout", _rollout_action, json_flag=False)
        a.add_argument("id")
        a.set_defaults(action=action)

    def usage(_args: argparse.Namespace) -> int:
        ro.print_help()
        return EXIT_INVALID

    ro.set_defaults(func=usage)
    g = _add(subparsers, "groups", "list groups, or add and remove members", _groups)
    g_sub = g.add_subparsers(title="actions", metavar="ACTION")
    for action in ("add", "remove"):
        a = _add(
            g_sub,
            action,
            f"{action} devices {'to' if action == 'add' else 'from'} a group",
            _group_change,
            json_flag=False,
        )
        a.add_argument("group")
        a.add_argument("devices", nargs="+", metavar="ID")
        a.set_defaults(action=action)
    _add(g_sub, "list", "list groups and their devices", _groups)


def _devices(ctx: Context, args: argparse.Namespace) -> int:
    views = device_views(ctx.db, ctx.config.ingest.offline_after_s)
    if args.json:
        print(json.dumps(views))
        return 0
    sha_chars = 64 if args.wide else 12
    rows = []
    for v in views:
        m = v["model"]
        rows.append(
            [
                v["device_id"],
                "yes" if v["online"] else "no",
                v["profile"] or "-",
                f"{m['name']}@{m['version']} {str(m['sha256'])[:sha_chars]}" if m else "-",
                v["source_status"] or "-",
                _num(v["fps"]),
                _num(v["p95_ms"]),
                v["update_phase"] or "-",
                _drift(v.get("drift")),
                f"v{v['root_version']}" if v["root_version"] else "-",
                _when(v["last_seen"]),
            ]
        )
    print_table(
        f"{len(views)} device(s)",
        (
            "device",
            "online",
            "profile",
            "model",
            "source",
            "fps",
            "p95 ms",
            "update",
            "drift",
            "root",
            "last seen",
        ),
        rows,
        wide=args.wide,
    )
    return 0


def _drift(drift: dict[str, Any] | None) -> str:
    """`0.03` under the threshold; `1.42! input.c0` over it (with the worst feature)."""
    if not drift or not isinstance(drift.get("score"), (int, float)):
        return "-"
    score, threshold = float(drift["score"]), drift.get("threshold")
    if isinstance(threshold, (int, float)) and score > threshold:
        return f"{score:.2f}! {drift.get('feature', '?')}"
    return f"{score:.2f}"


def _telemetry(ctx: Context, args: argparse.Namespace) -> int:
    try:
        window = parse_duration(args.since)
        every = _every(args, window)
    except ValueError as e:
        raise CommandFailed(str(e), EXIT_INVALID) from e
    since = time.time() - window
    if every is not None:
        return _print_buckets(
            telemetry_buckets(ctx.db, since, every, args.device, limit=args.limit), args.json
        )
    if not args.follow:
        rows = telemetry_since(ctx.db, since, args.device, limit=args.limit)
        if args.json:
            print(json.dumps([r for _, r in rows]))
        else:
            _print_records(rows, False)
        return 0
    follower = TelemetryFollower(ctx.db, since, args.device, page=args.limit)
    try:
        while True:
            _print_records(follower.poll(), args.json)
            if not follower.behind:
                time.sleep(1.0)
    except KeyboardInterrupt:  # Ctrl-C is how a follow ends
        pass
    return 0


def _every(args: argparse.Namespace, window: int) -> int | None:
    """The bucket length to read from the rollup, or None for records: `--every` as asked,
    else one hour for a window over `ROLLUP_AFTER_S` unless `--raw` or `--follow`."""
    if args.every is None:
        if args.raw or args.follow or window <= ROLLUP_AFTER_S:
            return None
        if not args.json:
            print(
                f"per device and hour, from the per-minute rollup (--since over "
                f"{ROLLUP_AFTER_S // 3600}h); --raw for every record",
                file=sys.stderr,
            )
        return 3600
    if args.follow:
        raise ValueError("--every reads means, --follow records: give one of them")
    every = parse_duration(args.every)
    if every % 60:
        raise ValueError(f"--every {args.every}: buckets are whole minutes (1m, 5m, 1h)")
    return every


def _print_buckets(rows: list[tuple[BucketCursor, dict[str, Any]]], as_json: bool) -> int:
    if as_json:
        print(json.dumps([r for _, r in rows]))
        return 0
    for _, r in rows:
        print(
            f"{_when(r['ts'])}  {r['device_id']:<16} per {_span(r['every_s']):<4} "
            f"records {r['records']:<6} fps {r['fps']:.1f}  p95 {r['latency_p95_ms']:.1f} ms"
        )
    return 0


def _span(seconds: int) -> str:
    for unit, n in (("d", 86400), ("h", 3600)):
        if seconds % n == 0:
            return f"{seconds // n}{unit}"
    return f"{seconds // 60}m"


def _print_records(rows: list[tuple[Cursor, dict[str, Any]]], as_json: bool) -> None:
    for _, r in rows:
        if as_json:
            print(json.dumps(r))
        else:
            m = r.get("model") or {}
            print(
                f"{_when(r['ts'])}  {r['device_id']:<16} seq {r['seq']:<7} "
                f"{m.get('name', '-')}@{m.get('version', '-')}  fps {r['fps']:.1f}  "
                f"p95 {r['latency_p95_ms']:.1f} ms  errors {r['errors']}  "
                f"cpu {r['cpu_percent']:.0f}%  outbox {r['outbox_depth']}"
            )
    sys.stdout.flush()  # line by line into a pipe (`| jq`), not in 4 KiB blocks


def _rollouts(ctx: Context, args: argparse.Namespace) -> int:
    views = rollout_views(ctx.db, args.id)
    if args.id and not views:
        raise CommandFailed(f"no rollout {args.id!r}", EXIT_INVALID)
    if args.json:
        print(json.dumps(views))
        return 0
    rows = []
    for v in views:
        reasons = ", ".join(f"{k}: {n}" for k, n in v["failure_reasons"].items()) or "-"
        downloading = (
            f"{v['downloading']} ({_bytes_of(v['bytes_done'], v['bytes_total'])})"
            if v["downloading"]
            else "-"
        )
        rows.append(
            [
                v["id"],
                v["release"],
                v["state"],
                f"{max(v['current_wave'], 0)}/{v['wave_count']}",
                str(v["committed"]),
                str(v["failed"]),
                str(v["pending"] + v["waiting"]),
                downloading,
                reasons,
            ]
        )
    print_table(
        f"{len(views)} rollout(s)",
        (
            "id",
            "release",
            "state",
            "wave",
            "committed",
            "failed",
            "pending",
            "downloading",
            "reasons",
        ),
        rows,
        wide=args.wide,
    )
    for v in views:
        if v["reason"]:
            print(f"{v['id']}: {v['reason']}")
    if args.id:  # one rollout: each download under way, each failed device's own sentence
        for d in views[0]["downloads"]:
            print(f"{d['device_id']}: downloading {_bytes_of(d['bytes_done'], d['bytes_total'])}")
        for f in views[0]["failures"]:
            sentence = f"{f['reason']}: {f['detail']}" if f["detail"] else f["reason"]
            print(f"{f['device_id']}: {sentence}")
    return 0


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    return f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.1f} MiB"


def _bytes_of(done: int, total: int) -> str:
    """`1.2 MiB of 4.0 MiB` (as the dashboard says it); `?` before the size is known."""
    return f"{_size(done)} of {_size(total)}" if total else "?"


def _rollout_action(ctx: Context, args: argparse.Namespace) -> int:
    try:
        if args.action == "pause":
            pause_rollout(ctx.db, args.id)
        elif args.action == "resume":
            resume_rollout(ctx.db, args.id)
        else:
            _abort(ctx, args.id)
    except KeyError as e:
        raise CommandFailed(str(e.args[0]), EXIT_INVALID) from e
    audit.record(ctx.db, audit.Action(f"rollout.{args.action}"), args.id)
    print(
        f"rollout {args.id}: {args.action}d"
        if args.action != "abort"
        else f"rollout {args.id}: aborted"
    )
    return 0


def _abort(ctx: Context, rollout_id: str) -> None:
    cfg = ctx.config.mqtt
    link = CloudLink(cfg, f"{cfg.client_id}-abort-{secrets.token_hex(3)}")
    try:
        link.start(timeout=5.0)
    except Unavailable as e:
        print(f"warning: {e}; retained deployments of pending devices stay", file=sys.stderr)
        abort_rollout(ctx.db, rollout_id, None)
        return
    try:
        abort_rollout(
            ctx.db,
            rollout_id,
            lambda d, p: link.publish(topic(d, Channel.DESIRED, cfg.topic_prefix), p, retain=True),
        )
    finally:
        link.stop()


def _groups(ctx: Context, args: argparse.Namespace) -> int:
    views = group_views(ctx.db)
    if getattr(args, "json", False):
        print(json.dumps(views))
        return 0
    for v in views:
        print(f"{v['group']}: {' '.join(v['devices'])}")
    return 0


def _group_change(ctx: Context, args: argparse.Namespace) -> int:
    if args.action == "add":
        n = add_to_group(ctx.db, args.group, args.devices)
        for device in unknown_devices(ctx.db, args.devices):
            print(
                f"warning: {device} has never reported to this cloud (a typo?); added to "
                f"{args.group} anyway",
                file=sys.stderr,
            )
        print(f"added {n} device(s) to {args.group}")
    else:
        n = remove_from_group(ctx.db, args.group, args.devices)
        print(f"removed {n} device(s) from {args.group}")
    audit.record(
        ctx.db, audit.Action(f"group.{args.action}"), args.group, detail=" ".join(args.devices)
    )
    return 0
