import json

import pytest

from shared.errors import InvalidDeviceId, MalformedDocument, PayloadTooLarge, UnknownSchema
from shared.messages import (
    DeviceState,
    Event,
    ModelIdentity,
    TelemetryRecord,
    UpdateStatus,
    decode_message,
    encode_message,
)
from shared.topics import Channel, fleet_subscription, parse_topic, topic

MODEL = ModelIdentity("digits", 2, "ab" * 32)


def test_topics_build_and_parse():
    name = topic("cam-01", Channel.TELEMETRY)
    assert name == "litefleet/v1/devices/cam-01/telemetry"
    parsed = parse_topic(name)
    assert (parsed.device_id, parsed.channel) == ("cam-01", Channel.TELEMETRY)
    assert fleet_subscription(Channel.STATE, "acme/v1") == "acme/v1/devices/+/state"
    assert Channel.STATE.retained and Channel.DESIRED.retained and not Channel.CMD.from_device


@pytest.mark.parametrize("bad", ["", "a/b", "a+b", "#", "x" * 65, "cam 01", "é"])
def test_device_ids_are_validated(bad):
    with pytest.raises(InvalidDeviceId):
        topic(bad, Channel.STATE)


@pytest.mark.parametrize(
    "name",
    [
        "litefleet/v1/devices/cam-01",
        "litefleet/v1/devices/cam-01/nope",
        "other/devices/a/state",
        "litefleet/v1/devices/a/b/state",
        "litefleet/v1/devices/+/state",
    ],
)
def test_foreign_topics_are_refused(name):
    with pytest.raises((MalformedDocument, InvalidDeviceId)):
        parse_topic(name)


@pytest.mark.parametrize(
    "message",
    [
        DeviceState("cam-01", True, 1.5, "0.1.0", "rpi4", MODEL, "probation", "up", 29.5),
        DeviceState("cam-01", False, 2.0),
        TelemetryRecord(
            "cam-01",
            7,
            3.0,
            MODEL,
            frames=10,
            fps=9.5,
            temperature_c=None,
            outputs={"top": [[3, 0.9]]},
        ),
        Event("cam-01", 8, 4.0, "source", {"status": "down"}),
        UpdateStatus(
            "cam-01", 9, 5.0, "r-1", "rejected", "digits", 3, "ab" * 32, reason="bad_signature"
        ),
    ],
)
def test_messages_round_trip(message):
    encoded = encode_message(message)
    assert json.loads(encoded)["schema"] == message.SCHEMA
    assert decode_message(encoded) == message


def test_unknown_schema_and_bad_fields_are_typed_errors():
    with pytest.raises(UnknownSchema):
        decode_message(b'{"schema": "litefleet.telemetry/99", "device_id": "a"}')
    with pytest.raises(UnknownSchema):
        decode_message(b'{"device_id": "a"}')
    with pytest.raises(MalformedDocument) as info:
        decode_message(
            b'{"schema": "litefleet.telemetry/1", "device_id": "a", "seq": "1", "ts": 0}'
        )
    assert info.value.field == "$.seq"
    with pytest.raises(MalformedDocument):
        decode_message(b'{"schema": "litefleet.state/1", "device_id": "a", "online": 1, "ts": 0}')
    with pytest.raises(MalformedDocument):
        decode_message(b"[1, 2]")
    with pytest.raises(PayloadTooLarge):
        decode_message(b"{" + b" " * 100_000 + b"}")
