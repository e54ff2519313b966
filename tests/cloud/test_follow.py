"""`litefleet telemetry --follow` beside a running `litefleet serve`, and how both stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

from shared.topics import Channel, topic
from tests.cloud.conftest import CloudEnv, write_config
from tests.cloud.test_ingest import (
    _serve,
    device_client,
    publish_until_stored,
    record,
    rows,
    wait_for,
)


def test_follow_streams_new_records_and_both_commands_stop_cleanly(
    cloud_env: CloudEnv, mosquitto
) -> None:
    config = write_config(cloud_env.root, mqtt_port=mosquitto.port)
    log = cloud_env.root / "serve.log"
    serve = _serve(config, log)
    client = device_client(mosquitto.port, "cam-07")
    follower: subprocess.Popen[str] | None = None
    try:
        wait_for(client.is_connected, 10, "a connection")

        publish_until_stored(client, cloud_env.db, "cam-07")
        # as a pipe into another program sees it: block-buffered unless the command flushes
        env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
        follower = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cloud.cli",
                "telemetry",
                "--follow",
                "--json",
                "--config",
                str(config),
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        lines: list[dict[str, object]] = []
        out = follower.stdout
        assert out is not None
        reader = threading.Thread(
            target=lambda: lines.extend(json.loads(line) for line in out), daemon=True
        )
        reader.start()
        wait_for(lambda: len(lines) >= 1, 20, "the stored record, printed at once")
        for seq in range(2, 6):  # recorded after the follower started
            client.publish(topic("cam-07", Channel.TELEMETRY), record("cam-07", seq), qos=1)
        wait_for(lambda: len(lines) >= 5, 30, "the new records, each printed as it arrives")
        time.sleep(1.5)  # another poll or two: nothing is printed twice
        assert [line["seq"] for line in lines] == [1, 2, 3, 4, 5]
        assert {line["device_id"] for line in lines} == {"cam-07"}

        follower.send_signal(signal.SIGINT)  # Ctrl-C ends a follow, with no traceback
        assert follower.wait(10) == 0
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(30) == 0
        assert "stopping" in log.read_text()
        assert rows(cloud_env.db, "telemetry") == 5  # what was acknowledged was stored
    finally:
        client.disconnect()
        client.loop_stop()
        for process in (follower, serve):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(10)
