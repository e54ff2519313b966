"""Under the broker-config output, one-shot commands run side by side beside `litefleet serve`,
each as the operator user, and none disturbs another or serve's ingester."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from cloud.store import open_store
from shared.topics import Channel, topic
from tests.cloud.conftest import REPO, CloudEnv, write_config
from tests.cloud.generated_broker import generated_broker
from tests.cloud.test_broker_config import Client, wait_until
from tests.cloud.test_ingest import _serve, record


def stored(db_path: Path) -> set[int]:
    if not db_path.exists():
        return set()
    db = open_store(db_path)
    try:
        return {int(r[0]) for r in db.execute("SELECT seq FROM telemetry")}
    finally:
        db.close()


def test_one_shot_commands_side_by_side_beside_serve(cloud_env: CloudEnv) -> None:
    with generated_broker(["cam-01"]) as broker:
        config = write_config(
            cloud_env.root,
            mqtt_port=broker.cloud_port,
            extra="[ingest]\nbatch_wait_s = 0.05\n" + broker.cloud_toml(),
        )
        log = cloud_env.root / "serve.log"
        serve = _serve(config, log)
        device = Client(broker.port, "cam-01", broker.password("cam-01"), persistent=True)
        try:
            assert device.subscribe(f"litefleet/v1/devices/cam-01/{Channel.CMD.value}") == [1]

            def send(seq: int) -> None:
                device.publish(topic("cam-01", Channel.TELEMETRY), record("cam-01", seq))

            seq = 1
            while not wait_until(lambda: stored(cloud_env.db), 0.5):
                send(seq)  # serve may still be subscribing: until the first is stored
                seq += 1
            commands = [
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "cloud.cli",
                        "command",
                        "cam-01",
                        "report-now",
                        "--config",
                        str(config),
                    ],
                    cwd=REPO,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for _ in range(4)
            ]
            for n in range(5):  # records while the commands come and go
                send(seq + n)
                time.sleep(0.05)
            results = [c.communicate(timeout=60) for c in commands]
            assert [c.returncode for c in commands] == [0, 0, 0, 0], results
            assert wait_until(lambda: len(device.messages) == 4), device.messages
            during = set(range(seq, seq + 5))
            assert wait_until(lambda: during <= stored(cloud_env.db))
            assert device.disconnects == []
            assert "disconnected from the broker" not in log.read_text()
        finally:
            device.close()
            serve.terminate()
            serve.wait(30)
