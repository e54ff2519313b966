"""Signed operator commands: verification (pure) and the persisted replay guard."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.link.commands import CommandGate, Replayed, verify_command
from agent.store import open_store
from shared.documents import format_time
from shared.envelope import sign_envelope
from shared.errors import BadSignature, Expired, MalformedDocument, PayloadTooLarge, WrongDevice
from shared.keys import Keyring, SigningKey
from shared.messages import Command, encode_message

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
KEY = SigningKey.generate()
RING = Keyring((KEY.public,))


def command(
    *,
    device: str = "cam-01",
    name: str = "report-now",
    nonce: str = "n0nce-0001",
    issued: datetime = NOW - timedelta(minutes=1),
    expires: datetime = NOW + timedelta(minutes=5),
    key: SigningKey = KEY,
) -> bytes:
    cmd = Command(device, name, format_time(issued), format_time(expires), nonce)
    return json.dumps(sign_envelope(json.loads(encode_message(cmd)), [key])).encode()


def test_a_valid_command_verifies() -> None:
    cmd = verify_command(command(name="rollback"), RING, "cam-01", NOW)
    assert (cmd.command, cmd.device_id, cmd.nonce) == ("rollback", "cam-01", "n0nce-0001")


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"[1, 2", MalformedDocument),
        (b"x" * 20_000, PayloadTooLarge),
        (command(key=SigningKey.generate()), BadSignature),
        (command(device="cam-02"), WrongDevice),
        (command(name="self-destruct"), MalformedDocument),
        (command(nonce="short"), MalformedDocument),
        (command(expires=NOW - timedelta(seconds=1)), Expired),
        (command(issued=NOW + timedelta(hours=1), expires=NOW + timedelta(hours=2)), Expired),
        (command(expires=NOW + timedelta(days=3)), MalformedDocument),
        (
            json.dumps(
                sign_envelope(
                    {"schema": "litefleet.state/1", "device_id": "cam-01", "online": True, "ts": 1},
                    [KEY],
                )
            ).encode(),
            MalformedDocument,
        ),
    ],
)
def test_bad_commands_are_refused_with_a_typed_reason(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        verify_command(data, RING, "cam-01", NOW)


def test_a_nonce_is_accepted_once_even_across_restarts(tmp_path: Path) -> None:
    gate = CommandGate(open_store(tmp_path), RING, "cam-01")
    gate.admit(command(nonce="nonce-aaaa"), NOW)
    with pytest.raises(Replayed):
        gate.admit(command(nonce="nonce-aaaa"), NOW)
    gate.close()
    reopened = CommandGate(open_store(tmp_path), RING, "cam-01")
    with pytest.raises(Replayed):
        reopened.admit(command(nonce="nonce-aaaa"), NOW)
    reopened.admit(command(nonce="nonce-bbbb"), NOW)
    # an expired nonce is forgotten, and its command would be refused as expired anyway
    later = NOW + timedelta(minutes=10)
    reopened.admit(
        command(nonce="nonce-cccc", issued=later, expires=later + timedelta(minutes=5)), later
    )
    rows = reopened._conn.execute("SELECT nonce FROM command_nonces ORDER BY nonce").fetchall()
    assert [r[0] for r in rows] == ["nonce-cccc"]
