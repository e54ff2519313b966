"""A locked-down Mosquitto configuration for a fleet: two listeners, per-device and per-role ACLs.

    devices listener   (`--port`, default 1883 on 0.0.0.0) `use_username_as_clientid`: a
                       device's client id is its user name, which is its device id, so no
                       device can take over another's session (or the cloud's). Users in
                       `passwd`; each may only (`acl`, mosquitto `pattern` lines with `%u`)

                           write  {prefix}/devices/<its id>/state, telemetry, events, update,
                                  capture
                           read   {prefix}/devices/<its id>/desired, cmd

    cloud listener     (`--cloud-port`, default 1884 on 127.0.0.1) one user per cloud role
                       (`cloud-passwd`, `cloud-acl`), unknown to the devices listener and the
                       only users this one knows; client ids are the cloud's own, so the
                       ingester keeps one persistent session and any number of one-shot
                       commands run beside `serve`:

                           litefleet-ingest      read   {prefix}/devices/+/state|telemetry|events|update
                           litefleet-controller  write  {prefix}/devices/+/desired|cmd,
                                                 read   {prefix}/devices/+/capture
                           litefleet-operator    write  {prefix}/devices/+/desired|cmd

Persistence is on (sessions and queued messages survive a broker restart). Run as root, the
password, ACL and persistence files belong to the user mosquitto drops to (`user` in the
config: `mosquitto` when it exists); otherwise they belong to the caller, whose name goes into
`user`. Passwords are written in Mosquitto's `$7$` format (PBKDF2-SHA512, 101 iterations,
12-byte salt). `add_devices` gives new devices passwords and leaves everyone else's alone.
"""

from __future__ import annotations

import base64
import grp
import hashlib
import os
import pwd
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from cloud.config import CloudRole
from localio.atomic import write_atomic
from shared.topics import DEFAULT_PREFIX, Channel, FleetChannel, validate_device_id

__all__ = [
    "CLOUD_USERS",
    "RESERVED_PREFIX",
    "BrokerFiles",
    "BrokerOwner",
    "BrokerSetupError",
    "DeviceTls",
    "acl_text",
    "add_devices",
    "cloud_acl_text",
    "hash_password",
    "write_broker_config",
]

_ITERATIONS = 101
_DEVICE_WRITES = (Channel.STATE, Channel.TELEMETRY, Channel.EVENTS, Channel.UPDATE, Channel.CAPTURE)
_DEVICE_READS = (Channel.DESIRED, Channel.CMD)
_ROLE_ACCESS: dict[CloudRole, tuple[tuple[str, Channel], ...]] = {
    CloudRole.INGEST: tuple(("read", c) for c in _DEVICE_WRITES if c is not Channel.CAPTURE),
    # the controller also answers capture requests with signed upload grants (on cmd)
    CloudRole.CONTROLLER: (
        ("write", Channel.DESIRED),
        ("read", Channel.CAPTURE),
        ("write", Channel.CMD),
    ),
    # the operator also follows rollouts (`deploy --wait` reads the devices' update reports)
    CloudRole.OPERATOR: (
        ("write", Channel.DESIRED),
        ("write", Channel.CMD),
        ("read", Channel.UPDATE),
    ),
}
# Fleet-wide topics (the root chain): the operator publishes them (`litefleet trust publish`).
_ROLE_FLEET_ACCESS: dict[CloudRole, tuple[str, ...]] = {CloudRole.OPERATOR: ("readwrite",)}
CLOUD_USERS = {role: role.default_user for role in CloudRole}
RESERVED_PREFIX = "litefleet-"  # cloud users and client ids; no device may be called so
AUTOSAVE_INTERVAL_S = 60  # persistence written at least this often (and at a clean stop)
MAX_QUEUED_MESSAGES = 100_000  # per offline persistent session (the ingester's, mainly)


class BrokerSetupError(ValueError):
    """The broker files cannot be written as asked; the message says why in one sentence."""


