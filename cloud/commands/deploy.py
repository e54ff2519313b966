"""`litefleet deploy NAME@VERSION (--device ID... | --group G | --profile P)`: a staged rollout."""

from __future__ import annotations

import argparse
import json
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloud import audit
from cloud.commands._rollout_wait import DownloadProgress, follow_rollout
from cloud.context import CommandFailed, Context, add_config_argument, run_command
from cloud.deploy import TargetError, resolve_targets, write_bundle
from cloud.durations import parse_duration, parse_share_pct
from cloud.mqtt import CloudLink
from cloud.release import load_releases
from cloud.rollout import Publish, create_rollout, parse_waves, start_wave
from cloud.roots import chain_message, current_root
from cloud.signers import UntrustedSigner, check_releases
from localio.cli import EXIT_INVALID, EXIT_UNAVAILABLE
from shared.errors import Unavailable
from shared.keys import SigningKey
from shared.topics import Channel, fleet_subscription, topic

__all__ = ["parse_ref", "publisher", "register"]


def parse_ref(text: str) -> tuple[str, int]:
    name, sep, version = text.rpartition("@")
    if not sep or not name or not version.isdigit():
        raise CommandFailed(f"{text!r} is not NAME@VERSION (for example digits@3)", EXIT_INVALID)
    return name, int(version)


def publisher(link: CloudLink, prefix: str) -> Publish:
    def publish(device_id: str, payload: bytes) -> None:
        link.publish(topic(device_id, Channel.DESIRED, prefix), payload, retain=True)

    return publish


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "deploy",
        help="roll a release out to devices in waves",
        description="Create a rollout: sign one deployment per device and publish the first "
        "wave's deployments, retained, on devices/{id}/desired. `litefleet serve` starts the "
        "next wave once enough devices committed, and pauses the rollout when too many fail. "
        "Refused, with nothing written, when the current root does not accept the signing key "
        "or the release's signature.",
    )
    p.add_argument("release", metavar="NAME@VERSION")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--device", nargs="+", metavar="ID", help="these devices")
    who.add_argument("--group", metavar="G", help="every device in group G")
    who.add_argument("--profile", metavar="P", help="every known device with profile P")
    p.add_argument(
        "--waves",
        default="1,10%,50%,100%",
        help="cumulative wave sizes, counts or shares (default 1,10%%,50%%,100%%)",
    )
    p.add_argument(
        "--success-threshold",
        default="95%",
        help="share of released devices that must commit before the next wave (default 95%%)",
    )
    p.add_argument(
        "--max-failures",
        default="5%",
        help="pause when failures pass this share of released devices (default 5%%)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="write DIR/<device>.json and the artifacts for `litefleet-agent apply` "
        "instead of publishing",
    )
    p.add_argument(
        "--wait",
        action="store_true",
        help="follow the rollout wave by wave (needs `litefleet serve` running): "
        "exit 0 when it completes, 1 when it pauses or is aborted (with the "
        "devices' reasons), 3 when --timeout passes first",
    )
    p.add_argument(
        "--timeout",
        default="30m",
        help="with --wait, give up after this long: 90, 10m, 2h (default 30m)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the rollout as JSON (with --wait: one JSON object per line)",
    )
    add_config_argument(p)
    p.set_defaults(func=lambda args: run_command(args, lambda ctx: _deploy(ctx, args)))


