"""`litefleet serve`: ingest, rollout controller, offline detection, artifact HTTP server,
and the web dashboard."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType

from cloud.context import Context, add_config_argument, run_command
from cloud.service import CloudService

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the ingester, the rollout controller, the artifact HTTP server and the "
        "dashboard",
        description="Subscribe to every device's state, telemetry, events and update topics "
        "(persistent session) and store them once each; drive rollouts from device reports; "
        "mark silent devices offline; serve a file artifact store over HTTP with Range and "
        "ETag; serve the web dashboard and its JSON API at [web] listen (default "
        "127.0.0.1:8080). A message a device sends that cannot be stored is quarantined "
        "(`litefleet quarantine`). SIGTERM or SIGINT stops it cleanly (status 0); a worker "
        "thread that dies ends it with status 70, for systemd to restart it.",
    )
    p.add_argument("--no-http", action="store_true", help="do not serve artifacts over HTTP")
    p.add_argument("--no-web", action="store_true",
                   help="do not serve the dashboard (as [web] enabled = false)")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    add_config_argument(p)
    p.set_defaults(func=lambda args: run_command(args, lambda ctx: _serve(ctx, args)))


def _serve(ctx: Context, args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    service = CloudService(ctx.config, http=False if args.no_http else None,
                           web=False if args.no_web else None)

    def stop(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger(__name__).info("signal %s: stopping", signum)
        service.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    status = service.run()
    if service.failure is not None:
        logging.getLogger(__name__).critical("exiting with status %s: %s", status,
                                             service.failure)
    return status
