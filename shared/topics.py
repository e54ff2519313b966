"""MQTT topic names of the contract, with device-id validation at both ends.

{prefix}/devices/{id}/state       device -> cloud, retained
{prefix}/devices/{id}/telemetry   device -> cloud
{prefix}/devices/{id}/events      device -> cloud
{prefix}/devices/{id}/update      device -> cloud
{prefix}/devices/{id}/capture     device -> cloud (upload grants asked for samples)
{prefix}/devices/{id}/desired     cloud -> device, retained
{prefix}/devices/{id}/cmd         cloud -> device
{prefix}/trust/root               cloud -> every device, retained: the root chain
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from shared.errors import InvalidDeviceId, MalformedDocument

__all__ = [
    "DEFAULT_PREFIX",
    "Channel",
    "FleetChannel",
    "ParsedTopic",
    "device_subscription",
    "fleet_subscription",
    "fleet_topic",
    "parse_topic",
    "topic",
    "validate_device_id",
]

DEFAULT_PREFIX = "litefleet/v1"
DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class Channel(StrEnum):
    STATE = "state"
    TELEMETRY = "telemetry"
    EVENTS = "events"
    UPDATE = "update"
    DESIRED = "desired"
    CMD = "cmd"
    CAPTURE = "capture"

    @property
    def from_device(self) -> bool:
        return self not in (Channel.DESIRED, Channel.CMD)

    @property
    def retained(self) -> bool:
        return self in (Channel.STATE, Channel.DESIRED)


class FleetChannel(StrEnum):
    """Cloud -> device topics shared by the whole fleet (not under `devices/{id}/`)."""

    TRUST_ROOT = "trust/root"  # retained: the chain of signed roots (`shared.root`)

    @property
    def retained(self) -> bool:
        return True


def fleet_topic(channel: FleetChannel, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}/{channel.value}"


@dataclass(frozen=True)
class ParsedTopic:
    device_id: str
    channel: Channel


def validate_device_id(device_id: str) -> str:
    if not isinstance(device_id, str) or not DEVICE_ID_RE.match(device_id):
        raise InvalidDeviceId(f"device id {device_id!r} is not [A-Za-z0-9_-]{{1,64}}")
    return device_id


def topic(device_id: str, channel: Channel, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}/devices/{validate_device_id(device_id)}/{channel.value}"


def device_subscription(device_id: str, channel: Channel, prefix: str = DEFAULT_PREFIX) -> str:
    return topic(device_id, channel, prefix)


def fleet_subscription(channel: Channel, prefix: str = DEFAULT_PREFIX) -> str:
    """The wildcard the cloud subscribes to for one channel of every device."""
    return f"{prefix}/devices/+/{channel.value}"


def parse_topic(name: str, prefix: str = DEFAULT_PREFIX) -> ParsedTopic:
    head = f"{prefix}/devices/"
    if not name.startswith(head):
        raise MalformedDocument(f"topic {name!r} is outside {head}", "topic")
    parts = name[len(head) :].split("/")
    if len(parts) != 2:
        raise MalformedDocument(f"topic {name!r} is not {head}<id>/<channel>", "topic")
    device_id, channel = parts
    validate_device_id(device_id)
    try:
        return ParsedTopic(device_id, Channel(channel))
    except ValueError as e:
        raise MalformedDocument(f"unknown channel {channel!r}", "topic") from e
