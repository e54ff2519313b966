"""`litefleet serve`: ingest, rollout controller, offline detection, artifact HTTP server,
and the web dashboard."""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
from types import FrameType

from cloud.context import CommandFailed, Context, add_config_argument, run_command
from cloud.service import CloudService, ServeRole, check_role
from localio.cli import EXIT_INVALID

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the ingester, the rollout controller, the artifact HTTP server and the dashboard",
        description="Subscribe to every device's state, telemetry, events and update topics "
        "(persistent session) and store them once each; drive rollouts from device reports; "
        "mark silent devices offline; serve a file artifact store over HTTP with Range and "
        "ETag; serve the web dashboard and its JSON API at [web] listen (default "
        "127.0.0.1:8080). A message a device sends that cannot be stored is quarantined "
        "(`litefleet quarantine`). SIGTERM or SIGINT stops it cleanly (status 0); a worker "
        "thread that dies ends it with status 70, for systemd to restart it.",
    )
    p.add_argument("--no-http", action="store_true", help="do not serve artifacts over HTTP")
    p.add_argument(
        "--no-web",
        action="store_true",
        help="do not serve the dashboard (as [web] enabled = false)",
    )
    p.add_argument(
        "--role",
        choices=[r.value for r in ServeRole],
        default=ServeRole.ALL.value,
        help="all (default): everything in one process; ingest: one of any number "
        "of ingesters sharing the device topics (MQTT shared subscription); "
        "controller: rollouts and offline detection, one active at a time (a lease "
        "in the store), the others standing by; artifacts: the HTTP server only; web: the dashboard only. "
        "Roles other than all need a PostgreSQL store",
    )
    p.add_argument(
        "--worker",
        metavar="NAME",
        default=socket.gethostname(),
        help="with --role ingest: this worker's name, its broker session's: start "
        "a worker again under the same name to get the messages the broker kept "
        "for it (default: the host name)",
    )
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    add_config_argument(p)
    p.set_defaults(func=lambda args: run_command(args, lambda ctx: _serve(ctx, args)))


def _serve(ctx: Context, args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    role = ServeRole(args.role)
    refused = check_role(ctx.config, role)
    if refused is not None:
        raise CommandFailed(refused, EXIT_INVALID)
    service = CloudService(
        ctx.config,
        http=False if args.no_http else None,
        web=False if args.no_web else None,
        role=role,
        worker=args.worker,
    )

    def stop(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger(__name__).info("signal %s: stopping", signum)
        service.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    status = service.run()
    if service.failure is not None:
        logging.getLogger(__name__).critical("exiting with status %s: %s", status, service.failure)
    return status
