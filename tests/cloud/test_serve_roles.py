"""`serve --role`: ingesters sharing the device topics (MQTT 5 shared subscriptions) on a
PostgreSQL store, a worker killed with -9 that loses nothing, two controllers of which one
is active, the standby taking over when the active one is killed, and one upload grant per
capture request however many controllers hear it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from cloud.store import open_store
from cloud.store.leases import holder
from shared.messages import CaptureRequest, encode_message
from shared.topics import Channel, topic
from tests.cloud.conftest import CloudEnv, write_config
from tests.cloud.test_ingest import device_client, record, wait_for

DEVICES = ("cam-a", "cam-b", "cam-c", "cam-d")


def serve(config: Path, log: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cloud.cli",
            "serve",
            "--no-http",
            "--log-level",
            "INFO",
            "--config",
            str(config),
            *args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
    )


def stop(*procs: subprocess.Popen[bytes]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def pg_config(cloud_env: CloudEnv, url: str, port: int, extra: str = "") -> Path:
    config = write_config(cloud_env.root, mqtt_port=port, extra=extra)
    config.write_text(config.read_text().replace('db = "cloud.db"', f'url = "{url}"'))
    done = subprocess.run(
        [sys.executable, "-m", "cloud.cli", "store", "migrate", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return config


def test_roles_other_than_all_are_refused_on_sqlite(cloud_env: CloudEnv) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cloud.cli",
            "serve",
            "--role",
            "ingest",
            "--config",
            str(cloud_env.config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "on SQLite only --role all runs" in done.stderr


def test_two_ingest_workers_share_the_devices_and_one_killed_loses_nothing(
    cloud_env: CloudEnv, mosquitto, postgres
) -> None:
    url = postgres.create_database()
    config = pg_config(
        cloud_env, url, mosquitto.port, "[ingest]\nbatch_max = 200\nbatch_wait_s = 0.05\n"
    )
    logs = [cloud_env.root / f"ingest-{n}.log" for n in (1, 2)]
    workers = [
        serve(config, logs[i], "--role", "ingest", "--worker", f"w{i + 1}") for i in range(2)
    ]
    clients = {d: device_client(mosquitto.port, d) for d in DEVICES}
    store = open_store(url)

    def stored() -> int:
        return int(store.execute("SELECT COUNT(*) FROM telemetry").scalar() or 0)

    try:
        for log in logs:  # both sessions subscribed before the first record
            wait_for(
                lambda log=log: log.exists() and "connected to" in log.read_text(),
                30,
                f"{log.name}: connected",
            )
        wait_for(lambda: all(c.is_connected() for c in clients.values()), 10, "devices")
        seq = 0
        for seq in range(1, 201):
            for d, c in clients.items():
                c.publish(f"litefleet/v1/devices/{d}/telemetry", record(d, seq), qos=1)
        wait_for(lambda: stored() == 800, 60, "the first 800 records")
        workers[0].kill()  # -9, while records keep coming
        workers[0].wait()
        for seq in range(201, 401):
            for d, c in clients.items():
                c.publish(f"litefleet/v1/devices/{d}/telemetry", record(d, seq), qos=1)
        # the messages the broker handed to w1's session wait there: w1 comes back for them
        time.sleep(1.0)
        workers[0] = serve(config, logs[0], "--role", "ingest", "--worker", "w1")
        wait_for(
            lambda: stored() == 1600,
            90,
            f"every record stored once (have {stored()}); logs: "
            f"{[log.read_text()[-800:] for log in logs]}",
        )
        gaps = store.execute(
            "SELECT device_id, MAX(seq), COUNT(DISTINCT seq) FROM telemetry GROUP BY device_id"
        ).all()
        assert sorted(gaps) == [(d, 400, 400) for d in DEVICES]  # once each, no gap
        assert (
            store.execute("SELECT value FROM counters WHERE name = 'stored.telemetry'").scalar()
            == 1600
        )
    finally:
        for c in clients.values():
            c.disconnect()
            c.loop_stop()
        stop(*workers)
        store.close()


def test_one_controller_is_active_and_a_standby_takes_over_when_it_is_killed(
    cloud_env: CloudEnv, mosquitto, postgres
) -> None:
    url = postgres.create_database()
    config = pg_config(
        cloud_env,
        url,
        mosquitto.port,
        "[rollout]\ntick_s = 0.5\nlease_s = 3\n[ingest]\noffline_after_s = 60\n",
    )
    logs = [cloud_env.root / f"controller-{n}.log" for n in (1, 2)]
    controllers = [serve(config, logs[0], "--role", "controller")]
    store = open_store(url)

    def stale_device(device_id: str) -> None:
        store.execute(
            "INSERT INTO devices (device_id, online, last_seen) VALUES (%s, 1, %s)",
            (device_id, time.time() - 600),
        )

    def online(device_id: str) -> int:
        return int(
            store.execute("SELECT online FROM devices WHERE device_id = %s", (device_id,)).scalar()
        )

    try:
        wait_for(lambda: holder(store, "controller") is not None, 30, "a lease holder")
        first = holder(store, "controller")
        assert first is not None and first[0].endswith(f":{controllers[0].pid}")
        controllers.append(serve(config, logs[1], "--role", "controller"))
        wait_for(lambda: "serving (role controller)" in logs[1].read_text(), 30, "the standby")
        stale_device("cam-1")  # the active controller's tick marks it offline
        wait_for(lambda: online("cam-1") == 0, 30, "the active controller ticking")
        assert holder(store, "controller")[0] == first[0]  # type: ignore[index]
        assert "controller lease taken" not in logs[1].read_text()  # the standby waits

        controllers[0].kill()  # -9: no clean stop, the lease is left to expire
        controllers[0].wait()
        killed = time.monotonic()
        stale_device("cam-2")
        wait_for(
            lambda: holder(store, "controller")[0].endswith(  # type: ignore[index]
                f":{controllers[1].pid}"
            ),
            30,
            "the standby holding the lease",
        )
        wait_for(lambda: online("cam-2") == 0, 30, "the standby ticking")
        took = time.monotonic() - killed
        assert "controller lease taken" in logs[1].read_text()
        print(f"standby ticked {took:.1f} s after the active controller was killed")
    finally:
        stop(*controllers)
        store.close()
    # a clean stop gives the lease up
    remaining = open_store(url)
    try:
        assert holder(remaining, "controller") is None
    finally:
        remaining.close()


def grants_subscribed(log: Path) -> bool:
    return re.search(r"-samples-\w+ subscribed to", log.read_text()) is not None


def test_only_the_active_controller_grants_a_capture_request(
    cloud_env: CloudEnv, mosquitto: Any, postgres: Any
) -> None:
    url = postgres.create_database()
    config = pg_config(cloud_env, url, mosquitto.port, "[rollout]\ntick_s = 0.5\nlease_s = 3\n")
    logs = [cloud_env.root / f"controller-{n}.log" for n in (1, 2)]
    store = open_store(url)
    controllers = [serve(config, logs[0], "--role", "controller")]
    device = device_client(mosquitto.port, "cam-g")
    grants: list[bytes] = []
    subscribed: list[int] = []

    def on_message(_c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        grants.append(bytes(message.payload))

    def on_subscribe(_c: object, _u: object, mid: int, _codes: object, _p: object) -> None:
        subscribed.append(mid)

    device.on_message = on_message
    device.on_subscribe = on_subscribe
    try:
        wait_for(lambda: holder(store, "controller") is not None, 30, "a lease holder")
        controllers.append(serve(config, logs[1], "--role", "controller"))
        for log in logs:  # both hear capture requests
            wait_for(partial(grants_subscribed, log), 30, f"{log.name}: the grants' subscription")
        wait_for(device.is_connected, 10, "the device")
        _, mid = device.subscribe(topic("cam-g", Channel.CMD), qos=1)
        wait_for(lambda: mid in subscribed, 10, "the device's subscription to its cmd topic")
        files = {"20260101T000000-0123abcd.jpg": 900}
        device.publish(
            topic("cam-g", Channel.CAPTURE),
            encode_message(CaptureRequest("cam-g", time.time(), files)),
            qos=1,
        )
        # positive control: the active controller grants, and the standby heard the request
        wait_for(lambda: len(grants) >= 1, 30, "the grant")
        wait_for(
            lambda: "left to the active controller" in logs[1].read_text(),
            30,
            f"the standby hearing it: {logs[1].read_text()[-800:]}",
        )
        assert len(grants) == 1
        assert json.loads(grants[0])["signed"]["command"] == "upload"
        assert "left to the active controller" not in logs[0].read_text()
    finally:
        device.disconnect()
        device.loop_stop()
        stop(*controllers)
        store.close()


@pytest.mark.slow
def test_the_fleet_benchmark_on_postgresql_survives_a_killed_worker_and_controller(
    tmp_path: Path,
) -> None:
    """20 devices, 2 ingest workers: one killed -9 mid-rollout, the active controller killed
    -9 mid-rollout; every device commits both rollouts and no record is missing."""
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [
            sys.executable,
            str(repo / "benchmarks" / "fleet.py"),
            "--devices",
            "20",
            "--duration",
            "1",
            "--backlog",
            "2",
            "--backend",
            "postgresql",
            "--ingest-workers",
            "2",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(repo)},
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["backend"] == "postgresql" and result["ingest_workers"] == 2, result
    assert result["rollout_committed"] == result["rollout_delta_committed"] == 20
    assert result["ingest_worker_killed"] is True
    assert result["controller_failover_s"] is not None
    assert result["telemetry_missing"] == 0 and result["records_stored"] == result["records_sent"]
