"""A device that dies shows offline: its last will is applied whatever its `ts`.

The will is registered when the connection opens, so its `ts` is older than the states the
device sends on that connection; the cloud used to drop it as stale, and a device killed with
SIGKILL stayed "online" until the silence check.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from cloud.ingest import IngestStats, write_batch
from cloud.store import open_store
from shared.keys import SigningKey
from shared.messages import DeviceState, ModelIdentity
from tests.cloud.conftest import CloudEnv, write_config
from tests.cloud.generated_broker import generated_broker
from tests.cloud.test_ingest import _serve, wait_for

MODEL = ModelIdentity("digits", 1, "ab" * 32)


def online(db_path: Path, device_id: str) -> int | None:
    if not db_path.exists():
        return None
    db = open_store(db_path)
    try:
        row = db.execute("SELECT online FROM devices WHERE device_id = ?", (device_id,)).fetchone()
    finally:
        db.close()
    return None if row is None else int(row[0])


def listed_online(config: Path, device_id: str) -> bool:
    """What `litefleet devices --json` says."""
    out = subprocess.run(
        [sys.executable, "-m", "cloud.cli", "devices", "--json", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return bool(next(d for d in json.loads(out.stdout) if d["device_id"] == device_id)["online"])


def apply(db_path: Path, *states: DeviceState) -> None:
    db = open_store(db_path)
    try:
        with db.begin() as conn:
            write_batch(conn, [(s, b"") for s in states], time.time(), IngestStats())
    finally:
        db.close()


def test_state_messages_apply_in_arrival_order_and_a_will_always_counts(tmp_path: Path) -> None:
    db = tmp_path / "cloud.db"
    up = DeviceState("cam-01", True, 100.0, profile="rpi5", model=MODEL)
    will = DeviceState("cam-01", False, 90.0)  # registered at connect, before `up` was sent
    apply(db, up, will)  # one batch: the will came last, it stands
    assert online(db, "cam-01") == 0
    apply(db, DeviceState("cam-01", True, 95.0))  # a stale copy of an older state: ignored
    assert online(db, "cam-01") == 0
    apply(
        db,
        DeviceState("cam-01", True, 120.0),
        DeviceState("cam-01", False, 110.0),
        DeviceState("cam-01", True, 130.0),
    )  # a reconnect: back online after the will
    assert online(db, "cam-01") == 1
    apply(db, DeviceState("cam-01", False, 125.0))  # the next connection's will, later
    assert online(db, "cam-01") == 0
    conn = open_store(db)
    try:
        row = conn.execute("SELECT profile, model_version, state_ts FROM devices").fetchone()
    finally:
        conn.close()
    # what the will says beyond `online` is older than what is stored: kept as it was
    assert tuple(row) == ("", None, 130.0)


def test_a_killed_agent_shows_offline_within_its_keepalive(
    cloud_env: CloudEnv, agent_process
) -> None:  # type: ignore[no-untyped-def]
    """Real mosquitto from broker-config, real serve, a real agent killed with SIGKILL twice:
    offline each time (the broker publishes the will after keepalive x 1.5 = 3 s), online again
    in between. The silence check is set to an hour, so only the will can do it."""
    with generated_broker(["cam-01"]) as broker:
        config = write_config(
            cloud_env.root,
            mqtt_port=broker.cloud_port,
            extra="[ingest]\noffline_after_s = 3600\nbatch_wait_s = 0.05\n" + broker.cloud_toml(),
        )
        serve = _serve(config, cloud_env.root / "serve.log")
        agent = agent_process(
            broker,
            [SigningKey.generate().public.hex],
            start=False,
            device_id="cam-01",
            telemetry_s=1.0,
        )
        text = agent.config_path.read_text()
        agent.config_path.write_text(
            text.replace("[mqtt]\n", "[mqtt]\nkeepalive_s = 2\n" + broker.agent_mqtt("cam-01"), 1)
        )
        try:
            for round_ in range(2):
                agent.start()
                wait_for(
                    lambda: online(cloud_env.db, "cam-01") == 1,
                    60,
                    f"cam-01 online (start {round_ + 1})",
                )
                assert listed_online(config, "cam-01")
                time.sleep(1.5)  # a few states and records after the connect
                agent.kill()  # SIGKILL: no clean offline state, only the broker's will
                wait_for(
                    lambda: online(cloud_env.db, "cam-01") == 0,
                    60,
                    f"cam-01 offline after SIGKILL {round_ + 1}: "
                    f"{(cloud_env.root / 'serve.log').read_text()[-2000:]}",
                )
                assert not listed_online(config, "cam-01")
        finally:
            serve.terminate()
            serve.wait(30)
