"""`litefleet broker-config --out DIR --devices ID...`: a locked-down Mosquitto setup that starts
as written (`mosquitto -c DIR/mosquitto.conf`); `--add` gives new devices passwords."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from cloud.broker_config import (
    CLOUD_USERS,
    BrokerFiles,
    BrokerSetupError,
    DeviceTls,
    add_devices,
    configured_pid_file,
    write_broker_config,
)
from cloud.config import CloudRole
from localio.cli import EXIT_INVALID
from shared.errors import InvalidDeviceId
from shared.topics import DEFAULT_PREFIX

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "broker-config",
        help="write a mosquitto config, password files and ACLs for the fleet",
        description="Write DIR/mosquitto.conf with two listeners. Devices (--port): the client "
        "id is the user name, which is the device id, so no device can take over another's "
        "session; each may write only its own state, telemetry, events and update topics and "
        "read only its own desired and cmd. The cloud (--cloud-port): one user per role, "
        "litefleet-ingest (reads device topics), litefleet-controller (writes desired) and "
        "litefleet-operator (writes desired and cmd). Persistence is on. Run as root, the "
        "files belong to the broker's user (mosquitto); otherwise to you, and the config "
        "names you as its user. Prints the passwords, or with --password-dir writes one file "
        "per user (mode 0600). Refuses to overwrite an existing DIR/passwd: --add new devices "
        "(nobody else's password changes), or --rotate every password.",
    )
    p.add_argument("--out", required=True, type=Path, metavar="DIR")
    p.add_argument("--devices", required=True, nargs="+", metavar="ID")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--add", action="store_true", help="add these devices to DIR/passwd; nothing else changes"
    )
    mode.add_argument(
        "--rotate",
        action="store_true",
        help="write everything again, with new passwords for every user",
    )
    p.add_argument("--topic-prefix", default=DEFAULT_PREFIX)
    p.add_argument("--port", type=int, default=1883, help="devices listener port (default 1883)")
    p.add_argument("--listen", default="0.0.0.0", help="devices listener address (default 0.0.0.0)")
    p.add_argument(
        "--cloud-port", type=int, default=1884, help="cloud listener port (default 1884)"
    )
    p.add_argument(
        "--cloud-listen", default="127.0.0.1", help="cloud listener address (default 127.0.0.1)"
    )
    p.add_argument(
        "--persistence-dir",
        type=Path,
        default=None,
        help="where the broker keeps sessions and queued messages (default DIR/data)",
    )
    p.add_argument(
        "--broker-user",
        default=None,
        help="the user mosquitto runs as (default: mosquitto when run as root and "
        "it exists, else you)",
    )
    p.add_argument(
        "--tls-cert",
        type=Path,
        default=None,
        help="server certificate for the devices listener (TLS), with --tls-key",
    )
    p.add_argument("--tls-key", type=Path, default=None, help="its private key")
    p.add_argument(
        "--tls-ca",
        type=Path,
        default=None,
        help="the CA that signs device certificates (with --require-certificate)",
    )
    p.add_argument(
        "--require-certificate",
        action="store_true",
        help="mutual TLS: devices log in with a certificate whose CN is their id "
        "(no device passwords are issued)",
    )
    p.add_argument(
        "--password-dir",
        type=Path,
        default=None,
        help="write <user>.password files (mode 0600) instead of printing passwords",
    )
    p.add_argument("--json", action="store_true", help="print files and passwords as JSON")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    files: BrokerFiles | None = None
    try:
        tls = _tls(args)
        if args.add:
            passwords = add_devices(args.out, args.devices)
        else:
            files = write_broker_config(
                args.out,
                args.devices,
                prefix=args.topic_prefix,
                port=args.port,
                listen=args.listen,
                cloud_port=args.cloud_port,
                cloud_listen=args.cloud_listen,
                persistence_dir=args.persistence_dir,
                broker_user=args.broker_user,
                rotate=args.rotate,
                tls=tls,
            )
            passwords = files.passwords
    except (BrokerSetupError, InvalidDeviceId, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INVALID
    except OSError as e:
        print(f"error: {e.filename or args.out}: {e.strerror}", file=sys.stderr)
        return EXIT_INVALID
    result: dict[str, object] = {}
    if files is not None:
        result.update(
            config=str(files.config),
            password_file=str(files.password_file),
            acl_file=str(files.acl_file),
            cloud_password_file=str(files.cloud_password_file),
            cloud_acl_file=str(files.cloud_acl_file),
            persistence_dir=str(files.persistence_dir),
            pid_file=str(files.pid_file),
            broker_user=files.owner,
            port=args.port,
            cloud_port=args.cloud_port,
        )
    paths = _save_passwords(args.password_dir, passwords) if args.password_dir else None
    if paths is not None:
        result["password_files"] = paths
    else:
        result["passwords"] = passwords
    if args.json:
        print(json.dumps(result))
        return 0
    _print(args, files, passwords, paths)
    return 0


def _tls(args: argparse.Namespace) -> DeviceTls | None:
    if args.tls_cert is None and args.tls_key is None:
        if args.tls_ca is not None or args.require_certificate:
            raise BrokerSetupError(
                "--tls-ca and --require-certificate need --tls-cert and --tls-key"
            )
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise BrokerSetupError("--tls-cert and --tls-key go together")
    return DeviceTls(args.tls_cert, args.tls_key, args.tls_ca, args.require_certificate)


def _save_passwords(folder: Path, passwords: dict[str, str]) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths = {}
    for user, password in passwords.items():
        path = folder / f"{user}.password"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        os.chmod(path, 0o600)
        paths[user] = str(path.resolve())
    return paths


def _print(
    args: argparse.Namespace,
    files: BrokerFiles | None,
    passwords: dict[str, str],
    paths: dict[str, str] | None,
) -> None:
    if files is None:
        print(
            f"added {', '.join(passwords)} to {args.out.resolve() / 'passwd'}; "
            "reload the broker to let them in: systemctl reload mosquitto, or "
            + (
                f"when started with -d: kill -HUP $(cat {pid})"
                if (pid := configured_pid_file(args.out)) is not None
                else "kill -HUP its pid"
            )
        )
    else:
        print(
            f"config       {files.config}   (start: mosquitto -c {files.config})\n"
            f"devices      port {args.port} on {args.listen}: {files.password_file}, "
            f"{files.acl_file}\n"
            f"cloud        port {args.cloud_port} on {args.cloud_listen}: "
            f"{files.cloud_password_file}, {files.cloud_acl_file}\n"
            f"persistence  {files.persistence_dir}\n"
            f"pid file     {files.pid_file} (written when started with -d)\n"
            f"owner        {files.owner} (mosquitto runs as this user)"
        )
    if paths is not None:
        print(f"password files (mode 0600) in {args.password_dir}")
    else:
        print("passwords (shown once; give each device its own in [mqtt] password_file):")
        for user, password in passwords.items():
            print(f"  {user:<24} {password}")
    if files is not None:
        print("\nin cloud.toml:")
        print(f'[mqtt]\nhost = "{_host(args.cloud_listen)}"\nport = {args.cloud_port}')
        for role in CloudRole:
            user = CLOUD_USERS[role]
            where = paths[user] if paths is not None else f"<file holding {user}'s password>"
            print(f'\n[mqtt.{role.value}]\nusername = "{user}"\npassword_file = "{where}"')


def _host(listen: str) -> str:
    return "127.0.0.1" if listen in ("0.0.0.0", "::", "") else listen
