"""`litefleet broker-config` against a real mosquitto started from the generated files: each
device stays on its own topics and its own session, each cloud role on what it needs."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud.broker_config import hash_password
from cloud.cli import main
from tests.agent.test_mqtt_security import _cert, _write, make_pki
from tests.cloud.generated_broker import GeneratedBroker, generated_broker
from tests.conftest import free_port, mosquitto_binary

P = "litefleet/v1/devices"
INGEST, CONTROLLER, OPERATOR = "litefleet-ingest", "litefleet-controller", "litefleet-operator"
AS_ROOT = os.geteuid() == 0
HAS_MOSQUITTO_USER = any(u.pw_name == "mosquitto" for u in pwd.getpwall())


class Client:
    def __init__(
        self,
        port: int,
        user: str,
        password: str | None,
        *,
        client_id: str | None = None,
        persistent: bool = False,
        wait: bool = True,
        tls: tuple[Path, Path, Path] | None = None,
    ) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.pubacks: dict[int, int] = {}
        self.subacks: dict[int, list[int]] = {}
        self.connack: int | None = None
        self.session_present: bool | None = None
        self.disconnects: list[int] = []
        self._event = threading.Event()
        c = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id or user,
            protocol=mqtt.MQTTv5,
        )
        c.username_pw_set(user, password)
        if tls is not None:
            ca, cert, key = tls
            c.tls_set(ca_certs=str(ca), certfile=str(cert), keyfile=str(key))
        c.on_connect = self._on_connect
        c.on_disconnect = lambda _c, _u, _f, rc, _p: self.disconnects.append(rc.value)
        c.on_message = lambda _c, _u, m: self.messages.append((m.topic, bytes(m.payload)))
        c.on_publish = lambda _c, _u, mid, rc, _p: self.pubacks.__setitem__(mid, rc.value)
        c.on_subscribe = lambda _c, _u, mid, rcs, _p: self.subacks.__setitem__(
            mid, [r.value for r in rcs]
        )
        c.reconnect_delay_set(0.1, 0.5)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        if persistent:
            props.SessionExpiryInterval = 3600
        c.connect("127.0.0.1", port, clean_start=not persistent, properties=props)
        c.loop_start()
        self.client = c
        if wait:
            assert self._event.wait(10), "no CONNACK"

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        self.connack = reason_code.value
        self.session_present = bool(getattr(flags, "session_present", False))
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


def wait_until(check, timeout: float = 15.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return bool(check())


def refused(port: int, user: str, password: str) -> int | None:
    """The CONNACK reason code of one attempt (None: no answer)."""
    c = Client(port, user, password, wait=False)
    ok = c._event.wait(5)
    c.client.loop_stop()
    return c.connack if ok else None


@pytest.fixture
def broker() -> Iterator[GeneratedBroker]:
    with generated_broker(["dev-a", "dev-b"]) as b:
        yield b


@pytest.fixture
def clients(broker: GeneratedBroker) -> Iterator[dict[str, Client]]:
    made: dict[str, Client] = {}
    for user in (INGEST, OPERATOR, CONTROLLER):
        made[user] = Client(broker.cloud_port, user, broker.password(user))
    for user in ("dev-a", "dev-b"):
        made[user] = Client(broker.port, user, broker.password(user))
    assert all(c.connack == 0 for c in made.values())
    yield made
    for c in made.values():
        c.close()


def test_devices_cannot_leave_their_own_topics(clients: dict[str, Client]) -> None:
    ingest, operator, a, b = clients[INGEST], clients[OPERATOR], clients["dev-a"], clients["dev-b"]
    assert ingest.subscribe(f"{P}/#") == [1]
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
    assert operator.publish(f"{P}/dev-b/desired", b"for-b", retain=True) == 0
    assert operator.publish(f"{P}/dev-a/desired", b"for-a", retain=True) == 0
    assert wait_until(
        lambda: (
            (f"{P}/dev-a/desired", b"for-a") in a.messages
            and (f"{P}/dev-b/desired", b"for-b") in b.messages
        )
    ), (a.messages, b.messages)
    time.sleep(1.0)  # anything else that was going to arrive has arrived
    # the ingester reads device reports, and not what the cloud sends to devices
    assert set(ingest.messages) == {
        (f"{P}/dev-a/telemetry", b"own"),
        (f"{P}/dev-a/update", b"own-update"),
    }
    assert set(a.messages) == {(f"{P}/dev-a/desired", b"for-a")}  # not B's, even via +
    assert b.messages == [(f"{P}/dev-b/desired", b"for-b")]


def test_each_cloud_role_has_only_what_it_needs(
    broker: GeneratedBroker, clients: dict[str, Client]
) -> None:
    ingest, operator, controller = clients[INGEST], clients[OPERATOR], clients[CONTROLLER]
    ok = (0, 16)  # 16: accepted, no subscribers
    assert controller.publish(f"{P}/dev-a/desired", b"wave", retain=True) in ok
    assert operator.publish(f"{P}/dev-a/cmd", b"report-now") in ok
    assert ingest.publish(f"{P}/dev-a/desired", b"x", retain=True) == 135
    assert ingest.publish(f"{P}/dev-a/telemetry", b"x") == 135
    # the controller answers capture requests with upload grants on cmd; it sends no state
    assert controller.publish(f"{P}/dev-a/cmd", b"x") in ok
    assert controller.publish(f"{P}/dev-a/telemetry", b"x") == 135
    assert operator.publish(f"{P}/dev-a/state", b"x", retain=True) == 135
    # devices cannot log in where the cloud does, nor the cloud's users where devices do
    assert refused(broker.cloud_port, "dev-a", broker.password("dev-a")) in (134, 135)
    assert refused(broker.port, INGEST, broker.password(INGEST)) in (134, 135)


def test_a_device_cannot_take_over_another_device_or_the_cloud(broker: GeneratedBroker) -> None:
    """Device A, with its own valid password, asks for dev-b's client id and for the
    ingester's; the broker gives it its own (dev-a) each time, so dev-b keeps its session and
    the cloud's persistent session keeps collecting what arrives while it is away."""
    ingest_id = "litefleet-cloud-ingest"
    ingest = Client(
        broker.cloud_port, INGEST, broker.password(INGEST), client_id=ingest_id, persistent=True
    )
    assert ingest.subscribe(f"{P}/+/telemetry") == [1]
    ingest.close()  # away: the session lives on and queues for it
    b = Client(broker.port, "dev-b", broker.password("dev-b"), persistent=True)
    operator = Client(broker.cloud_port, OPERATOR, broker.password(OPERATOR))
    try:
        assert b.subscribe(f"{P}/dev-b/desired") == [1]
        for n, wanted in enumerate(("dev-b", ingest_id)):  # clean start: a takeover would
            intruder = Client(
                broker.port,
                "dev-a",
                broker.password("dev-a"),  # end the session
                client_id=wanted,
            )
            try:
                assert intruder.connack == 0
                # connected as itself: dev-a's own topic works
                assert intruder.publish(f"{P}/dev-a/telemetry", f"a-{n}".encode()) == 0
                # the real dev-b was not disconnected: it publishes and receives on its session
                for seq in range(n * 5, n * 5 + 5):
                    assert b.publish(f"{P}/dev-b/telemetry", f"b-{seq}".encode()) == 0
                assert (
                    operator.publish(f"{P}/dev-b/desired", f"for-b-{n}".encode(), retain=True) == 0
                )
                assert wait_until(
                    lambda n=n: (f"{P}/dev-b/desired", f"for-b-{n}".encode()) in b.messages
                )
                assert b.disconnects == [] and intruder.disconnects == []
            finally:
                intruder.close()
    finally:
        operator.close()
    # the cloud comes back to its session, and finds everything queued for it
    back = Client(
        broker.cloud_port, INGEST, broker.password(INGEST), client_id=ingest_id, persistent=True
    )
    try:
        assert back.session_present is True
        want = {(f"{P}/dev-b/telemetry", f"b-{n}".encode()) for n in range(10)}
        want |= {(f"{P}/dev-a/telemetry", b"a-0"), (f"{P}/dev-a/telemetry", b"a-1")}
        assert wait_until(lambda: set(back.messages) >= want), back.messages
        assert b.disconnects == []
    finally:
        back.close()
        b.close()
    log = broker.log()
    assert "as dev-a (p5" in log and f"as {ingest_id} (p5" in log  # both ids were in use


