"""`litefleet sim --devices N`: a simulated fleet on the configured broker and artifact URLs."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from cloud.context import CommandFailed, Context, add_config_argument, run_command
from cloud.fleet import add_to_group
from cloud.sim import Fleet, SimOptions, device_ids, raise_file_limit
from device_profiles import load_profile
from device_profiles.profile import ProfileInvalid
from localio.cli import EXIT_INVALID
from shared.errors import InvalidDeviceId, MalformedDocument
from shared.keys import PublicKey
from shared.messages import ModelIdentity
from shared.root import TrustedRoot, implicit_root
from shared.topics import validate_device_id

__all__ = ["register"]


def _pct(text: str) -> float:
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not a share like 5 or 5%") from e
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{text!r} is not between 0 and 100")
    return value


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "sim",
        help="run N simulated devices against the configured broker (load and rollout tests)",
        description="Start N simulated devices in this process. Each has its own MQTT client "
        "id and persistent session, retained state with a last will, telemetry with its own "
        "sequence numbers, and takes deployments as the agent does: the shared verification "
        "(signatures, expiry, profile, version, sizes), a real HTTP download of the delta or "
        "full artifact, decompression and sha256 checks, progress reports, a short simulated "
        "probation, and the outcome. No model runs: probation passes unless the device is one "
        "of the --fail-probation share. Stops on SIGINT/SIGTERM or after --duration and prints "
        "a JSON summary.",
    )
    p.add_argument("--devices", type=int, required=True, metavar="N", help="how many devices")
    p.add_argument(
        "--id-prefix",
        default="sim",
        metavar="P",
        help="device ids are P-0000, P-0001, ... (default sim)",
    )
    p.add_argument("--group", metavar="G", help="add the devices to group G in the store")
    p.add_argument(
        "--profile",
        default="x86-gateway",
        metavar="NAME",
        help="device profile the devices report (default x86-gateway)",
    )
    p.add_argument(
        "--model",
        default="digits",
        metavar="NAME",
        help="model name the devices run (default digits)",
    )
    p.add_argument(
        "--initial",
        type=Path,
        metavar="MODEL.tflite",
        help="the model the devices start with (version 0), so deltas from it apply",
    )
    p.add_argument(
        "--trust-key",
        action="append",
        metavar="HEX",
        help="trusted release key (repeatable; default: the public half of the "
        "config's [signing] key): the implicit root version 1 of these keys, as an agent "
        "with only [trust] keys has; the devices walk the trust/root chain from it",
    )
    p.add_argument("--threshold", type=int, default=1, help="signatures required (default 1)")
    p.add_argument(
        "--telemetry-interval",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds between telemetry records per device (default 10)",
    )
    p.add_argument(
        "--fail-probation",
        type=_pct,
        default=0.0,
        metavar="PCT",
        help="share of devices whose probation fails (default 0)",
    )
    p.add_argument(
        "--offline",
        type=_pct,
        default=0.0,
        metavar="PCT",
        help="share of devices that go offline halfway through their first download, "
        "come back after --offline-for and resume it (default 0)",
    )
    p.add_argument(
        "--offline-for",
        type=float,
        default=5.0,
        metavar="S",
        help="how long those devices stay away (default 5)",
    )
    p.add_argument(
        "--restart",
        type=_pct,
        default=0.0,
        metavar="PCT",
        help="share of devices that drop their connection once without DISCONNECT "
        "and resume their persistent session (default 0)",
    )
    p.add_argument(
        "--restart-within",
        type=float,
        default=60.0,
        metavar="S",
        help="each restarting device restarts at a random moment in its first S "
        "seconds (default 60)",
    )
    p.add_argument(
        "--probation",
        type=float,
        default=2.0,
        metavar="S",
        help="simulated probation length (default 2)",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=0.0,
        metavar="S",
        help="stop after this many seconds (default: run until SIGINT/SIGTERM)",
    )
    p.add_argument(
        "--connect-rate",
        type=float,
        default=200.0,
        metavar="PER_S",
        help="new connections per second while ramping up (default 200)",
    )
    p.add_argument(
        "--downloads",
        type=int,
        default=32,
        metavar="K",
        help="concurrent downloads for the whole fleet (default 32)",
    )
    p.add_argument("--seed", type=int, default=1, help="which devices get which fault")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    add_config_argument(p)
    p.set_defaults(func=lambda args: run_command(args, lambda ctx: _sim(ctx, args)))


def _root(ctx: Context, args: argparse.Namespace) -> TrustedRoot:
    """What the simulated devices trust first: like an agent configured with only `[trust]
    keys`, the implicit root version 1 of those keys, from which they walk `trust/root`."""
    try:
        if args.trust_key:
            keys = tuple(PublicKey.from_hex(k) for k in args.trust_key)
        else:
            keys = (ctx.signing_key().public,)
        return implicit_root(keys, args.threshold)
    except (MalformedDocument, ValueError) as e:
        raise CommandFailed(f"--trust-key/--threshold: {e}", EXIT_INVALID) from e


def _sim(ctx: Context, args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        options = SimOptions(
            devices=args.devices,
            id_prefix=args.id_prefix,
            profile=args.profile,
            model_name=args.model,
            telemetry_interval_s=args.telemetry_interval,
            fail_probation_pct=args.fail_probation,
            offline_pct=args.offline,
            offline_s=args.offline_for,
            restart_pct=args.restart,
            restart_within_s=args.restart_within,
            duration_s=args.duration,
            probation_s=args.probation,
            connect_rate=args.connect_rate,
            downloads=args.downloads,
            seed=args.seed,
            session_expiry_s=ctx.config.mqtt.session_expiry_s,
        )
        profile = load_profile(args.profile)
    except ProfileInvalid as e:
        raise CommandFailed("\n".join(e.problems), EXIT_INVALID) from e
    except ValueError as e:
        raise CommandFailed(str(e), EXIT_INVALID) from e
    try:
        validate_device_id(device_ids(args.id_prefix, args.devices)[-1])
    except InvalidDeviceId as e:
        raise CommandFailed(f"--id-prefix {args.id_prefix!r}: {e}", EXIT_INVALID) from e
    root = _root(ctx, args)
    initial = None
    if args.initial is not None:
        try:
            data = args.initial.read_bytes()
        except OSError as e:
            raise CommandFailed(f"--initial {args.initial}: {e.strerror}", EXIT_INVALID) from e
        initial = (ModelIdentity(args.model, 0, hashlib.sha256(data).hexdigest()), data)
    if (problem := raise_file_limit(args.devices)) is not None:
        raise CommandFailed(problem, EXIT_INVALID)
    fleet = Fleet(
        options,
        ctx.config.mqtt,
        root,
        max_model_bytes=profile.budget.max_model_bytes,
        initial=initial,
    )
    if args.group:
        added = add_to_group(ctx.db, args.group, fleet.ids)
        logging.getLogger(__name__).info("added %s device(s) to group %s", added, args.group)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger(__name__).info("signal %s: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    summary = fleet.run(stop)
    print(json.dumps(summary), flush=True)
    return 0
