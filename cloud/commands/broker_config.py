"""`litefleet broker-config --out DIR --devices ID...`: a locked-down Mosquitto setup."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from cloud.broker_config import write_broker_config
from shared.cli_support import EXIT_INVALID
from shared.errors import InvalidDeviceId
from shared.topics import DEFAULT_PREFIX

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "broker-config",
        help="write a mosquitto config, password file and per-device ACL",
        description="Write DIR/mosquitto.conf, DIR/passwd and DIR/acl: no anonymous clients; "
        "each device (user name = device id) may write only its own state, telemetry, events "
        "and update topics and read only its own desired and cmd topics; the cloud user may "
        "read and write every device topic. Prints the generated passwords, or with "
        "--password-dir writes one file per user (mode 0600).",
    )
    p.add_argument("--out", required=True, type=Path, metavar="DIR")
    p.add_argument("--devices", required=True, nargs="+", metavar="ID")
    p.add_argument("--cloud-user", default="cloud", help="the cloud's user name (default cloud)")
    p.add_argument("--topic-prefix", default=DEFAULT_PREFIX)
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--listen", default="0.0.0.0", help="listener address (default 0.0.0.0)")
    p.add_argument("--persistence-dir", type=Path, default=None,
                   help="keep sessions and queued messages across broker restarts here")
    p.add_argument("--password-dir", type=Path, default=None,
                   help="write <user>.password files (mode 0600) instead of printing passwords")
    p.add_argument("--json", action="store_true", help="print files and passwords as JSON")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        files = write_broker_config(
            args.out, args.devices, cloud_user=args.cloud_user, prefix=args.topic_prefix,
            port=args.port, listen=args.listen, persistence_dir=args.persistence_dir)
    except (InvalidDeviceId, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INVALID
    result: dict[str, object] = {"config": str(files.config), "password_file":
                                 str(files.password_file), "acl_file": str(files.acl_file)}
    if args.password_dir is not None:
        args.password_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        paths = {}
        for user, password in files.passwords.items():
            path = args.password_dir / f"{user}.password"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(password + "\n")
            paths[user] = str(path)
        result["password_files"] = paths
    else:
        result["passwords"] = files.passwords
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"config      {files.config}\npasswords   {files.password_file}\nacl         "
          f"{files.acl_file}")
    if args.password_dir is not None:
        print(f"password files (mode 0600) in {args.password_dir}")
    else:
        print("passwords (shown once; give each device its own in [mqtt] password_file):")
        for user, password in files.passwords.items():
            print(f"  {user:<24} {password}")
    return 0
