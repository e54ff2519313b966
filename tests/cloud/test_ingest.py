"""The ingester against a real mosquitto that restarts mid-stream: every record stored once."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
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
from cloud.ingest import Ingester, _Handoff
from cloud.mqtt_receive import ReceiveClient
from cloud.store import Store, counter, engine_url, open_store
from cloud.store.migrate import migrate
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


def device_client(port: int, client_id: str, v5: bool = True) -> mqtt.Client:
    """A device-like publisher: persistent session, QoS 1 resent after reconnects."""
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else False,
    )
    client.max_inflight_messages_set(50)
    client.reconnect_delay_set(0.1, 0.5)
    client.user_data_set({"acked": 0})

    def on_publish(
        c: mqtt.Client, userdata: dict[str, int], mid: int, rc: object, props: object
    ) -> None:
        userdata["acked"] += 1  # also for what paho resends after a reconnect

    client.on_publish = on_publish
    if v5:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        client.connect_async("127.0.0.1", port, clean_start=False, properties=props)
    else:
        client.connect_async("127.0.0.1", port)
    client.loop_start()
    return client


def record(device_id: str, seq: int) -> bytes:
    return encode_message(
        TelemetryRecord(
            device_id=device_id,
            seq=seq,
            ts=time.time(),
            model=MODEL,
            inferences=seq * 10,
            fps=12.5,
            latency_p95_ms=4.2,
        )
    )


def rows(db_path: Path, table: str) -> int:
    db = open_store(db_path)
    try:
        return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    finally:
        db.close()


@pytest.fixture
def ingest_env(cloud_env: CloudEnv, mosquitto):
    write_config(
        cloud_env.root,
        mqtt_port=mosquitto.port,
        extra="[ingest]\nbatch_max = 500\nbatch_wait_s = 0.05\n",
    )
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
        mine = devices[g * 10 : (g + 1) * 10]
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
    # (a message published while the broker was down keeps rc NO_CONN in its info even after
    # paho resends it, so PUBACKs are counted in on_publish)
    wait_for(
        lambda: sum(c.user_data_get()["acked"] for c in publishers) >= len(infos),
        60,
        "every PUBACK",
    )
    time.sleep(1.0)  # anything redelivered late must still be dropped
    for client in publishers:
        client.disconnect()
        client.loop_stop()

    db = open_store(env.db)
    assert db.execute("SELECT COUNT(*) FROM telemetry").fetchone()[0] == 10_000
    per_device = dict(
        db.execute(
            "SELECT device_id, COUNT(DISTINCT seq) FROM telemetry GROUP BY device_id"
        ).fetchall()
    )
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
    state = DeviceState(
        device_id="cam-01",
        online=True,
        ts=time.time(),
        profile="x86-gateway",
        model=MODEL,
        update_phase="idle",
        fps=9.5,
        agent_version="0.1.0",
    )
    sent = [
        (topic("cam-01", Channel.STATE), encode_message(state), True),
        (
            topic("cam-01", Channel.EVENTS),
            encode_message(Event("cam-01", 1, time.time(), "source", {"status": "up"})),
            False,
        ),
        (
            topic("cam-01", Channel.UPDATE),
            encode_message(
                UpdateStatus("cam-01", 2, time.time(), "r-1", "committed", "digits", 2, "cd" * 32)
            ),
            False,
        ),
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
    dev = db.execute("SELECT * FROM devices WHERE device_id = 'cam-01'").mappings().one()
    assert dev["online"] == 1 and dev["profile"] == "x86-gateway" and dev["model_version"] == 1
    assert dev["p95_ms"] == pytest.approx(4.2)
    assert db.execute("SELECT kind FROM events").fetchall() == [("source",)]
    assert db.execute("SELECT phase, version FROM updates").fetchall() == [("committed", 2)]
    assert counter(db, "malformed") == 5

    # the last will: a retained offline state
    offline = DeviceState(device_id="cam-01", online=False, ts=time.time() + 1)
    client.publish(
        topic("cam-01", Channel.STATE), encode_message(offline), qos=1, retain=True
    ).wait_for_publish(10)
    wait_for(
        lambda: (
            open_store(env.db)
            .execute("SELECT online FROM devices WHERE device_id = 'cam-01'")
            .scalar()
            == 0
        ),
        30,
        "offline",
    )
    client.disconnect()
    client.loop_stop()


@pytest.mark.parametrize(("protocol", "own_path"), [("5", True), ("3.1.1", True), ("5", False)])
def test_the_receive_path_in_both_protocols(
    cloud_env: CloudEnv, mosquitto, monkeypatch, protocol: str, own_path: bool
) -> None:
    """The ingester's own receive path (buffered reads, properties skipped, batched acks):
    MQTT 5 publishes with properties, and MQTT 3.1.1, are stored exactly as sent; so they
    are through plain paho, where its internals are not what ReceiveClient expects."""
    if not own_path:
        monkeypatch.setattr("cloud.mqtt.supported", lambda: False)
    config = write_config(
        cloud_env.root,
        mqtt_port=mosquitto.port,
        extra="[ingest]\nbatch_max = 50\nbatch_wait_s = 0.02\n",
    )
    config.write_text(config.read_text().replace("[mqtt]\n", f'[mqtt]\nprotocol = "{protocol}"\n'))
    ingester = Ingester(load_cloud_config(config))
    assert isinstance(ingester.link.client, ReceiveClient) == own_path
    ingester.start()
    v5 = protocol == "5"
    client = device_client(mosquitto.port, "cam-07", v5=v5)
    try:
        wait_for(client.is_connected, 10, "a connection")
        sent = {}
        for seq in range(1, 301):
            payload = record("cam-07", seq)
            sent[seq] = payload.decode()
            props = None
            if v5:  # properties of every length the receive path must skip
                props = Properties(PacketTypes.PUBLISH)
                props.UserProperty = [("trace", "x" * (seq % 7) * 40)]
                props.ContentType = "application/json"
            client.publish(topic("cam-07", Channel.TELEMETRY), payload, qos=1, properties=props)
        wait_for(lambda: rows(cloud_env.db, "telemetry") >= 300, 30, "300 records")
        wait_for(lambda: ingester.snapshot()["received"] >= 300, 10, "the counters")
        db = open_store(cloud_env.db)
        stored = dict(db.execute("SELECT seq, body FROM telemetry").fetchall())
        assert stored == sent
        snap = ingester.snapshot()
        assert snap["stored"] == 300 and snap["malformed"] == 0 and snap["duplicates"] == 0
    finally:
        client.disconnect()
        client.loop_stop()
        ingester.stop()
    # every message was acknowledged after its batch: a new ingester on the same persistent
    # session is sent nothing again
    again = Ingester(load_cloud_config(config))
    again.start()
    late = device_client(mosquitto.port, "cam-08", v5=v5)
    try:
        time.sleep(1.0)
        assert again.snapshot()["received"] == 0
        # the positive control: the same ingester does receive what is sent now
        wait_for(late.is_connected, 10, "a connection")
        late.publish(topic("cam-08", Channel.TELEMETRY), record("cam-08", 1), qos=1)
        wait_for(lambda: again.snapshot()["received"] >= 1, 30, "the new record")
        assert again.snapshot()["received"] == 1
    finally:
        late.disconnect()
        late.loop_stop()
        again.stop()


def publish_until_stored(client: mqtt.Client, db: Path, device_id: str) -> None:
    """Send record 1 until an ingester that may still be subscribing has stored it."""

    def first_stored() -> bool:
        if db.exists() and rows(db, "telemetry") == 1:
            return True
        client.publish(topic(device_id, Channel.TELEMETRY), record(device_id, 1), qos=1)
        time.sleep(0.2)
        return False

    wait_for(first_stored, 30, "the first record stored")


def _serve(config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "cloud.cli", "serve", "--no-http", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
    )


def test_an_ingester_killed_before_its_commit_loses_nothing(cloud_env: CloudEnv, mosquitto) -> None:
    """Acks go out only after the batch commits: records an ingester had received but not
    stored when it was killed come back from the broker to the next one, and are stored."""
    config = write_config(
        cloud_env.root,
        mqtt_port=mosquitto.port,
        extra="[ingest]\nbatch_max = 500\nbatch_wait_s = 0.05\n",
    )
    log = cloud_env.root / "serve.log"
    serve = _serve(config, log)
    client = device_client(mosquitto.port, "cam-09")
    lock: sqlite3.Connection | None = None
    try:
        wait_for(client.is_connected, 10, "a connection")

        publish_until_stored(client, cloud_env.db, "cam-09")
        # the store is locked: the ingester receives the next records but cannot commit them
        lock = sqlite3.connect(cloud_env.db, timeout=30)
        lock.execute("BEGIN IMMEDIATE")
        infos = [
            client.publish(topic("cam-09", Channel.TELEMETRY), record("cam-09", seq), qos=1)
            for seq in range(2, 202)
        ]
        wait_for(lambda: all(i.is_published() for i in infos), 30, "the broker's PUBACKs")
        time.sleep(1.5)  # the broker forwards them to the ingester, which waits on the lock
        serve.send_signal(signal.SIGKILL)
        serve.wait(10)
        lock.rollback()
        lock.close()
        lock = None
        assert rows(cloud_env.db, "telemetry") == 1
        serve = _serve(config, log)
        wait_for(lambda: rows(cloud_env.db, "telemetry") == 201, 60, "the redelivered records")
        db = open_store(cloud_env.db)
        assert [r[0] for r in db.execute("SELECT seq FROM telemetry ORDER BY seq")] == list(
            range(1, 202)
        )
    finally:
        if lock is not None:
            lock.close()
        client.disconnect()
        client.loop_stop()
        serve.send_signal(signal.SIGTERM)
        serve.wait(30)


def test_the_handoff_is_bounded_and_keeps_order() -> None:
    """paho's thread waits while the writer is behind; nothing is lost or reordered."""
    handoff = _Handoff(bound=10)
    stop = threading.Event()
    most = 0

    def produce() -> None:
        nonlocal most
        for i in range(500):
            handoff.put((b"t", b"p", i, 1), stop)
            most = max(most, len(handoff))

    producer = threading.Thread(target=produce)
    producer.start()
    taken: list[int] = []
    while len(taken) < 500:
        batch = handoff.take(4, 0.01)
        taken += [mid for _, _, mid, _ in batch]
        time.sleep(0.002)  # a slow writer
    producer.join(10)
    assert taken == list(range(500))
    assert most <= 10
    assert handoff.take(4, 0.01) == []


