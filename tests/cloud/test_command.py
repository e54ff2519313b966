"""`litefleet command`: signed, device-bound, expiring commands on `devices/{id}/cmd`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agent.link.commands import verify_command
from cloud.cli import main
from shared.errors import BadSignature, Expired, WrongDevice
from shared.keys import Keyring, SigningKey
from shared.topics import Channel, topic
from tests.cloud.conftest import CloudEnv, write_config


def test_commands_arrive_signed_and_bound_to_each_device(
    cloud_env: CloudEnv, mosquitto, mqtt_subscriber, capsys
) -> None:
    config = write_config(cloud_env.root, mqtt_port=mosquitto.port)
    sub = mqtt_subscriber(mosquitto, [topic(d, Channel.CMD) for d in ("cam-1", "cam-2")])
    assert (
        main(["command", "cam-1", "cam-2", "rollback", "--expires", "2m", "--config", str(config)])
        == 0
    )
    assert "sent rollback to cam-2" in capsys.readouterr().out
    assert sub.wait_for(lambda msgs: len(msgs) == 2)
    keyring = Keyring((cloud_env.key.public,))
    now = datetime.now(UTC)
    by_device = {m.topic.split("/")[-2]: m.payload for m in sub.snapshot()}
    nonces = set()
    for device, payload in by_device.items():
        command = verify_command(payload, keyring, device, now)
        assert command.command == "rollback"
        nonces.add(command.nonce)
        assert not next(iter(sub.snapshot())).retain
    assert len(nonces) == 2
    # bound to its device, expiring, and worthless under another key
    with pytest.raises(WrongDevice):
        verify_command(by_device["cam-1"], keyring, "cam-2", now)
    with pytest.raises(Expired):
        verify_command(by_device["cam-1"], keyring, "cam-1", now + timedelta(minutes=3))
    with pytest.raises(BadSignature):
        verify_command(by_device["cam-1"], Keyring((SigningKey.generate().public,)), "cam-1", now)


def test_refusals(cloud_env: CloudEnv, capsys) -> None:
    cfg = ["--config", str(cloud_env.config)]
    assert main(["command", "bad id!", "report-now", *cfg]) == 2
    assert main(["command", "cam-1", "report-now", "--expires", "2d", *cfg]) == 2
    assert "between 1 s and 1 day" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["command", "cam-1", "reboot", *cfg])
