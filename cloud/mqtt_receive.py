"""paho's client with a cheaper path for receiving a stream of QoS 0/1 messages.

The ingester receives thousands of messages a second on one paho client, and paho's own
read path costs more per message than everything else the ingester does: it reads each
packet with several one-byte `recv` calls and a `select` per packet, parses MQTT 5
properties into a `Properties` object (which the ingester never reads), builds an
`MQTTMessage` and matches its topic against the per-topic callbacks. `ReceiveClient`
changes three things and nothing about the protocol, the session or reconnects:

    reads        one `recv` of up to 64 KiB fills a buffer that paho's packet reader
                 consumes; `loop_read` keeps going while buffered bytes remain
    PUBLISH      QoS 0/1 packets go straight to `sink(topic, payload, mid, qos)` (topic as
                 bytes; properties skipped); QoS 2, topic aliases and anything odd take
                 paho's own path (and reach `on_message`)
    acks         `ack_many` queues the PUBACKs of a whole batch as one write

It leans on paho 2's internals (`_sock_recv`, `_handle_publish`, `_in_packet`,
`_packet_queue`): `supported()` says whether they are there, and `CloudLink` uses the plain
client when they are not. tests/cloud/test_ingest.py drives it against a real mosquitto.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Iterable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

__all__ = ["RawSink", "ReceiveClient", "supported"]

RawSink = Callable[[bytes, bytes, int, int], None]  # (topic, payload, mid, qos)

_READ_SIZE = 64 * 1024
_PUBACK = 0x40
_PUBACK_PACKET = struct.Struct("!BBH")
_U16 = struct.Struct("!H")
_INTERNALS = (
    "_sock_recv",
    "_handle_publish",
    "_packet_queue",
    "_in_packet",
    "_protocol",
    "_manual_ack",
    "_sock",
)


@functools.cache
def supported() -> bool:
    """Whether this paho has the internals `ReceiveClient` overrides."""
    probe = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    return all(hasattr(probe, name) for name in _INTERNALS)


class ReceiveClient(mqtt.Client):
    def __init__(self, *args: Any, sink: RawSink, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sink = sink
        self._rsock: Any = None
        self._rbuf = b""
        self._rpos = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rsock is not self._sock:  # a new connection: nothing buffered is valid
            self._rsock, self._rbuf, self._rpos = self._sock, b"", 0
        pos = self._rpos
        if pos >= len(self._rbuf):
            data: bytes = super()._sock_recv(_READ_SIZE)
            if len(data) <= bufsize:  # also b"": the connection closed
                self._rbuf, self._rpos = b"", 0
                return data
            self._rbuf, pos = data, 0
        self._rpos = pos + bufsize
        return self._rbuf[pos : pos + bufsize]

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc: MQTTErrorCode = super().loop_read(max_packets)
        while (
            rc == MQTTErrorCode.MQTT_ERR_SUCCESS
            and self._sock is not None
            and self._rsock is self._sock
            and self._rpos < len(self._rbuf)
        ):
            rc = super().loop_read(max_packets)
        return rc

    def _handle_publish(self) -> MQTTErrorCode:
        header: int = self._in_packet["command"]
        qos = (header & 0x06) >> 1
        packet: bytearray = self._in_packet["packet"]
        end = len(packet)
        if qos == 2 or (qos == 1 and not self._manual_ack) or end < 2:
            return super()._handle_publish()
        (size,) = _U16.unpack_from(packet, 0)
        pos = 2 + size
        topic = bytes(packet[2:pos])
        mid = 0
        if qos:
            if pos + 2 > end:
                return super()._handle_publish()
            (mid,) = _U16.unpack_from(packet, pos)
            pos += 2
        if self._protocol == mqtt.MQTTv5:
            length, shift = 0, 0
            while True:  # the properties' length, a variable byte integer
                if pos >= end or shift > 21:
                    return super()._handle_publish()
                byte = packet[pos]
                pos += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            pos += length
        if not topic or pos > end:  # a topic alias, or a malformed packet: paho decides
            return super()._handle_publish()
        self._sink(topic, bytes(packet[pos:]), mid, qos)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def ack_many(self, mids: Iterable[int]) -> None:
        """Acknowledge QoS 1 messages (manual acks) with one queued write."""
        blob = b"".join(_PUBACK_PACKET.pack(_PUBACK, 2, mid) for mid in mids)
        if blob:
            self._packet_queue(_PUBACK, blob, 0, 1)
