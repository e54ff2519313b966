"""`litefleet broker-config` against a real mosquitto: each device stays on its own topics."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud.broker_config import hash_password, write_broker_config
from cloud.cli import main
from tests.conftest import free_port

P = "litefleet/v1/devices"


class Client:
    def __init__(self, port: int, user: str, password: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.pubacks: dict[int, int] = {}
        self.subacks: dict[int, list[int]] = {}
        self.connack: int | None = None
        self._event = threading.Event()
        c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=user,
                        protocol=mqtt.MQTTv5)
        c.username_pw_set(user, password)
        c.on_connect = self._on_connect
        c.on_message = lambda _c, _u, m: self.messages.append((m.topic, bytes(m.payload)))
        c.on_publish = lambda _c, _u, mid, rc, _p: self.pubacks.__setitem__(mid, rc.value)
        c.on_subscribe = lambda _c, _u, mid, rcs, _p: self.subacks.__setitem__(
            mid, [r.value for r in rcs])
        c.reconnect_delay_set(0.1, 0.5)
        c.connect("127.0.0.1", port)
        c.loop_start()
        self.client = c
        assert self._event.wait(10), "no CONNACK"

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connack = reason_code.value
        self._event.set()

    def _connected(self) -> None:
        # mosquitto 2.0 closes a v5 client's connection after a denied QoS 1 publish (it sends
        # PUBACK 135 first); paho reconnects, and the next step waits for that
        deadline = time.monotonic() + 10
        while not self.client.is_connected() and time.monotonic() < deadline:
            time.sleep(0.02)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> int:
        self._connected()
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)
        deadline = time.monotonic() + 5
        while info.mid not in self.pubacks and time.monotonic() < deadline:
            time.sleep(0.01)
        code = self.pubacks[info.mid]
        if code >= 128:
            time.sleep(0.3)  # let the broker's disconnect land before the next step
        return code

    def subscribe(self, topic: str) -> list[int]:
        self._connected()
        _, mid = self.client.subscribe(topic, qos=1)
        deadline = time.monotonic() + 5
        while mid not in self.subacks and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.subacks[mid]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def secured(tmp_path: Path, mosquitto_factory, capsys):
    port = free_port()
    out = tmp_path / "broker"
    assert main(["broker-config", "--out", str(out), "--devices", "dev-a", "dev-b",
                 "--port", str(port), "--listen", "127.0.0.1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    conf = Path(result["config"]).read_text()
    mosquitto_factory(conf, port=port)
    passwords = result["passwords"]
    clients = {u: Client(port, u, passwords[u]) for u in ("cloud", "dev-a", "dev-b")}
    assert all(c.connack == 0 for c in clients.values())
    yield port, passwords, clients
    for c in clients.values():
        c.close()


def test_devices_cannot_leave_their_own_topics(secured) -> None:
    _, _, c = secured
    cloud, a, b = c["cloud"], c["dev-a"], c["dev-b"]
    assert cloud.subscribe(f"{P}/#") == [1]
    # allowed: A on its own telemetry and update topics
    assert a.publish(f"{P}/dev-a/telemetry", b"own") == 0
    assert a.publish(f"{P}/dev-a/update", b"own-update") == 0
    # denied: B's topics, and any desired topic (MQTT 5 PUBACK 135: not authorized)
    assert a.publish(f"{P}/dev-b/telemetry", b"spoof") == 135
    assert a.publish(f"{P}/dev-b/state", b"spoof", retain=True) == 135
    assert a.publish(f"{P}/dev-a/desired", b"self-deploy", retain=True) == 135
    assert a.publish(f"{P}/dev-b/desired", b"deploy-b", retain=True) == 135
    assert a.publish(f"{P}/dev-a/cmd", b"cmd", retain=False) == 135
    assert a.publish("litefleet/v1/other", b"x") == 135
    # A may not read B's desired topic, nor everyone's: mosquitto 2.0 grants the subscription
    # (SUBACK 1) and checks the ACL on each delivery, so what counts is what arrives
    a.subscribe(f"{P}/dev-b/desired")
    a.subscribe(f"{P}/+/desired")
    assert a.subscribe(f"{P}/dev-a/desired") == [1]
    assert b.subscribe(f"{P}/dev-b/desired") == [1]
    assert cloud.publish(f"{P}/dev-b/desired", b"for-b", retain=True) == 0
    assert cloud.publish(f"{P}/dev-a/desired", b"for-a", retain=True) == 0
    time.sleep(1.0)
    got = {t: p for t, p in cloud.messages}
    assert got == {f"{P}/dev-a/telemetry": b"own", f"{P}/dev-a/update": b"own-update",
                   f"{P}/dev-b/desired": b"for-b", f"{P}/dev-a/desired": b"for-a"}
    assert set(a.messages) == {(f"{P}/dev-a/desired", b"for-a")}  # not B's, even via +
    assert b.messages == [(f"{P}/dev-b/desired", b"for-b")]


def test_wrong_password_and_anonymous_are_refused(secured) -> None:
    port, _, _ = secured
    for user, password in (("dev-a", "wrong"), ("", "")):
        c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="x",
                        protocol=mqtt.MQTTv5)
        if user:
            c.username_pw_set(user, password)
        codes: list[int] = []
        c.on_connect = lambda _c, _u, _f, rc, _p, codes=codes: codes.append(rc.value)
        c.connect("127.0.0.1", port)
        c.loop_start()
        deadline = time.monotonic() + 5
        while not codes and time.monotonic() < deadline:
            time.sleep(0.01)
        c.loop_stop()
        assert codes and codes[0] in (134, 135), codes  # bad credentials / not authorized


def test_own_pbkdf2_hashes_work_without_mosquitto_passwd(tmp_path: Path, mosquitto_factory):
    port = free_port()
    files = write_broker_config(tmp_path / "b", ["dev-a"], port=port, listen="127.0.0.1",
                                use_tool=False)
    assert files.password_file.read_text().startswith("cloud:$7$101$")
    assert oct(files.password_file.stat().st_mode & 0o777) == "0o600"
    mosquitto_factory(files.config.read_text(), port=port)
    a = Client(port, "dev-a", files.passwords["dev-a"])
    assert a.connack == 0
    assert a.publish(f"{P}/dev-a/telemetry", b"ok") in (0, 16)  # 16: no subscribers
    a.close()


def test_hash_format() -> None:
    h = hash_password("secret", salt=b"0123456789ab")
    assert h.startswith("$7$101$MDEyMzQ1Njc4OWFi$") and len(h.split("$")[4]) == 88


def test_password_files_are_private(tmp_path: Path, capsys) -> None:
    assert main(["broker-config", "--out", str(tmp_path / "b"), "--devices", "cam-1",
                 "--password-dir", str(tmp_path / "pw")]) == 0
    out = capsys.readouterr().out
    path = tmp_path / "pw" / "cam-1.password"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert path.read_text().strip() not in out
    assert main(["broker-config", "--out", str(tmp_path / "c"), "--devices", "bad id"]) == 2
