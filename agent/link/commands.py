"""Signed operator commands arriving on `devices/{id}/cmd`: verify, then refuse replays.

A command is a signed envelope whose `signed` part is a `litefleet.cmd/1` message:

    {"signed": {"schema": "litefleet.cmd/1", "device_id": "cam-01", "command": "report-now",
                "issued": "2026-01-31T12:00:00Z", "expires": "2026-01-31T12:05:00Z",
                "nonce": "<random, 8..64 chars>"},
     "signatures": [{"keyid": "...", "sig": "..."}]}

`verify_command` is pure (bytes in, `Command` or a typed `Rejected` out): size cap, JSON,
signatures from the trust keyring, schema, device binding, validity window. `CommandGate` adds
the one stateful check, a replay guard: each nonce is accepted once, and remembered in the
device store until its command expires (commands live at most `MAX_LIFETIME`).
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from agent.store import DeviceStore
from shared.documents import load_json, parse_time
from shared.envelope import verify_envelope
from shared.errors import Expired, MalformedDocument, Rejected, WrongDevice
from shared.keys import Keyring
from shared.messages import Command, decode_message
from shared.phases import Reason
from shared.vocabulary import CommandName

__all__ = ["COMMANDS", "CommandGate", "Replayed", "verify_command"]

log = logging.getLogger(__name__)

COMMANDS = tuple(CommandName)  # declared once, in shared.vocabulary
MAX_COMMAND_BYTES = 16 * 1024
MAX_LIFETIME = timedelta(days=1)
CLOCK_SKEW = timedelta(minutes=5)
MAX_REMEMBERED = 10_000  # nonces kept for replay checks; the oldest-expiring go first
_NONCE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


class Replayed(Rejected):
    reason = Reason.REPLAYED


def verify_command(
    data: bytes,
    keyring: Keyring,
    device_id: str,
    now: datetime,
    max_bytes: int = MAX_COMMAND_BYTES,
) -> Command:
    """The verified command in `data`, or the `Rejected` that stops it."""
    try:
        envelope = load_json(data, max_bytes)
        signed = verify_envelope(envelope, keyring)
        message = decode_message(json.dumps(signed).encode("utf-8"), max_bytes)
    except Rejected:
        raise
    except Exception as e:  # a parser let a non-project error out: still a bad command
        raise MalformedDocument(f"unreadable command ({type(e).__name__})") from e
    if not isinstance(message, Command):
        raise MalformedDocument(
            f"expected a command, got {type(message).__name__}", "signed.schema"
        )
    if message.device_id != device_id:
        raise WrongDevice(f"command is for device {message.device_id!r}, not {device_id!r}")
    if message.command not in COMMANDS:
        raise MalformedDocument(f"unknown command {message.command!r}", "signed.command")
    if not _NONCE.match(message.nonce):
        raise MalformedDocument("nonce must be 8-64 of [A-Za-z0-9_-]", "signed.nonce")
    issued = parse_time(message.issued, "signed.issued")
    expires = parse_time(message.expires, "signed.expires")
    if expires <= now:
        raise Expired(f"command expired at {message.expires}")
    if issued > now + CLOCK_SKEW:
        raise Expired(f"command issued in the future ({message.issued})")
    if expires - issued > MAX_LIFETIME:
        raise MalformedDocument(f"a command may live at most {MAX_LIFETIME}", "signed.expires")
    return message


class CommandGate:
    """`verify_command` plus a persisted replay guard on the nonce."""

    def __init__(
        self, store: DeviceStore, keyring: Keyring | Callable[[], Keyring], device_id: str
    ) -> None:
        # a fixed keyring, or the trust store's (whose release keys change when roots rotate)
        self.keyring = keyring
        self.device_id = device_id
        self._lock = threading.Lock()
        # a connection of its own; `command_nonces` is the store's table (`agent.store`)
        self._conn = store.connection(autocommit=True)

    def admit(self, data: bytes, now: datetime) -> Command:
        """Verify and record the command; raise `Rejected` (incl. `Replayed`) otherwise."""
        keyring = self.keyring() if callable(self.keyring) else self.keyring
        command = verify_command(data, keyring, self.device_id, now)
        expires = parse_time(command.expires).timestamp()
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute(
                    "DELETE FROM command_nonces WHERE expires <= ?", (now.timestamp(),)
                )
                try:
                    self._conn.execute(
                        "INSERT INTO command_nonces (nonce, expires) VALUES (?, ?)",
                        (command.nonce, expires),
                    )
                except sqlite3.IntegrityError as e:
                    raise Replayed(f"command nonce {command.nonce} was already used") from e
                self._conn.execute(
                    "DELETE FROM command_nonces WHERE nonce IN (SELECT nonce FROM command_nonces "
                    "ORDER BY expires DESC LIMIT -1 OFFSET ?)",
                    (MAX_REMEMBERED,),
                )
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        return command

    def close(self) -> None:
        with self._lock:
            self._conn.close()
