"""A locked-down Mosquitto configuration for a fleet: password file and per-device ACL.

Each device logs in with its device id as the user name and may only

    write  {prefix}/devices/<its id>/state, telemetry, events, update, capture
    read   {prefix}/devices/<its id>/desired, cmd

(mosquitto `pattern` lines with `%u`), while the cloud user reads and writes every device
topic. Passwords are hashed with `mosquitto_passwd` when it is installed, else written directly
in Mosquitto's `$7$` format (PBKDF2-SHA512, 101 iterations, 12-byte salt), which it reads the same.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from shared.topics import DEFAULT_PREFIX, Channel, validate_device_id

__all__ = ["BrokerFiles", "acl_text", "hash_password", "write_broker_config"]

_ITERATIONS = 101
_DEVICE_WRITES = (Channel.STATE, Channel.TELEMETRY, Channel.EVENTS, Channel.UPDATE, Channel.CAPTURE)
_DEVICE_READS = (Channel.DESIRED, Channel.CMD)


@dataclass(frozen=True)
class BrokerFiles:
    config: Path
    password_file: Path
    acl_file: Path
    passwords: dict[str, str]  # user -> clear-text password (print or store it, then forget it)


def hash_password(password: str, salt: bytes | None = None) -> str:
    """Mosquitto's `$7$` password hash: PBKDF2-SHA512 over the password with a 12-byte salt."""
    salt = salt if salt is not None else os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, _ITERATIONS)
    b64 = base64.b64encode
    return f"$7${_ITERATIONS}${b64(salt).decode()}${b64(digest).decode()}"


def acl_text(cloud_user: str, prefix: str = DEFAULT_PREFIX) -> str:
    lines = [
        "# LiteFleet broker ACL: each device may touch only its own topics.",
        f"user {cloud_user}",
        f"topic readwrite {prefix}/devices/#",
        "",
        "# Every other user is a device whose user name is its device id (%u).",
    ]
    lines += [f"pattern write {prefix}/devices/%u/{c.value}" for c in _DEVICE_WRITES]
    lines += [f"pattern read {prefix}/devices/%u/{c.value}" for c in _DEVICE_READS]
    return "\n".join(lines) + "\n"


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def _password_file(path: Path, passwords: dict[str, str], use_tool: bool) -> None:
    tool = shutil.which("mosquitto_passwd") if use_tool else None
    path.unlink(missing_ok=True)
    if tool is None:
        _write_private(path, "".join(f"{u}:{hash_password(p)}\n" for u, p in passwords.items()))
        return
    _write_private(path, "")
    for user, password in passwords.items():
        subprocess.run([tool, "-b", str(path), user, password], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.chmod(path, 0o600)


def write_broker_config(out: Path, devices: list[str], *, cloud_user: str = "cloud",
                        prefix: str = DEFAULT_PREFIX, port: int = 1883,
                        listen: str = "0.0.0.0", persistence_dir: Path | None = None,
                        use_tool: bool = True) -> BrokerFiles:
    """Write mosquitto.conf, passwd and acl into `out`; returns the fresh passwords."""
    for d in devices:
        validate_device_id(d)
    validate_device_id(cloud_user)
    if cloud_user in devices:
        raise ValueError(f"device id {cloud_user!r} clashes with the cloud user name")
    out.mkdir(parents=True, exist_ok=True)
    passwords = {u: secrets.token_urlsafe(18) for u in [cloud_user, *dict.fromkeys(devices)]}
    passwd, acl, conf = out / "passwd", out / "acl", out / "mosquitto.conf"
    _password_file(passwd, passwords, use_tool)
    _write_private(acl, acl_text(cloud_user, prefix))
    lines = [
        "# LiteFleet broker: no anonymous clients, one user per device, per-device ACL.",
        f"listener {port} {listen}",
        "allow_anonymous false",
        f"password_file {passwd.resolve()}",
        f"acl_file {acl.resolve()}",
        "# Add TLS for links that leave the machine: certfile, keyfile, cafile on the listener.",
    ]
    if persistence_dir is not None:
        lines += ["persistence true", f"persistence_location {persistence_dir.resolve()}/"]
    conf.write_text("\n".join(lines) + "\n")
    return BrokerFiles(conf, passwd, acl, passwords)
