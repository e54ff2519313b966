"""One simulated device's MQTT session, the way the agent keeps it.

- its own client id (the device id), MQTT 5, a persistent session (clean start off, session
  expiry set), the fleet's retained `trust/root` and its own `desired` subscribed in
  `on_connect` after checking the reason code, the root chain first (as the agent does), so a
  new root is walked before a deployment signed by its keys arrives;
- retained `state`, published on every connect, with a last will that says `online: false`;
- an outbox: every telemetry record and update status gets the next `seq` and stays in the
  outbox until the broker acknowledges it (QoS 1), across disconnects and reconnects, so a
  device that was away delivers what it produced meanwhile (the store keeps each seq once);
- a lost connection is retried with jittered backoff, each time with a fresh paho client that
  resumes the broker-side session.

All of it runs on the fleet's event loop thread (see `cloud.sim.network`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl
from collections.abc import Callable
from typing import Any, cast

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud.config import MqttConfig
from cloud.sim.network import Reactor
from shared.messages import Message, encode_message
from shared.topics import Channel, FleetChannel, fleet_topic, topic

__all__ = ["DeviceLink"]

log = logging.getLogger(__name__)

RECONNECT_MIN_S, RECONNECT_MAX_S = 0.5, 10.0


class DeviceLink:
    def __init__(
        self,
        device_id: str,
        mqtt: MqttConfig,
        reactor: Reactor,
        *,
        session_expiry_s: int,
        outbox_max: int,
        keepalive_s: int,
        state_payload: Callable[[bool], bytes],
        on_desired: Callable[[bytes], None],
        on_root: Callable[[bytes], None],
    ) -> None:
        self.device_id = device_id
        self._mqtt = mqtt
        self._reactor = reactor
        self._session_expiry_s = session_expiry_s
        self._outbox_max = outbox_max
        self._keepalive_s = keepalive_s
        self._state_payload = state_payload
        self._on_desired = on_desired
        self._on_root = on_root
        self._desired_topic = topic(device_id, Channel.DESIRED, mqtt.topic_prefix)
        self._root_topic = fleet_topic(FleetChannel.TRUST_ROOT, mqtt.topic_prefix)
        self._client: paho.Client | None = None
        self._unacked: dict[int, tuple[str, bytes]] = {}  # seq -> (topic, payload), in seq order
        self._mids: dict[int, int] = {}  # paho message id -> seq, for the current client
        self._attempts = 0
        self._held = False  # offline on purpose: no reconnect until `come_back`
        self._closing = False
        self._retry: asyncio.TimerHandle | None = None
        self.connected = False
        self.seq = 0
        self.dropped = 0  # records the full outbox pushed out
        self.connects = 0

    # -- outbox ------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        return len(self._unacked)

    def append(self, channel: Channel, make: Callable[[int], Message]) -> int:
        """Store `make(seq)` under the next seq and send it when connected; return the seq."""
        self.seq += 1
        payload = encode_message(make(self.seq))
        if len(self._unacked) >= self._outbox_max:
            del self._unacked[next(iter(self._unacked))]
            self.dropped += 1
        name = topic(self.device_id, channel, self._mqtt.topic_prefix)
        self._unacked[self.seq] = (name, payload)
        if self.connected:
            self._send(self.seq, name, payload)
        return self.seq

    def _send(self, seq: int, name: str, payload: bytes) -> None:
        assert self._client is not None
        info = self._client.publish(name, payload, qos=1)
        self._mids[info.mid] = seq

    def publish_state(self) -> None:
        if self.connected and self._client is not None:
            self._client.publish(
                topic(self.device_id, Channel.STATE, self._mqtt.topic_prefix),
                self._state_payload(True),
                qos=1,
                retain=True,
            )

    # -- connection --------------------------------------------------------------------------

    def connect(self) -> None:
        """Open a new connection resuming the session; on failure, retry with backoff."""
        self._retry = None
        if self._held or self._closing:
            return
        client = self._build()
        self._client = client
        self._mids.clear()
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # untyped in paho
        props.SessionExpiryInterval = self._session_expiry_s
        try:
            client.connect(
                self._mqtt.host,
                self._mqtt.port,
                self._keepalive_s,
                clean_start=False,
                properties=props,
            )
        except (OSError, ValueError) as e:
            log.debug("%s: connect failed: %s", self.device_id, e)
            self._client = None
            self._schedule_reconnect()

    def _build(self) -> paho.Client:
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.device_id,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        client.suppress_exceptions = True  # a failing callback must not end the shared loop
        if self._mqtt.tls_ca is not None:
            client.tls_set(
                ca_certs=str(self._mqtt.tls_ca),
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        client.will_set(
            topic(self.device_id, Channel.STATE, self._mqtt.topic_prefix),
            self._state_payload(False),
            qos=1,
            retain=True,
        )
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_publish = self._handle_publish
        client.on_message = self._handle_message
        self._reactor.attach(client)
        return client

    def _schedule_reconnect(self) -> None:
        if self._held or self._closing or self._retry is not None:
            return
        ceiling = min(RECONNECT_MAX_S, RECONNECT_MIN_S * 2 ** min(self._attempts, 8))
        self._attempts += 1
        self._retry = self._reactor.loop.call_later(
            random.uniform(RECONNECT_MIN_S, ceiling), self.connect
        )

    def _handle_connect(self, client: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if client is not self._client:
            return
        if reason.is_failure:
            log.warning("%s: the broker refused the connection: %s", self.device_id, reason)
            return  # the broker closes the socket; `_handle_disconnect` retries
        self.connected = True
        self._attempts = 0
        self.connects += 1
        client.subscribe([(self._root_topic, 1), (self._desired_topic, 1)])
        self.publish_state()
        for seq, (name, payload) in self._unacked.items():
            self._send(seq, name, payload)

    def _handle_disconnect(
        self, client: paho.Client, _u: Any, _f: Any, _reason: Any, _p: Any
    ) -> None:
        if client is not self._client:
            return
        self.connected = False
        self._client = None
        self._schedule_reconnect()

    def _handle_publish(self, client: paho.Client, _u: Any, mid: int, _r: Any, _p: Any) -> None:
        if client is self._client:
            seq = self._mids.pop(mid, None)
            if seq is not None:
                self._unacked.pop(seq, None)

    def _handle_message(self, _client: paho.Client, _u: Any, message: Any) -> None:
        if message.topic == self._desired_topic:
            self._on_desired(bytes(message.payload))
        elif message.topic == self._root_topic:
            self._on_root(bytes(message.payload))

    # -- faults and stop ---------------------------------------------------------------------

    def drop(self) -> None:
        """Lose the connection without a DISCONNECT (power cut, crash): the will goes out."""
        client, self._client = self._client, None
        self.connected = False
        sock = client.socket() if client is not None else None
        if client is not None and sock is not None:
            # the socket stays open until paho closes it, so the event loop never watches a
            # closed descriptor; shutting it down is enough for the broker to see the drop
            try:
                cast(socket.socket, sock).shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            client.loop_read()
        if not self._held:
            self._schedule_reconnect()

    def hold_down(self) -> None:
        """Go offline on purpose: drop the connection and stay away until `come_back`."""
        self._held = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self.drop()

    def come_back(self) -> None:
        self._held = False
        self.connect()

    def close(self) -> None:
        """Clean stop: retained `online: false`, then DISCONNECT (no will)."""
        self._closing = True
        if self._retry is not None:
            self._retry.cancel()
        client, self._client = self._client, None
        if client is None:
            return
        if self.connected:
            client.publish(
                topic(self.device_id, Channel.STATE, self._mqtt.topic_prefix),
                self._state_payload(False),
                qos=1,
                retain=True,
            )
        self.connected = False
        client.disconnect()