@dataclass(frozen=True)
class BrokerOwner:
    """Who mosquitto runs as, and so who must own its password, ACL and persistence files."""

    user: str
    uid: int
    gid: int

    @classmethod
    def choose(cls, name: str | None = None) -> BrokerOwner:
        """`name`, else `mosquitto` when run as root and it exists, else the caller."""
        root = os.geteuid() == 0
        if name is None:
            name = "mosquitto" if root and _user_exists("mosquitto") else _user_name(os.geteuid())
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise BrokerSetupError(f"there is no user {name!r} on this machine") from None
        if not root and entry.pw_uid != os.geteuid():
            raise BrokerSetupError(
                f"only root can hand the broker's files to {name!r}; run "
                "as root or leave out --broker-user"
            )
        return cls(name, entry.pw_uid, entry.pw_gid)

    def can_enter(self, folder: Path) -> bool:
        """Whether this user may search `folder` (and so reach what is inside)."""
        return self._may(folder, stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH)

    def can_read(self, path: Path) -> bool:
        return self._may(path, stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH)

    def _may(self, path: Path, user_bit: int, group_bit: int, other_bit: int) -> bool:
        st = path.stat()
        if self.uid == 0:
            return True
        if st.st_uid == self.uid:
            return bool(st.st_mode & user_bit)
        groups = {self.gid, *(g.gr_gid for g in grp.getgrall() if self.user in g.gr_mem)}
        if st.st_gid in groups:
            return bool(st.st_mode & group_bit)
        return bool(st.st_mode & other_bit)


@dataclass(frozen=True)
class DeviceTls:
    """TLS on the devices listener; with `require_certificate`, mutual TLS in which the
    certificate's CN is the device's user name (so its device id and its client id) and no
    device password is issued."""

    certfile: Path
    keyfile: Path
    cafile: Path | None = None
    require_certificate: bool = False

    def check(self, owner: BrokerOwner) -> None:
        """Mosquitto reads these after it dropped to `owner`: they must be readable by it."""
        if self.require_certificate and self.cafile is None:
            raise BrokerSetupError("client certificates need the CA that signs them (--tls-ca)")
        for path in (self.certfile, self.keyfile, self.cafile):
            if path is None:
                continue
            if not path.is_file():
                raise BrokerSetupError(f"{path} is not a file")
            if not (_reachable(path.resolve().parent, owner) and owner.can_read(path)):
                raise BrokerSetupError(
                    f"user {owner.user}, which the broker runs as, cannot "
                    f"read {path}; give it (or its group) read access"
                )

    def lines(self) -> list[str]:
        lines = [f"certfile {self.certfile.resolve()}", f"keyfile {self.keyfile.resolve()}"]
        if self.cafile is not None:
            lines.append(f"cafile {self.cafile.resolve()}")
        if self.require_certificate:
            lines += ["require_certificate true", "use_identity_as_username true"]
        return lines


@dataclass(frozen=True)
class BrokerFiles:
    config: Path
    password_file: Path  # devices
    acl_file: Path
    cloud_password_file: Path
    cloud_acl_file: Path
    persistence_dir: Path
    owner: str  # the user mosquitto runs as
    passwords: dict[str, str]  # user -> clear-text password (print or store it, then forget it)

    @property
    def pid_file(self) -> Path:
        """Where mosquitto started with -d writes its pid (in the folder its user owns: it
        writes it after dropping root)."""
        return pid_file(self.persistence_dir)


def pid_file(persistence_dir: Path) -> Path:
    return persistence_dir / "mosquitto.pid"


def hash_password(password: str, salt: bytes | None = None) -> str:
    """Mosquitto's `$7$` password hash: PBKDF2-SHA512 over the password with a 12-byte salt."""
    salt = salt if salt is not None else os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, _ITERATIONS)
    b64 = base64.b64encode
    return f"$7${_ITERATIONS}${b64(salt).decode()}${b64(digest).decode()}"


def acl_text(prefix: str = DEFAULT_PREFIX) -> str:
    lines = [
        "# LiteFleet devices listener: each device (user name = device id = client id, %u)",
        "# may touch only its own topics.",
    ]
    lines += [f"pattern write {prefix}/devices/%u/{c.value}" for c in _DEVICE_WRITES]
    lines += [f"pattern read {prefix}/devices/%u/{c.value}" for c in _DEVICE_READS]
    lines += [f"pattern read {prefix}/{c.value}" for c in FleetChannel]  # the root chain
    return "\n".join(lines) + "\n"


