"""Poison messages against a real `litefleet serve` and a real mosquitto (issue 13, item 1).

Each payload class that once stopped ingest for the whole fleet is published on a device's own
topics; the good records around them are stored, the bad ones quarantined with their reasons,
and a restarted `serve` is not poisoned by anything. A writer that dies for a reason no device
caused ends `serve` with a non-zero status, for systemd to restart it."""

from __future__ import annotations

import hashlib
import json
import random
import signal
import sqlite3
import threading
import time

from cloud.config import load_cloud_config
from cloud.service import EXIT_WORKER_DIED, CloudService
from cloud.store import counter, open_store
from shared.messages import UpdateStatus, encode_message
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

DEVICE = "dev-x"
TELEMETRY = topic(DEVICE, Channel.TELEMETRY)
UPDATE = topic(DEVICE, Channel.UPDATE)


def poison() -> list[tuple[str, str, bytes]]:
    """(name, topic, payload) for every payload class of the issue."""
    now = time.time()

    def telemetry(**fields: object) -> bytes:
        body = {"schema": "litefleet.telemetry/1", "device_id": DEVICE, "seq": 1, "ts": now}
        body.update(fields)
        return json.dumps(body).encode()

    return [
        (
            "deep JSON",
            TELEMETRY,
            b'{"schema":"litefleet.telemetry/1","outputs":' + b"[" * 5000 + b"]" * 5000 + b"}",
        ),
        (
            "5000-digit integer",
            TELEMETRY,
            telemetry().replace(b'"seq": 1', b'"seq": ' + b"7" * 5000),
        ),
        ("ts 1e400", TELEMETRY, telemetry().replace(f'"ts": {now}'.encode(), b'"ts": 1e400')),
        (
            "seq 2**70 (the issue's example)",
            TELEMETRY,
            b'{"schema":"litefleet.telemetry/1","device_id":"dev-x",'
            b'"seq":1180591620717411303424,"ts":1}',
        ),
        ("seq 2**63", TELEMETRY, telemetry(seq=2**63)),
        (
            "model.version 2**63",
            TELEMETRY,
            telemetry(seq=2, model={"name": "digits", "version": 2**63, "sha256": "ab" * 32}),
        ),
        ("negative seq", TELEMETRY, telemetry(seq=-1)),
        (
            "NUL in update phase",
            UPDATE,
            json.dumps(
                {
                    "schema": "litefleet.update/1",
                    "device_id": DEVICE,
                    "seq": 3,
                    "ts": now,
                    "rollout_id": "r-1",
                    "phase": "commit\u0000ted",
                }
            ).encode(),
        ),
    ]


def mutations(count: int, seed: int = 13) -> list[bytes]:
    """Random byte mutations of one valid telemetry record and one valid update status."""
    rng = random.Random(seed)
    originals = [
        record(DEVICE, 500),
        encode_message(
            UpdateStatus(
                DEVICE,
                501,
                time.time(),
                "r-1",
                "downloading",
                "digits",
                2,
                "cd" * 32,
                bytes_done=10,
                bytes_total=100,
                via="delta",
            )
        ),
    ]
    out = []
    for i in range(count):
        data = bytearray(originals[i % 2])
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(data))
            choice = rng.random()
            if choice < 0.6:
                data[at] = rng.randrange(256)
            elif choice < 0.8:
                data[at:at] = bytes([rng.randrange(256)])
            else:
                del data[at]
        out.append(bytes(data))
    return out


def accounted(db_path) -> int:
    """Messages the ingester has finished with: stored, duplicate or quarantined."""
    db = open_store(db_path)
    try:
        return sum(
            counter(db, name)
            for name in (
                "stored.telemetry",
                "stored.events",
                "stored.updates",
                "stored.state",
                "duplicates",
                "quarantined",
            )
        )
    finally:
        db.close()


