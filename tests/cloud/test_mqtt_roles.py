"""The cloud's MQTT credentials per role (`[mqtt.<role>]`), and mutual TLS for its links."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from cloud.config import CloudConfigInvalid, CloudRole, parse_cloud_config
from cloud.mqtt import BrokerUnavailable, CloudLink
from tests.agent.test_mqtt_security import _cert, _write, make_pki


def test_role_tables_override_the_shared_mqtt_keys(tmp_path: Path) -> None:
    for name in ("shared.pw", "ingest.pw", "ca.pem", "ingest.pem", "ingest.key"):
        (tmp_path / name).write_text("x\n")
    config = parse_cloud_config(
        """
[mqtt]
username = "cloud"
password_file = "shared.pw"
tls_ca = "ca.pem"

[mqtt.ingest]
username = "litefleet-ingest"
password_file = "ingest.pw"
tls_cert = "ingest.pem"
tls_key = "ingest.key"

[mqtt.operator]
username = "litefleet-operator"
""",
        base_dir=tmp_path,
    ).mqtt
    ingest = config.for_role(CloudRole.INGEST)
    assert (ingest.username, ingest.password_file, ingest.tls_cert, ingest.tls_key) == (
        "litefleet-ingest",
        tmp_path / "ingest.pw",
        tmp_path / "ingest.pem",
        tmp_path / "ingest.key",
    )
    assert ingest.tls_ca == tmp_path / "ca.pem"  # not a role key: shared
    operator = config.for_role(CloudRole.OPERATOR)
    assert (operator.username, operator.password_file, operator.tls_cert) == (
        "litefleet-operator",
        tmp_path / "shared.pw",
        None,
    )
    controller = config.for_role(CloudRole.CONTROLLER)  # no table: the [mqtt] keys
    assert (controller.username, controller.password_file) == ("cloud", tmp_path / "shared.pw")


def test_role_tables_are_checked(tmp_path: Path) -> None:
    (tmp_path / "k.key").write_text("x\n")
    with pytest.raises(CloudConfigInvalid) as e:
        parse_cloud_config(
            """
[mqtt]
tls_key = "k.key"

[mqtt.ingest]
user = "typo"
password_file = "missing.pw"
tls_key = "k.key"

[mqtt.controller]
username = 7
""",
            base_dir=tmp_path,
        )
    assert sorted(p.split(": ", 1)[1] for p in e.value.problems) == sorted(
        [
            "mqtt.ingest.user: unknown key",
            "mqtt.controller.username: expected a string, got int",
            f"mqtt.ingest.password_file: {tmp_path / 'missing.pw'} does not exist",
            "mqtt.tls_key: a client key needs its certificate (tls_cert)",
            "mqtt.ingest.tls_key: a client key needs its certificate (tls_cert)",
        ]
    )


def test_a_role_connects_with_its_client_certificate(tmp_path: Path, mosquitto_factory) -> None:  # type: ignore[no-untyped-def]
    pki = make_pki(tmp_path / "pki")
    ca_key_path = pki / "ca.key"
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    ca_key = load_pem_private_key(ca_key_path.read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    _write(pki / "litefleet-ingest", key, _cert("litefleet-ingest", key, "test-ca", ca_key))
    broker = mosquitto_factory(
        "listener {port} 127.0.0.1\n"
        f"cafile {pki / 'ca.pem'}\ncertfile {pki / 'server.pem'}\nkeyfile {pki / 'server.key'}\n"
        "require_certificate true\nuse_identity_as_username true\n"
    )
    config = parse_cloud_config(
        f"""
[mqtt]
host = "127.0.0.1"
port = {broker.port}
tls_ca = "{pki / "ca.pem"}"

[mqtt.ingest]
tls_cert = "{pki / "litefleet-ingest.pem"}"
tls_key = "{pki / "litefleet-ingest.key"}"
""",
        base_dir=tmp_path,
    ).mqtt
    link = CloudLink(config, "litefleet-cloud-ingest", role=CloudRole.INGEST)
    link.start(timeout=10)
    try:
        assert link.connected
    finally:
        link.stop()
    assert "u'litefleet-ingest'" in broker.log()  # the certificate's CN is its user name
    # the operator role has no certificate here: the broker refuses the handshake
    with pytest.raises(BrokerUnavailable):
        CloudLink(config, "litefleet-cloud-cmd", role=CloudRole.OPERATOR).start(timeout=2)
