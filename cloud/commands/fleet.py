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
    t = _add(subparsers, "telemetry", "show telemetry records as they were stored", _telemetry)
    t.add_argument("--device", metavar="ID", help="only this device")
    t.add_argument("--since", default="10m", help="how far back: 600, 10m, 2h, 1d (default 10m)")
    t.add_argument("--follow", action="store_true", help="keep printing new records")
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
        since = time.time() - parse_duration(args.since)
    except ValueError as e:
        raise CommandFailed(str(e), EXIT_INVALID) from e
    rows = telemetry_since(ctx.db, since, args.device, limit=args.limit)
    if args.json and not args.follow:
        print(json.dumps([r for _, r in rows]))
        return 0
    last = _print_records(rows, args.json)
    try:
        while args.follow:
            time.sleep(1.0)
            rows = telemetry_since(ctx.db, since, args.device, after=last, limit=args.limit)
            last = _print_records(rows, args.json) or last
    except KeyboardInterrupt:  # Ctrl-C is how a follow ends
        pass
    return 0


def _print_records(rows: list[tuple[Cursor, dict[str, Any]]], as_json: bool) -> Cursor | None:
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
    return rows[-1][0] if rows else None


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