def cloud_acl_text(prefix: str = DEFAULT_PREFIX) -> str:
    lines = ["# LiteFleet cloud listener: one user per cloud role, each with what it needs."]
    for role, access in _ROLE_ACCESS.items():
        lines += ["", f"user {CLOUD_USERS[role]}"]
        lines += [f"topic {mode} {prefix}/devices/+/{channel.value}" for mode, channel in access]
        lines += [
            f"topic {mode} {prefix}/{c.value}"
            for mode in _ROLE_FLEET_ACCESS.get(role, ())
            for c in FleetChannel
        ]
    return "\n".join(lines) + "\n"


def write_broker_config(
    out: Path,
    devices: list[str],
    *,
    prefix: str = DEFAULT_PREFIX,
    port: int = 1883,
    listen: str = "0.0.0.0",
    cloud_port: int = 1884,
    cloud_listen: str = "127.0.0.1",
    persistence_dir: Path | None = None,
    broker_user: str | None = None,
    rotate: bool = False,
    tls: DeviceTls | None = None,
) -> BrokerFiles:
    """Write mosquitto.conf, the password files and ACLs into `out`; returns fresh passwords
    for every device (unless they log in with certificates) and cloud role. Refuses to
    overwrite an existing setup unless `rotate`."""
    _check_devices(devices)
    if port == cloud_port:
        raise BrokerSetupError(f"the devices and the cloud listener both want port {port}")
    owner = BrokerOwner.choose(broker_user)
    if tls is not None:
        tls.check(owner)
    out = out.resolve()
    passwd = out / "passwd"
    if passwd.exists() and not rotate:
        raise BrokerSetupError(
            f"{passwd} exists: add devices with --add, or issue new "
            "passwords for everyone with --rotate"
        )
    data = (persistence_dir or out / "data").resolve()
    for folder in (out, data):
        _make_dirs(folder)
    _chown(data, owner, 0o700)
    blocked = [f for f in (out, data) if not _reachable(f, owner)]
    if blocked:
        raise BrokerSetupError(
            f"user {owner.user} cannot reach {blocked[0]} (a folder on the "
            "way is closed to it); choose another --out or open the path"
        )
    devices = list(dict.fromkeys(devices))
    cloud = {CLOUD_USERS[r]: secrets.token_urlsafe(18) for r in CloudRole}
    by_certificate = tls is not None and tls.require_certificate
    mine = {} if by_certificate else {d: secrets.token_urlsafe(18) for d in devices}
    files = BrokerFiles(
        out / "mosquitto.conf",
        passwd,
        out / "acl",
        out / "cloud-passwd",
        out / "cloud-acl",
        data,
        owner.user,
        {**cloud, **mine},
    )
    _write_owned(files.password_file, _passwd_text(mine), owner)
    _write_owned(files.cloud_password_file, _passwd_text(cloud), owner)
    _write_owned(files.acl_file, acl_text(prefix), owner)
    _write_owned(files.cloud_acl_file, cloud_acl_text(prefix), owner)
    write_atomic(
        files.config,
        _config_text(files, port, listen, cloud_port, cloud_listen, tls).encode(),
        mode=0o644,
    )
    return files


def add_devices(out: Path, devices: list[str]) -> dict[str, str]:
    """New devices into an existing setup's password file; nobody else's password changes.
    Returns the new devices' passwords. Mosquitto reads the file again on SIGHUP."""
    _check_devices(devices)
    passwd = out.resolve() / "passwd"
    if _admits_by_certificate(out.resolve() / "mosquitto.conf"):
        raise BrokerSetupError(
            f"{out.resolve() / 'mosquitto.conf'} admits devices by certificate "
            "(require_certificate): a new device needs no password, only a certificate whose "
            "common name is its device id, signed by the CA in that config; nothing was changed"
        )
    try:
        text = passwd.read_text()
        st = passwd.stat()
    except OSError as e:
        raise BrokerSetupError(
            f"cannot read {passwd} ({e.strerror}): run broker-config without --add first"
        ) from e
    known = {line.split(":", 1)[0] for line in text.splitlines() if ":" in line}
    again = [d for d in devices if d in known]
    if again:
        raise BrokerSetupError(f"{', '.join(again)} already in {passwd}; nothing was changed")
    fresh = {d: secrets.token_urlsafe(18) for d in dict.fromkeys(devices)}
    if text and not text.endswith("\n"):
        text += "\n"
    owner = BrokerOwner(_user_name(st.st_uid), st.st_uid, st.st_gid)
    _write_owned(passwd, text + _passwd_text(fresh), owner)
    return fresh