def test_a_store_that_stops_answering_holds_the_batch_until_it_is_back(
    cloud_env: CloudEnv, mosquitto, postgres
) -> None:
    """PostgreSQL refuses connections for a while: the ingester keeps the batch it holds
    (retrying, its acks waiting), and every record is stored once the store is back."""
    url = postgres.create_database()
    name = url.rsplit("/", 1)[1]
    config = write_config(
        cloud_env.root,
        mqtt_port=mosquitto.port,
        extra="[ingest]\nbatch_max = 500\nbatch_wait_s = 0.05\n",
    )
    config.write_text(config.read_text().replace('db = "cloud.db"', f'url = "{url}"'))
    migrate(Store(engine_url(url)))
    store = open_store(url)
    admin = Store(engine_url(postgres.admin_url()))
    ingester = Ingester(load_cloud_config(config))
    client = device_client(mosquitto.port, "cam-11")

    def stored() -> int:
        return int(store.execute("SELECT COUNT(*) FROM telemetry").fetchone()[0])

    try:
        ingester.start()
        wait_for(client.is_connected, 10, "a connection")
        client.publish(topic("cam-11", Channel.TELEMETRY), record("cam-11", 1), qos=1)
        wait_for(lambda: stored() == 1, 30, "the first record")  # a positive control
        store.close()
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (name,),
        )
        for seq in range(2, 52):
            client.publish(topic("cam-11", Channel.TELEMETRY), record("cam-11", seq), qos=1)
        # more attempts than the ingester once made before dropping a batch's acks
        wait_for(lambda: ingester.snapshot()["store_retries"] >= 8, 60, "retries")
        assert ingester.snapshot()["stored"] == 1  # the held batch is not counted yet
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        store = open_store(url)
        wait_for(lambda: stored() == 51, 60, "every record once the store is back")
        seqs = [r[0] for r in store.execute("SELECT seq FROM telemetry ORDER BY seq")]
        assert seqs == list(range(1, 52))
    finally:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        client.disconnect()
        client.loop_stop()
        ingester.stop()
        store.close()
        admin.close()
