"""The ingester against a real mosquitto that restarts mid-stream: every record stored once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud.config import load_cloud_config
from cloud.ingest import Ingester
from cloud.store import counter, open_store
from shared.messages import (
    DeviceState,
    Event,
    ModelIdentity,
    TelemetryRecord,
    UpdateStatus,
    encode_message,
)
from shared.topics import Channel, topic
from tests.cloud.conftest import CloudEnv, write_config

MODEL = ModelIdentity("digits", 1, "ab" * 32)


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def device_client(port: int, client_id: str) -> mqtt.Client:
    """A device-like publisher: MQTT 5, persistent session, QoS 1 resent after reconnects."""
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(50)
    client.reconnect_delay_set(0.1, 0.5)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    client.connect_async("127.0.0.1", port, clean_start=False, properties=props)
    client.loop_start()
    return client


def record(device_id: str, seq: int) -> bytes:
    return encode_message(TelemetryRecord(device_id=device_id, seq=seq, ts=time.time(),
                                          model=MODEL, inferences=seq * 10, fps=12.5,
                                          latency_p95_ms=4.2))


def rows(db_path: Path, table: str) -> int:
    db = open_store(db_path)
    try:
        return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    finally:
        db.conn.close()


@pytest.fixture
def ingest_env(cloud_env: CloudEnv, mosquitto):
    write_config(cloud_env.root, mqtt_port=mosquitto.port,
                 extra="[ingest]\nbatch_max = 500\nbatch_wait_s = 0.05\n")
    ingester = Ingester(load_cloud_config(cloud_env.config))
    ingester.start()
    yield cloud_env, ingester
    ingester.stop()


def test_100_devices_x_100_records_through_a_broker_restart(ingest_env, mosquitto) -> None:
    env, ingester = ingest_env
    devices = [f"dev-{i:03d}" for i in range(100)]
    publishers = [device_client(mosquitto.port, f"pub-{g}") for g in range(10)]
    resent = 0
    infos: list[mqtt.MQTTMessageInfo] = []
    lock = threading.Lock()

    def publish(g: int) -> None:
        nonlocal resent
        client = publishers[g]
        mine = devices[g * 10:(g + 1) * 10]
        for seq in range(1, 101):
            for d in mine:
                info = client.publish(topic(d, Channel.TELEMETRY), record(d, seq), qos=1)
                with lock:
                    infos.append(info)
            if seq % 10 == 0:  # a device that resends what it was not sure was delivered
                for d in mine:
                    info = client.publish(topic(d, Channel.TELEMETRY), record(d, seq), qos=1)
                    with lock:
                        infos.append(info)
                        resent += 1
            time.sleep(0.002)

    threads = [threading.Thread(target=publish, args=(g,)) for g in range(10)]
    for t in threads:
        t.start()
    wait_for(lambda: rows(env.db, "telemetry") >= 2500, 60, "a quarter of the records")
    mosquitto.restart()  # graceful: the broker keeps sessions and queued messages
    for t in threads:
        t.join(120)
    wait_for(lambda: rows(env.db, "telemetry") >= 10_000, 120, "all 10,000 records")
    wait_for(lambda: all(i.is_published() for i in infos), 60, "every PUBACK")
    time.sleep(1.0)  # anything redelivered late must still be dropped
    for client in publishers:
        client.disconnect()
        client.loop_stop()

    db = open_store(env.db)
    assert db.execute("SELECT COUNT(*) FROM telemetry").fetchone()[0] == 10_000
    per_device = dict(db.execute("SELECT device_id, COUNT(DISTINCT seq) FROM telemetry "
                                 "GROUP BY device_id").fetchall())
    assert per_device == {d: 100 for d in devices}
    duplicates = counter(db, "duplicates")
    assert duplicates >= resent == 1000
    assert counter(db, "stored.telemetry") == 10_000
    snap = ingester.snapshot()
    assert snap["received"] == snap["stored"] + snap["duplicates"] + snap["malformed"]
    assert "dev-042" in {r[0] for r in db.execute("SELECT device_id FROM devices")}


def test_state_events_updates_and_garbage(ingest_env, mosquitto) -> None:
    env, ingester = ingest_env
    client = device_client(mosquitto.port, "cam-01")
    wait_for(client.is_connected, 10, "a connection")
    state = DeviceState(device_id="cam-01", online=True, ts=time.time(), profile="x86-gateway",
                        model=MODEL, update_phase="idle", fps=9.5, agent_version="0.1.0")
    sent = [
        (topic("cam-01", Channel.STATE), encode_message(state), True),
        (topic("cam-01", Channel.EVENTS), encode_message(
            Event("cam-01", 1, time.time(), "source", {"status": "up"})), False),
        (topic("cam-01", Channel.UPDATE), encode_message(UpdateStatus(
            "cam-01", 2, time.time(), "r-1", "committed", "digits", 2, "cd" * 32)), False),
        (topic("cam-01", Channel.TELEMETRY), b"{not json", False),
        (topic("cam-01", Channel.TELEMETRY), b'{"schema": "litefleet.telemetry/99"}', False),
        (topic("cam-01", Channel.TELEMETRY), record("cam-02", 1), False),  # names another device
        (topic("cam-01", Channel.EVENTS), record("cam-01", 1), False),  # wrong kind for channel
        ("litefleet/v1/devices/bad id!/telemetry", record("cam-01", 1), False),
        (topic("cam-01", Channel.TELEMETRY), record("cam-01", 7), False),
    ]
    for name, payload, retain in sent:
        client.publish(name, payload, qos=1, retain=retain).wait_for_publish(10)
    wait_for(lambda: rows(env.db, "telemetry") == 1, 30, "the one good record")
    wait_for(lambda: ingester.snapshot()["malformed"] >= 5, 30, "the garbage counted")
    db = open_store(env.db)
    dev = next(db.query("SELECT * FROM devices WHERE device_id = 'cam-01'"))
    assert dev["online"] == 1 and dev["profile"] == "x86-gateway" and dev["model_version"] == 1
    assert dev["p95_ms"] == pytest.approx(4.2)
    assert db.execute("SELECT kind FROM events").fetchall() == [("source",)]
    assert db.execute("SELECT phase, version FROM updates").fetchall() == [("committed", 2)]
    assert counter(db, "malformed") == 5

    # the last will: a retained offline state
    offline = DeviceState(device_id="cam-01", online=False, ts=time.time() + 1)
    client.publish(topic("cam-01", Channel.STATE), encode_message(offline), qos=1,
                   retain=True).wait_for_publish(10)
    wait_for(lambda: next(open_store(env.db).query(
        "SELECT online FROM devices WHERE device_id = 'cam-01'"))["online"] == 0, 30, "offline")
    client.disconnect()
    client.loop_stop()