def _deploy(ctx: Context, args: argparse.Namespace) -> int:
    name, version = parse_ref(args.release)
    if args.wait and args.out is not None:
        raise CommandFailed(
            "--wait follows a published rollout; an --out bundle is applied offline", EXIT_INVALID
        )
    try:
        waves = parse_waves("100%" if args.out else args.waves)
        success = parse_share_pct(args.success_threshold)
        failures = parse_share_pct(args.max_failures)
        timeout_s = parse_duration(args.timeout)
    except ValueError as e:
        raise CommandFailed(str(e), EXIT_INVALID) from e
    stored = load_releases(ctx.db, name, version)
    if not stored:
        raise CommandFailed(f"no release {name}@{version} (litefleet release ...)", EXIT_INVALID)
    now = datetime.now(UTC)
    live = {p: b for p, b in stored.items() if b.release.expires_at > now}
    if not live:
        expired = ", ".join(f"{p} at {b.release.expires}" for p, b in stored.items())
        raise CommandFailed(
            f"release {name}@{version} expired ({expired}); release the model "
            "again under a new version",
            EXIT_INVALID,
        )
    try:
        targets = resolve_targets(
            ctx.db, name, set(live), devices=args.device, group=args.group, profile=args.profile
        )
    except TargetError as e:
        raise CommandFailed(str(e), EXIT_INVALID) from e
    devices = list(targets)
    used = {targets[d] for d in devices}
    key = ctx.release_signer()
    _check_releases(ctx, key, f"{name}@{version}", {p: live[p].envelope for p in sorted(used)})
    plan = create_rollout(
        ctx.db,
        {p: (live[p].release, live[p].envelope) for p in used},
        targets,
        waves,
        key,
        now,
        lifetime_s=ctx.config.rollout.deployment_lifetime_s,
        success_threshold_pct=success,
        max_failures_pct=failures,
    )
    for device_id, envelope in plan.deployments.items():
        audit.record(
            ctx.db,
            audit.Action.DEPLOY,
            f"{plan.rollout_id}/{device_id}",
            signed=envelope,
            detail=f"{name}@{version}",
        )
    summary = {
        "id": plan.rollout_id,
        "release": f"{name}@{version}",
        "devices": len(devices),
        "profiles": sorted(used),
        "waves": list(plan.waves),
        "wave_sizes": list(plan.sizes),
        "first_wave": list(devices[: plan.sizes[0]]),
    }
    if args.out is not None:
        builds = [
            (live[p].release, live[p].artifact_key, list(live[p].delta_keys)) for p in sorted(used)
        ]
        files = write_bundle(
            args.out,
            builds,
            plan.deployments,
            ctx.artifacts(),
            ctx.config.rollout.max_artifact_bytes,
            chain_message(ctx.db),
        )
        start_wave(ctx.db, plan.rollout_id, 0, lambda _d, _p: None, time.time())
        summary["files"] = [str(f) for f in files]
        _print(summary, args.json, f"wrote {len(files)} files to {args.out}")
        return 0
    cfg = ctx.config.mqtt
    downloads = DownloadProgress(plan.rollout_id)
    link = CloudLink(
        cfg,
        f"{cfg.client_id}-deploy-{secrets.token_hex(3)}",
        subscriptions=(
            (fleet_subscription(Channel.UPDATE, cfg.topic_prefix),) if args.wait else ()
        ),
        on_message=downloads.on_message if args.wait else None,
    )
    try:
        try:
            link.start(timeout=10.0)
            start_wave(ctx.db, plan.rollout_id, 0, publisher(link, cfg.topic_prefix), time.time())
        except Unavailable as e:
            summary["error"] = str(e)
            _print(
                summary,
                args.json,
                f"rollout recorded, but wave 1 was not published: {e}; "
                "`litefleet serve` publishes it once the broker is reachable",
            )
            return EXIT_UNAVAILABLE
        _print(summary, args.json, f"published wave 1 to {plan.sizes[0]} device(s)")
        if not args.wait:
            return 0
        return int(
            follow_rollout(
                ctx.db, plan.rollout_id, downloads, timeout_s=timeout_s, as_json=args.json
            )
        )
    finally:
        link.stop()


def _check_releases(
    ctx: Context, key: SigningKey, ref: str, envelopes: dict[str, dict[str, Any]]
) -> None:
    """Refuse releases devices would refuse inside the deployment: signed by a key the current
    root no longer lists (or by fewer of its keys than it needs)."""
    try:
        check_releases(current_root(ctx.db, key).root, ref, envelopes)
    except UntrustedSigner as e:
        raise CommandFailed(str(e), EXIT_INVALID) from e


def _print(summary: dict[str, object], as_json: bool, note: str) -> None:
    if as_json:
        print(json.dumps(summary), flush=True)
        return
    print(f"rollout     {summary['id']}")
    print(f"release     {summary['release']} to {summary['devices']} device(s)")
    sizes = summary["wave_sizes"]
    assert isinstance(sizes, list)
    print(f"waves       {', '.join(str(n) for n in sizes)} (cumulative)")
    print(note, flush=True)