def test_every_poison_class_is_quarantined_and_a_restarted_serve_is_not_poisoned(
    cloud_env: CloudEnv, mosquitto
) -> None:
    config = write_config(
        cloud_env.root,
        mqtt_port=mosquitto.port,
        extra="[ingest]\nbatch_max = 50\nbatch_wait_s = 0.05\n",
    )
    log = cloud_env.root / "serve.log"
    serve = _serve(config, log)
    client = device_client(mosquitto.port, DEVICE)
    try:
        wait_for(client.is_connected, 10, "a connection")
        publish_until_stored(client, cloud_env.db, DEVICE)
        start = accounted(cloud_env.db)

        bad = poison()
        mutated = mutations(400)
        sent = [(t, p) for _, t, p in bad]
        sent += [(TELEMETRY if i % 2 == 0 else UPDATE, p) for i, p in enumerate(mutated)]
        sent.append((TELEMETRY, record(DEVICE, 1000)))  # a good record after them all
        for name, payload in sent:
            client.publish(name, payload, qos=1)
        wait_for(
            lambda: accounted(cloud_env.db) - start >= len(sent),
            90,
            "every message stored, a duplicate or quarantined",
        )
        assert serve.poll() is None

        db = open_store(cloud_env.db)
        assert db.execute(
            "SELECT 1 FROM telemetry WHERE device_id = ? AND seq = 1000", [DEVICE]
        ).fetchone()
        quarantined = {
            sha: (reason, detail)
            for sha, reason, detail in db.execute("SELECT sha256, reason, detail FROM quarantine")
        }
        for name, _, payload in bad:
            reason, detail = quarantined[hashlib.sha256(payload).hexdigest()]
            assert reason == "malformed", (name, reason, detail)
        by_sha = {hashlib.sha256(p).hexdigest() for _, _, p in bad}
        details = {quarantined[s][1].split(":")[0] for s in by_sha}
        assert {"$", "$.ts", "$.seq", "$.model.version", "$.phase"} <= details
        # each random mutation was stored, a duplicate, or quarantined (none lost, none fatal)
        assert accounted(cloud_env.db) - start == len(sent)
        assert counter(db, "quarantined") >= len(bad) + 1
        assert db.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0] == counter(
            db, "quarantined"
        )
        in_quarantine = counter(db, "quarantined")
        db.close()

        serve.send_signal(signal.SIGTERM)
        assert serve.wait(30) == 0
        serve = _serve(config, log)  # the same persistent session: nothing is redelivered
        for seq in (1001, 1002):
            client.publish(TELEMETRY, record(DEVICE, seq), qos=1)
        wait_for(
            lambda: {1001, 1002} <= seqs(cloud_env.db), 60, "new good records after the restart"
        )
        db = open_store(cloud_env.db)
        assert counter(db, "quarantined") == in_quarantine  # all acknowledged the first time
        db.close()
        assert serve.poll() is None
    finally:
        client.disconnect()
        client.loop_stop()
        if serve.poll() is None:
            serve.send_signal(signal.SIGTERM)
            serve.wait(30)


def seqs(db_path) -> set[int]:
    db = open_store(db_path)
    try:
        return {r[0] for r in db.execute("SELECT seq FROM telemetry")}
    finally:
        db.close()


def test_a_writer_that_dies_ends_serve_with_a_failure_status(
    cloud_env: CloudEnv, mosquitto
) -> None:
    """The store refuses a record and then even its dead letter: the writer cannot keep its
    promise for that message and dies; `serve` exits 70 with one line saying so (rather than
    living on without ingest), and once the store is fixed a restart stores the record the
    broker kept for it."""
    config = write_config(cloud_env.root, mqtt_port=mosquitto.port)
    log = cloud_env.root / "serve.log"
    serve = _serve(config, log)
    client = device_client(mosquitto.port, DEVICE)
    try:
        wait_for(client.is_connected, 10, "a connection")
        publish_until_stored(client, cloud_env.db, DEVICE)
        fault = sqlite3.connect(cloud_env.db, timeout=30)
        with fault:
            for table in ("telemetry", "quarantine"):
                exists = fault.execute(
                    "SELECT 1 FROM sqlite_master WHERE name = ?", [table]
                ).fetchone()
                if exists:
                    fault.execute(
                        f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} "
                        "BEGIN SELECT RAISE(ABORT, 'the disk refuses'); END"
                    )
        client.publish(TELEMETRY, record(DEVICE, 2), qos=1)
        assert serve.wait(60) == EXIT_WORKER_DIED
        last = log.read_text().strip().splitlines()[-1]
        assert "exiting with status 70: the ingest writer died: IntegrityError" in last

        with fault:
            fault.execute("DROP TRIGGER refuse_telemetry")
            fault.execute("DROP TRIGGER IF EXISTS refuse_quarantine")
        fault.close()
        serve = _serve(config, log)
        wait_for(
            lambda: rows(cloud_env.db, "telemetry") == 2, 60, "the record the broker redelivered"
        )
    finally:
        client.disconnect()
        client.loop_stop()
        if serve.poll() is None:
            serve.send_signal(signal.SIGTERM)
            serve.wait(30)


def test_a_dead_http_server_thread_ends_serve(cloud_env: CloudEnv, mosquitto) -> None:
    """Any worker, not only the writer: the artifact server's thread stops, `run` notices
    within its next check and returns the failure status (while a broker restart, which
    paho rides out, is no failure)."""
    config = write_config(cloud_env.root, mqtt_port=mosquitto.port)
    service = CloudService(load_cloud_config(config), http=True)
    status: list[int] = []
    runner = threading.Thread(target=lambda: status.append(service.run()))
    runner.start()
    try:
        wait_for(
            lambda: (
                service.http is not None
                and service.http.serving
                and service.ingester.link.connected
            ),
            20,
            "serving",
        )
        mosquitto.restart()  # a broker going away is no worker dying: paho reconnects
        wait_for(lambda: not service.ingester.link.connected, 10, "the disconnect")
        wait_for(
            lambda: service.ingester.link.connected and service.link.connected, 30, "the reconnect"
        )
        time.sleep(1.5)  # a check of the workers or more
        assert service.failure is None and runner.is_alive()
        service.http._server.shutdown()  # its thread returns from serve_forever
        runner.join(30)
        assert status == [EXIT_WORKER_DIED]
        assert service.failure == "the artifact HTTP server died"
    finally:
        service.stop_event.set()
        runner.join(30)
