"""`serve`'s HTTP port for monitoring (`/healthz`, `/metrics` scraped and parsed as Prometheus
text) and its log as an operator reads it: the broker's absence said once, its return said, no
scheduler line per tick, no traceback when an HTTP client resets."""

from __future__ import annotations

import json
import logging
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from cloud.store import open_store
from shared.messages import DeviceState, encode_message
from shared.topics import Channel, topic
from tests.cloud.conftest import CloudEnv, write_config
from tests.cloud.test_ingest import MODEL, device_client, publish_until_stored, record, wait_for
from tests.conftest import free_port


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = get(f"{base}/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def seed_rollouts(db_path: Path, states: list[str]) -> None:
    db = open_store(db_path)
    for i, state in enumerate(states):
        db.execute(
            "INSERT INTO rollouts (id, release_name, release_version, state, waves, "
            "current_wave, success_threshold_pct, max_failures_pct, created, updated, "
            "wave_started) VALUES (?, 'digits', 2, ?, '[\"100%\"]', 0, 95, 5, 0, 0, 0)",
            (f"r-{i}", state),
        )
        db.execute(  # one device still working on it: a running rollout stays so
            "INSERT INTO rollout_devices (rollout_id, device_id, wave, status, deployment, "
            "published, updated) VALUES (?, 'cam-09', 0, 'pending', '{}', ?, ?)",
            (f"r-{i}", time.time(), time.time()),
        )
    db.close()


def reset_connection(port: int, partial: bytes) -> None:
    """A client that sends part of a request and resets the connection (RST, not FIN)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(partial)
    time.sleep(0.2)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def test_health_metrics_and_a_readable_log_from_a_real_serve(
    cloud_env: CloudEnv, mosquitto
) -> None:
    http_port = free_port()
    config = write_config(
        cloud_env.root, mqtt_port=mosquitto.port, extra="[rollout]\ntick_s = 0.2\n"
    ).read_text()
    config = config.replace("port = 0", f"port = {http_port}")
    (cloud_env.root / "cloud.toml").write_text(config)
    base = f"http://127.0.0.1:{http_port}"
    (cloud_env.root / "artifacts").mkdir()
    (cloud_env.root / "artifacts" / "big.bin").write_bytes(b"x" * (4 << 20))
    log = cloud_env.root / "serve.log"

    mosquitto.stop()  # serve starts while the broker is down
    serve = subprocess.Popen(
        [sys.executable, "-m", "cloud.cli", "serve", "--config", str(cloud_env.config)],
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
    )
    client = None
    try:
        wait_for(lambda: "unreachable" in log.read_text(), 30, "the broker warning")
        wait_for(lambda: get(f"{base}/healthz")[0] == 200, 30, "the HTTP port")
        status, body = get(f"{base}/healthz")
        assert status == 200 and json.loads(body) == {
            "status": "degraded",
            "store": "ok",
            "broker": "unreachable",
        }
        assert scrape(base)[("litefleet_broker_connected", ())] == 0
        time.sleep(1.0)  # five more ticks with the broker still away: still one warning
        assert log.read_text().count("unreachable") == 1

        mosquitto.start()
        wait_for(lambda: "reachable again" in log.read_text(), 30, "the broker's return")
        wait_for(
            lambda: json.loads(get(f"{base}/healthz")[1])["status"] == "ok", 30, "healthz to say ok"
        )

        client = device_client(mosquitto.port, "cam-01")
        wait_for(client.is_connected, 10, "a connection")
        state = DeviceState(
            "cam-01", True, time.time(), "0.1.0", "rpi5", MODEL, "idle", root_version=2
        )
        client.publish(topic("cam-01", Channel.STATE), encode_message(state), qos=1, retain=True)
        publish_until_stored(client, cloud_env.db, "cam-01")
        for seq in (2, 3):
            client.publish(topic("cam-01", Channel.TELEMETRY), record("cam-01", seq), qos=1)
        client.publish(topic("cam-01", Channel.TELEMETRY), b"{not json", qos=1)
        seed_rollouts(cloud_env.db, ["running", "paused", "paused", "completed"])

        def ingested() -> float:
            return scrape(base)[("litefleet_records_ingested_total", (("kind", "telemetry"),))]

        wait_for(lambda: ingested() == 3, 30, "three records counted")
        m = scrape(base)
        assert m[("litefleet_devices", (("state", "online"),))] == 1
        assert m[("litefleet_devices", (("state", "offline"),))] == 0
        wait_for(
            lambda: scrape(base)[("litefleet_records_quarantined_total", ())] == 1,
            30,
            "the '{not json' record quarantined",
        )
        assert m[("litefleet_rollouts", (("state", "running"),))] == 1
        assert m[("litefleet_rollouts", (("state", "paused"),))] == 2
        assert m[("litefleet_rollouts", (("state", "completed"),))] == 1
        assert m[("litefleet_rollouts", (("state", "aborted"),))] == 0
        assert 0 <= m[("litefleet_ingest_lag_seconds", ())] < 3600
        assert m[("litefleet_broker_connected", ())] == 1
        assert m[("litefleet_devices_by_root", (("version", "2"),))] == 1
        assert m[("litefleet_upload_grants_total", (("outcome", "granted"),))] == 0
        db = open_store(cloud_env.db)  # the counter ingest's quarantine keeps, read by name
        db.execute("UPDATE counters SET value = 4 WHERE name = 'quarantined'")
        db.execute("INSERT INTO counters (name, value) VALUES ('grants.untrusted', 3)")
        db.close()
        m = scrape(base)
        assert m[("litefleet_records_quarantined_total", ())] == 4
        assert m[("litefleet_upload_grants_total", (("outcome", "untrusted"),))] == 3

        # clients that reset mid-request or mid-download
        reset_connection(http_port, b"GET /artifacts/big.bin HT")
        reset_connection(http_port, b"GET /artifacts/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        assert get(f"{base}/healthz")[0] == 200  # still serving after both

        serve.send_signal(signal.SIGTERM)
        assert serve.wait(30) == 0
        text = log.read_text()
        assert "stopping" in text  # the log was written to the end
        assert "Traceback" not in text and "Exception occurred" not in text
        assert "Running job" not in text and "executed successfully" not in text
        assert "<" not in text  # no object reprs (<paho.mqtt... object at 0x...>)
    finally:
        if client is not None:
            client.disconnect()
            client.loop_stop()
        if serve.poll() is None:
            serve.kill()
            serve.wait(10)


def test_paho_not_connected_goes_through_logging_at_debug(caplog) -> None:
    from cloud.config import MqttConfig
    from cloud.mqtt import CloudLink

    link = CloudLink(MqttConfig(host="127.0.0.1", port=free_port()), "probe")
    with caplog.at_level(logging.DEBUG):
        link.client.loop(0.01)  # never connected: paho says so
    said = [r for r in caplog.records if "not connected" in r.getMessage()]
    assert said, "paho's line reaches logging"
    assert {r.levelno for r in said} == {logging.DEBUG}
    assert all(r.name == "cloud.mqtt" for r in said)
