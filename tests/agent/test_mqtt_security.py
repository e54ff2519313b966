"""TLS, mutual TLS and password authentication of the MQTT link, against a real mosquitto."""

from __future__ import annotations

import datetime as dt
import ipaddress
import subprocess
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.config import MqttConfig
from agent.link.client import MqttLink
from shared.messages import DeviceState, encode_message


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    ca: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_pki(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    _write(folder / "ca", ca_key, _cert("test-ca", ca_key, "test-ca", ca_key, ca=True))
    for name in ("server", "dev-1"):
        key = ec.generate_private_key(ec.SECP256R1())
        _write(folder / name, key, _cert(name, key, "test-ca", ca_key))
    return folder


def state(online: bool) -> bytes:
    return encode_message(DeviceState("dev-1", online, time.time()))


def connects(config: MqttConfig, within: float = 5.0) -> bool:
    link = MqttLink("dev-1", config, state, lambda c, p: None)
    link.start()
    try:
        return link.connected.wait(within)
    finally:
        link.stop()


def test_mutual_tls(tmp_path: Path, mosquitto_factory) -> None:  # type: ignore[no-untyped-def]
    pki = make_pki(tmp_path / "pki")
    broker = mosquitto_factory(
        "listener {port} 127.0.0.1\n"
        f"cafile {pki / 'ca.pem'}\ncertfile {pki / 'server.pem'}\nkeyfile {pki / 'server.key'}\n"
        "require_certificate true\n"
    )
    base = dict(host=broker.host, port=broker.port, reconnect_min_s=0.2, reconnect_max_s=0.5)
    assert connects(
        MqttConfig(
            **base,
            tls_ca=pki / "ca.pem",
            tls_cert=pki / "dev-1.pem",  # type: ignore[arg-type]
            tls_key=pki / "dev-1.key",
        )
    )
    # without a client certificate the broker refuses the handshake
    assert not connects(MqttConfig(**base, tls_ca=pki / "ca.pem"), within=1.5)  # type: ignore[arg-type]
    # a plain TCP client does not get in either
    assert not connects(MqttConfig(**base), within=1.5)  # type: ignore[arg-type]


def test_server_tls_with_a_ca(tmp_path: Path, mosquitto_factory) -> None:  # type: ignore[no-untyped-def]
    pki = make_pki(tmp_path / "pki")
    broker = mosquitto_factory(
        "listener {port} 127.0.0.1\n"
        f"certfile {pki / 'server.pem'}\nkeyfile {pki / 'server.key'}\n"
    )
    base = dict(host=broker.host, port=broker.port, reconnect_min_s=0.2, reconnect_max_s=0.5)
    assert connects(MqttConfig(**base, tls_ca=pki / "ca.pem"))  # type: ignore[arg-type]
    # a CA that did not sign the server's certificate is refused
    other = make_pki(tmp_path / "other")
    assert not connects(MqttConfig(**base, tls_ca=other / "ca.pem"), within=1.5)  # type: ignore[arg-type]


def test_username_and_password_from_a_file(tmp_path: Path, mosquitto_factory) -> None:  # type: ignore[no-untyped-def]
    passwd = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(passwd), "dev-1", "s3cret"],
        check=True,
        capture_output=True,
        timeout=10,
    )
    broker = mosquitto_factory(f"allow_anonymous false\npassword_file {passwd}\n")
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.write_text("s3cret\n")
    bad.write_text("wrong\n")
    base = dict(
        host=broker.host,
        port=broker.port,
        reconnect_min_s=0.2,
        reconnect_max_s=0.5,
        username="dev-1",
    )
    assert connects(MqttConfig(**base, password_file=good))  # type: ignore[arg-type]
    assert not connects(MqttConfig(**base, password_file=bad), within=1.5)  # type: ignore[arg-type]
    assert not connects(MqttConfig(host=broker.host, port=broker.port), within=1.5)
