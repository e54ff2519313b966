"""A real agent says in its retained state which root it trusts, and says it again at once when a
rotation reaches it.

Real parts: mosquitto, `litefleet-agent run` trusting the cloud's release key (an implicit root
version 1), and the commands an operator types: `litefleet keys rotate` writes root version 2,
`litefleet trust publish` sends the chain. The retained `devices/{id}/state` is read from the
broker by a subscriber that connects afterwards (what the ingester gets after a restart). The
agent's heartbeat is an hour, so only the change itself can bring the new state. What was read
from the broker then goes through ingest into the cloud's store, and `litefleet trust status`
counts it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from cloud.cli import main as cloud_main
from cloud.ingest import IngestStats, write_batch
from cloud.store import open_store
from shared.messages import decode_message
from tests.cloud.conftest import write_config
from tests.cloud.test_trust_cli import new_key

from .conftest import DEVICE

STATE = f"litefleet/v1/devices/{DEVICE}/state"


def retained_state(mosquitto: Any, mqtt_subscriber: Any) -> tuple[bytes, dict[str, Any]]:
    """The state the broker retains now, read by a subscriber that connects afterwards."""
    sub = mqtt_subscriber(mosquitto, [STATE])
    assert sub.wait_for(lambda ms: any(m.retain for m in ms), 10), "no retained state"
    payload = next(m.payload for m in sub.snapshot() if m.retain)
    sub.close()
    return payload, json.loads(payload)


def cloud(capsys: Any, *argv: str) -> str:
    code = cloud_main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, (argv, out, err)
    return out


def test_the_retained_state_reports_the_root_and_a_new_one_at_once(  # type: ignore[no-untyped-def]
    tmp_path: Path, mosquitto, mqtt_subscriber, agent_process, capsys
) -> None:
    root = tmp_path / "cloud"
    key, signer, _ = new_key(root / "keys")
    cfg = ["--config", str(write_config(root, mqtt_port=mosquitto.port))]
    live = mqtt_subscriber(mosquitto, [STATE])
    agent = agent_process(
        mosquitto, [key.public.hex], device_id=DEVICE, telemetry_s=3600, heartbeat_s=3600
    )

    def states() -> list[dict[str, Any]]:
        return [json.loads(p) for p in live.payloads()]

    assert live.wait_for(lambda ms: any(s["online"] for s in states()), 60), agent.log()[-3000:]
    payload, state = retained_state(mosquitto, mqtt_subscriber)
    assert (state["online"], state["root_version"]) == (True, 1)

    def ingest(payload: bytes) -> dict[str, Any]:
        """The state through ingest into the cloud's store; `trust status --json`."""
        store = open_store(root / "cloud.db")
        try:
            with store.begin() as conn:
                message = decode_message(payload, now=time.time())
                write_batch(conn, [(message, payload)], time.time(), IngestStats())
        finally:
            store.close()
        return dict(json.loads(cloud(capsys, "trust", "status", "--json", *cfg)))

    _, _, new_pub = new_key(root / "k2")
    out = cloud(capsys, "keys", "rotate", "--add", str(new_pub), "--sign", str(signer), *cfg)
    assert "root v2" in out
    # stored, not yet published: the device still reports 1, behind the newest root
    seen = ingest(payload)
    assert (seen["root_version"], seen["behind"], seen["versions"]) == (
        2,
        1,
        [{"root_version": 1, "devices": 1}],
    )
    assert [d["device_id"] for d in seen["behind_devices"]] == [DEVICE]

    cloud(capsys, "trust", "publish", *cfg)
    # a fresh state, published by the walk itself: the heartbeat is an hour away
    assert live.wait_for(lambda ms: any(s["root_version"] == 2 for s in states()), 30), (
        states(),
        agent.log()[-3000:],
    )
    payload, state = retained_state(mosquitto, mqtt_subscriber)
    assert (state["online"], state["root_version"]) == (True, 2)
    assert (
        json.loads((agent.state_dir / "trust.json").read_text())["root"]["signed"]["version"] == 2
    )

    seen = ingest(payload)
    assert (seen["root_version"], seen["current"], seen["behind"]) == (2, 1, 0)
    assert seen["behind_devices"] == []
    assert "every device (1) reports root v2" in cloud(capsys, "trust", "status", *cfg)
