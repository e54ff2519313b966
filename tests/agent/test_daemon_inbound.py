"""Malformed input on `desired` and `cmd` is logged and dropped; the agent keeps running.

A real agent process, a real broker: garbage, wrong schemas, 10 MB payloads, documents for
another device, unsigned and replayed commands. Afterwards a valid signed `report-now` still
gets a fresh telemetry record out, and the inference loop is still counting frames.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from shared.builders import build_deployment, build_release, package_model
from shared.documents import IOSignature, TensorSpec, format_time
from shared.envelope import sign_envelope
from shared.keys import SigningKey
from shared.messages import Command, encode_message

DEVICE = "dev-1"
PREFIX = f"litefleet/v1/devices/{DEVICE}"
DIGITS_IO = IOSignature(
    inputs=(TensorSpec("image", (1, 28, 28, 1), "float32"),),
    outputs=(TensorSpec("probs", (1, 10), "float32"),),
)


def signed_command(
    key: SigningKey, command: str = "report-now", device_id: str = DEVICE, nonce: str | None = None
) -> bytes:
    now = datetime.now(UTC)
    cmd = Command(
        device_id,
        command,
        format_time(now - timedelta(seconds=5)),
        format_time(now + timedelta(minutes=5)),
        nonce or uuid.uuid4().hex,
    )
    return json.dumps(sign_envelope(json.loads(encode_message(cmd)), [key])).encode()


def deployment_for(device_id: str, key: SigningKey) -> bytes:
    model = b"\x00" * 64
    package = package_model(model)
    now = datetime.now(UTC)
    release = build_release(
        name="digits",
        version=7,
        profile="x86-gateway",
        target=package.target,
        artifact=package.artifact("http://127.0.0.1:9/none.zst"),
        io=DIGITS_IO,
        keys=[key],
        now=now,
    )
    doc = build_deployment(
        release=release, device_id=device_id, rollout_id="r-1", keys=[key], now=now
    )
    return json.dumps(doc).encode()


def publish(broker, topic: str, payload: bytes, retain: bool = False) -> None:  # type: ignore[no-untyped-def]
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"op-{uuid.uuid4().hex[:6]}")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def telemetry(sub) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    return [json.loads(p) for p in sub.payloads("/telemetry")]


def test_malformed_desired_and_cmd_are_dropped_and_the_agent_keeps_running(  # type: ignore[no-untyped-def]
    mosquitto, mqtt_subscriber, agent_process
) -> None:
    key, stranger = SigningKey.generate(), SigningKey.generate()
    sub = mqtt_subscriber(mosquitto, [f"{PREFIX}/+"])
    agent = agent_process(mosquitto, [key.public.hex], telemetry_s=3600)
    assert sub.wait_for(
        lambda ms: any(m.topic.endswith("/state") and json.loads(m.payload)["online"] for m in ms),
        30,
    ), agent.log()[-3000:]
    time.sleep(0.5)  # subscriptions settle after the state publish

    ten_mb = b"{" + b" " * (10 * 1024 * 1024) + b"}"
    # one at a time: the newest desired message wins, so one replaced before the deployment
    # worker took it would (rightly) never be reported
    for n, payload in enumerate(
        (
            b"not json at all",
            b'{"schema": "litefleet.nonsense/9"}',
            ten_mb,
            deployment_for("someone-else", key),
        ),
        start=1,
    ):
        publish(mosquitto, f"{PREFIX}/desired", payload)
        assert sub.wait_for(lambda ms, n=n: len(sub.payloads("/update")) >= n, 20), agent.log()[
            -3000:
        ]
    replayed_nonce = uuid.uuid4().hex
    for payload in (
        b"\xff\xfe garbage",
        json.dumps({"signed": {"schema": "litefleet.state/1"}, "signatures": []}).encode(),
        ten_mb,
        signed_command(key, device_id="someone-else"),
        signed_command(stranger),
        signed_command(key, command="format-disk"),
        signed_command(key, nonce=replayed_nonce),
        signed_command(key, nonce=replayed_nonce),
    ):
        publish(mosquitto, f"{PREFIX}/cmd", payload)

    # exactly one report-now got through: the replay was refused
    assert sub.wait_for(lambda ms: len(telemetry(sub)) >= 1, 20), agent.log()[-3000:]
    time.sleep(1.0)
    assert len(telemetry(sub)) == 1
    assert agent.alive()

    log = agent.log()
    assert log.count("dropped a cmd message") >= 6, log[-3000:]
    for reason in ("malformed", "wrong_device", "bad_signature", "replayed"):
        assert f"dropped a cmd message: {reason}" in log, reason
    assert log.count("over the 1048576-byte cap") == 2  # the 10 MB payloads, one per topic
    # the deployments were refused with typed reasons on the update topic
    reasons = {json.loads(p)["reason"] for p in sub.payloads("/update")}
    assert {"malformed", "wrong_device", "payload_too_large"} <= reasons, (reasons, log[-3000:])

    # still serving: a second report-now shows the loop counting frames
    first = telemetry(sub)[0]
    time.sleep(1.0)
    publish(mosquitto, f"{PREFIX}/cmd", signed_command(key))
    assert sub.wait_for(lambda ms: len(telemetry(sub)) >= 2, 20)
    second = telemetry(sub)[1]
    assert second["seq"] > first["seq"]
    assert second["frames"] > first["frames"] > 0
    assert agent.terminate() == 0