def test_with_mutual_tls_the_certificate_names_the_device(tmp_path: Path, request, capsys) -> None:  # type: ignore[no-untyped-def]
    """--require-certificate: the CN is the user name and so the client id; dev-a with its own
    certificate asking for dev-b's client id gets its own, and dev-b stays connected."""
    pki = make_pki(tmp_path / "pki")
    ca_key = load_pem_private_key((pki / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    for device in ("dev-a", "dev-b"):
        key = ec.generate_private_key(ec.SECP256R1())
        _write(pki / device, key, _cert(device, key, "test-ca", ca_key))
    server = (
        "--tls-cert",
        str(pki / "server.pem"),
        "--tls-key",
        str(pki / "server.key"),
        "--tls-ca",
        str(pki / "ca.pem"),
        "--require-certificate",
    )
    if AS_ROOT and HAS_MOSQUITTO_USER:  # pytest's folders are closed to the broker's user
        assert (
            main(["broker-config", "--out", str(tmp_path / "b"), "--devices", "dev-a", *server])
            == 2
        )
        assert not (tmp_path / "b" / "passwd").exists()
    shared = Path(tempfile.mkdtemp(dir="/tmp"))  # where the broker's user may read them
    shutil.copytree(pki, shared / "pki")
    shared.chmod(0o755)
    (shared / "pki").chmod(0o755)
    for f in (shared / "pki").iterdir():
        f.chmod(0o644)
    request.addfinalizer(lambda: shutil.rmtree(shared, ignore_errors=True))
    pki = shared / "pki"
    server = (
        "--tls-cert",
        str(pki / "server.pem"),
        "--tls-key",
        str(pki / "server.key"),
        "--tls-ca",
        str(pki / "ca.pem"),
        "--require-certificate",
    )

    def tls(device: str) -> tuple[Path, Path, Path]:
        return pki / "ca.pem", pki / f"{device}.pem", pki / f"{device}.key"

    with generated_broker(["dev-a", "dev-b"], *server) as broker:
        assert set(broker.password_files) == {INGEST, CONTROLLER, OPERATOR}  # no device ones
        ingest = Client(broker.cloud_port, INGEST, broker.password(INGEST))
        b = Client(broker.port, "dev-b", None, tls=tls("dev-b"))
        a = Client(broker.port, "dev-a", None, client_id="dev-b", tls=tls("dev-a"))
        try:
            assert (b.connack, a.connack) == (0, 0)
            assert ingest.subscribe(f"{P}/+/telemetry") == [1]
            assert a.publish(f"{P}/dev-a/telemetry", b"from-a") == 0  # its own, as dev-a
            assert a.publish(f"{P}/dev-b/telemetry", b"spoof") == 135
            assert b.publish(f"{P}/dev-b/telemetry", b"from-b") == 0
            assert wait_until(
                lambda: (
                    set(ingest.messages)
                    == {(f"{P}/dev-a/telemetry", b"from-a"), (f"{P}/dev-b/telemetry", b"from-b")}
                )
            )
            assert b.disconnects == []
        finally:
            for c in (a, b, ingest):
                c.close()
        # no certificate, no connection (the TLS handshake fails before any CONNACK)
        assert refused(broker.port, "dev-a", "anything") is None
        # a new device needs a certificate, not a password: --add says so, changes nothing
        passwd = broker.out / "passwd"
        before = passwd.read_text()
        capsys.readouterr()
        assert main(["broker-config", "--out", str(broker.out), "--devices", "dev-c", "--add"]) == 2
        err = capsys.readouterr().err
        assert "admits devices by certificate" in err and err.count("\n") == 1
        assert passwd.read_text() == before


@pytest.mark.skipif(not (AS_ROOT and HAS_MOSQUITTO_USER), reason="needs root and a mosquitto user")
def test_files_belong_to_the_broker_user_and_persistence_is_on(broker: GeneratedBroker) -> None:
    mosquitto = pwd.getpwnam("mosquitto")
    for name in ("passwd", "acl", "cloud-passwd", "cloud-acl"):
        st = (broker.out / name).stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (
            mosquitto.pw_uid,
            mosquitto.pw_gid,
            0o600,
        ), name
    data = broker.out / "data"
    st = data.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (mosquitto.pw_uid, 0o700)
    conf = broker.config_path.read_text().splitlines()
    assert "user mosquitto" in conf and "persistence true" in conf
    assert f"persistence_location {data}/" in conf
    broker.stop()  # a clean stop saves the sessions where the broker's user could write
    assert (data / "mosquitto.db").exists()


@pytest.mark.skipif(not (AS_ROOT and HAS_MOSQUITTO_USER), reason="needs root and a mosquitto user")
def test_a_folder_the_broker_user_cannot_reach_is_refused(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    assert main(["broker-config", "--out", str(closed / "b"), "--devices", "cam-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: user mosquitto cannot reach") and err.count("\n") == 1
    assert not (closed / "b" / "passwd").exists()


def test_add_gives_new_devices_passwords_and_changes_nobody_elses(
    broker: GeneratedBroker, capsys
) -> None:  # type: ignore[no-untyped-def]
    passwd = broker.out / "passwd"
    before = passwd.read_text()
    # running it again without --add would rotate every password: refused, nothing changed
    assert main(["broker-config", "--out", str(broker.out), "--devices", "dev-c"]) == 2
    assert "--add" in capsys.readouterr().err and passwd.read_text() == before
    pw = broker.out.parent / "passwords"
    assert (
        main(
            [
                "broker-config",
                "--out",
                str(broker.out),
                "--devices",
                "dev-c",
                "--add",
                "--password-dir",
                str(pw),
            ]
        )
        == 0
    )
    pid_file = broker.out / "data" / "mosquitto.pid"
    assert f"kill -HUP $(cat {pid_file})" in capsys.readouterr().out
    assert passwd.read_text().startswith(before)  # dev-a and dev-b: the same lines
    assert main(["broker-config", "--out", str(broker.out), "--devices", "dev-a", "--add"]) == 2
    assert "already" in capsys.readouterr().err
    if AS_ROOT and HAS_MOSQUITTO_USER:
        assert passwd.stat().st_uid == pwd.getpwnam("mosquitto").pw_uid
    assert broker.process is not None
    broker.process.send_signal(signal.SIGHUP)  # mosquitto reads its password files again
    new = (pw / "dev-c.password").read_text().strip()
    assert wait_until(lambda: refused(broker.port, "dev-c", new) == 0)
    for device in ("dev-a", "dev-b"):  # the old passwords still work
        assert refused(broker.port, device, broker.password(device)) == 0


def test_wrong_password_and_anonymous_are_refused(broker: GeneratedBroker) -> None:
    for port in (broker.port, broker.cloud_port):
        for user, password in (("dev-a", "wrong"), (INGEST, "wrong"), ("", "")):
            c = mqtt.Client(
                callback_api_version=CallbackAPIVersion.VERSION2,
                client_id="x",
                protocol=mqtt.MQTTv5,
            )
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


def test_hash_format() -> None:
    h = hash_password("secret", salt=b"0123456789ab")
    assert h.startswith("$7$101$MDEyMzQ1Njc4OWFi$") and len(h.split("$")[4]) == 88


def test_password_files_are_private(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "b"
    assert (
        main(
            [
                "broker-config",
                "--out",
                str(out),
                "--devices",
                "cam-1",
                "--broker-user",
                pwd.getpwuid(os.getuid()).pw_name,
                "--password-dir",
                str(tmp_path / "pw"),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    path = tmp_path / "pw" / "cam-1.password"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert path.read_text().strip() not in printed
    assert (out / "passwd").read_text().startswith("cam-1:$7$101$")
    assert oct((out / "passwd").stat().st_mode & 0o777) == "0o600"
    assert main(["broker-config", "--out", str(tmp_path / "c"), "--devices", "bad id"]) == 2
    assert (
        main(["broker-config", "--out", str(tmp_path / "d"), "--devices", "litefleet-ingest"]) == 2
    )  # ids of the cloud's users are not for devices
    assert "kept for the cloud" in capsys.readouterr().err


def test_a_broker_started_with_d_writes_its_pid_where_the_guide_reads_it(capsys) -> None:  # type: ignore[no-untyped-def]
    """Without systemd (`mosquitto -c ... -d`), the pid file the config names lets `--add`'s
    reload reach exactly this broker."""
    root = Path(tempfile.mkdtemp(prefix="litefleet-broker-", dir="/tmp"))
    root.chmod(0o755)
    out, pw, port = root / "broker", root / "passwords", free_port()
    args = ["--port", str(port), "--listen", "127.0.0.1", "--cloud-port", str(free_port())]
    daemon: int | None = None
    try:
        assert main(["broker-config", "--out", str(out), "--devices", "dev-a", *args]) == 0
        pid_file = out / "data" / "mosquitto.pid"
        assert f"pid_file {pid_file}" in (out / "mosquitto.conf").read_text()
        started = subprocess.run(
            [mosquitto_binary(), "-c", str(out / "mosquitto.conf"), "-d"],
            capture_output=True,
            timeout=30,
        )
        assert started.returncode == 0, started.stderr
        assert wait_until(lambda: pid_file.exists() and pid_file.read_text().strip() != "")
        daemon = int(pid_file.read_text())
        os.kill(daemon, 0)  # the daemon itself, alive
        capsys.readouterr()
        add = ["broker-config", "--out", str(out), "--devices", "dev-c", "--add"]
        assert main([*add, "--password-dir", str(pw)]) == 0
        assert f"kill -HUP $(cat {pid_file})" in capsys.readouterr().out
        new = (pw / "dev-c.password").read_text().strip()
        assert refused(port, "dev-c", new) == 135  # not authorized: the broker has the old file
        os.kill(int(pid_file.read_text()), signal.SIGHUP)  # what the guide says to run
        assert wait_until(lambda: refused(port, "dev-c", new) == 0)
    finally:
        if daemon is not None:
            os.kill(daemon, signal.SIGTERM)
        shutil.rmtree(root, ignore_errors=True)