def _config_lines(config: Path) -> list[str]:
    try:
        return [line.strip() for line in config.read_text().splitlines()]
    except OSError:
        return []  # no config: the password file's own error says what to do


def _admits_by_certificate(config: Path) -> bool:
    return "require_certificate true" in _config_lines(config)


def configured_pid_file(out: Path) -> Path | None:
    """The pid file named in the setup's mosquitto.conf (None before it named one)."""
    for line in _config_lines(out.resolve() / "mosquitto.conf"):
        if line.startswith("pid_file "):
            return Path(line.split(" ", 1)[1])
    return None


def _check_devices(devices: list[str]) -> None:
    for d in devices:
        validate_device_id(d)
        if d.startswith(RESERVED_PREFIX):
            raise BrokerSetupError(
                f"device id {d!r}: ids starting with {RESERVED_PREFIX!r} are "
                "kept for the cloud's users and client ids"
            )


def _passwd_text(passwords: dict[str, str]) -> str:
    return "".join(f"{user}:{hash_password(p)}\n" for user, p in passwords.items())


def _config_text(
    files: BrokerFiles,
    port: int,
    listen: str,
    cloud_port: int,
    cloud_listen: str,
    tls: DeviceTls | None,
) -> str:
    if tls is None:
        device_tls = [
            "# For links that leave the machine: broker-config --tls-cert/--tls-key",
            "# (with --tls-ca --require-certificate for mutual TLS).",
        ]
    else:
        device_tls = tls.lines()
    return (
        "\n".join(
            [
                "# LiteFleet broker, written by `litefleet broker-config`. Start: mosquitto -c <this file>",
                "per_listener_settings true",
                f"user {files.owner}",
                "persistence true",
                f"persistence_location {files.persistence_dir}/",
                "# with -d (no systemd): kill -HUP $(cat <pid_file>) reads the password files again",
                f"pid_file {files.pid_file}",
                f"autosave_interval {AUTOSAVE_INTERVAL_S}",
                f"max_queued_messages {MAX_QUEUED_MESSAGES}",
                "",
                "# Devices: user name = device id = client id; each on its own topics only.",
                f"listener {port} {listen}",
                "use_username_as_clientid true",
                "allow_anonymous false",
                f"password_file {files.password_file}",
                f"acl_file {files.acl_file}",
                *device_tls,
                "",
                "# The cloud: one user per role (ingest, controller, operator); devices cannot log in.",
                f"listener {cloud_port} {cloud_listen}",
                "allow_anonymous false",
                f"password_file {files.cloud_password_file}",
                f"acl_file {files.cloud_acl_file}",
            ]
        )
        + "\n"
    )


def _write_owned(path: Path, text: str, owner: BrokerOwner) -> None:
    """Atomically, mode 0600 from the first byte, owned by the broker's user."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode())
            f.flush()
            os.fchmod(f.fileno(), 0o600)
            if os.geteuid() == 0:
                os.fchown(f.fileno(), owner.uid, owner.gid)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _chown(path: Path, owner: BrokerOwner, mode: int) -> None:
    st = path.stat()
    if (st.st_uid, st.st_gid) != (owner.uid, owner.gid) and os.geteuid() == 0:
        os.chown(path, owner.uid, owner.gid)
    os.chmod(path, mode)


def _make_dirs(folder: Path) -> None:
    """Create the missing folders on the way, mode 0755 whatever the umask (the broker's
    user must pass through them; what is secret inside is 0600)."""
    for path in (*reversed(folder.parents), folder):
        if not path.exists():
            path.mkdir()
            path.chmod(0o755)


def _reachable(folder: Path, owner: BrokerOwner) -> bool:
    return all(owner.can_enter(p) for p in (*reversed(folder.parents), folder))


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
