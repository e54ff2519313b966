"""A broker restart under the `broker-config` output loses no record.

Real mosquitto started from the generated config (`mosquitto -c DIR/mosquitto.conf`, as root
it drops to the `mosquitto` user), a real agent sending telemetry, a real `litefleet serve`
ingesting through its per-role users. The broker is stopped and started mid-run: the agent
reconnects within a second, the cloud only after its own back-off, so without persistence the
records sent in between had no session to go to. With it, every seq the agent produced is in
the cloud store.
"""

from __future__ import annotations

import time
from pathlib import Path

from cloud.store import open_store
from shared.keys import SigningKey
from tests.cloud.conftest import CloudEnv, write_config
from tests.cloud.generated_broker import generated_broker
from tests.cloud.test_ingest import _serve, wait_for


def stored_seqs(db_path: Path, device_id: str) -> list[int]:
    """The device's seqs in the store: telemetry, events and update reports share them."""
    if not db_path.exists():
        return []
    db = open_store(db_path)
    try:
        return sorted(
            int(r[0])
            for table in ("telemetry", "events", "updates")
            for r in db.execute(f"SELECT seq FROM {table} WHERE device_id = ?", (device_id,))
        )
    finally:
        db.close()


def test_a_broker_restart_loses_no_record(cloud_env: CloudEnv, agent_process) -> None:  # type: ignore[no-untyped-def]
    with generated_broker(["cam-01"]) as broker:
        config = write_config(
            cloud_env.root,
            mqtt_port=broker.cloud_port,
            extra="[ingest]\nbatch_wait_s = 0.05\n" + broker.cloud_toml(),
        )
        log = cloud_env.root / "serve.log"
        serve = _serve(config, log)
        # the ingester's persistent session exists before the device's first record: a broker
        # drops what it receives for a topic nobody has subscribed to yet
        wait_for(
            lambda: log.exists() and "-ingest subscribed to" in log.read_text(),
            30,
            "serve's ingester subscribed",
        )
        agent = agent_process(
            broker,
            [SigningKey.generate().public.hex],
            start=False,
            device_id="cam-01",
            telemetry_s=0.2,
        )
        text = agent.config_path.read_text()
        agent.config_path.write_text(
            text.replace("[mqtt]\n", "[mqtt]\n" + broker.agent_mqtt("cam-01"), 1)
        )
        agent.start()
        try:
            wait_for(
                lambda: len(stored_seqs(cloud_env.db, "cam-01")) >= 5,
                60,
                "the first records stored",
            )
            broker.stop()  # SIGTERM: mosquitto saves its sessions and queues, and exits
            time.sleep(2.0)  # the agent keeps measuring; its records wait in its outbox
            broker.start()
            before = agent.last_seq()
            # records made after the restart, while the cloud may still be reconnecting
            wait_for(lambda: agent.last_seq() >= before + 15, 60, "records after the restart")
            produced = agent.last_seq()
            wait_for(
                lambda: set(range(1, produced + 1)) <= set(stored_seqs(cloud_env.db, "cam-01")),
                60,
                f"every seq up to {produced} stored (have "
                f"{stored_seqs(cloud_env.db, 'cam-01')[-40:]}); serve log: "
                f"{log.read_text()[-1500:]}",
            )
        finally:
            agent.terminate()
            serve.terminate()
            serve.wait(30)
        seqs = stored_seqs(cloud_env.db, "cam-01")
        assert seqs == list(range(1, len(seqs) + 1))  # no gaps, each once
        assert len(seqs) >= produced
        db = open_store(cloud_env.db)
        try:  # most of them are telemetry records
            telemetry = db.execute("SELECT COUNT(*) FROM telemetry").fetchone()[0]
        finally:
            db.close()
        assert telemetry >= produced // 2
