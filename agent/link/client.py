"""The device's MQTT connection, the paho way.

- `Client(CallbackAPIVersion.VERSION2)`, `connect_async` + `loop_start`: paho's network thread
  connects, reconnects and runs the callbacks.
- MQTT 5 with a persistent session (clean start off, session expiry from config); MQTT 3.1.1
  with `clean_session=False` when `[mqtt] protocol = "3.1.1"`.
- Reconnects back off exponentially from `reconnect_min_s`, capped at `reconnect_max_s`, with
  full jitter, so a fleet that lost its broker does not come back in lockstep.
- TLS with a CA, mutual TLS with a client certificate and key; username and a password read
  from a file.
- The last will is `online: false` on the retained `state` topic, built afresh before every
  connection attempt, so its `ts` is when the connection it belongs to was opened (never
  later than any state sent on that connection). The retained state is published on every
  connect and whenever `publish_state` is called. The cloud applies a will's `online: false`
  whatever its `ts` (docs/mqtt.md, "Online, offline and the last will").
- `desired` and `cmd` (and the fleet's retained `trust/root`) are subscribed in `on_connect`
  after checking the reason code, so every reconnect renews them.

Callbacks run on paho's network thread and only hand work over: inbound messages go to the
`on_message` hand-off given to the constructor, acknowledgements to `on_ack`, connection changes
to the `connected` event and `on_connected` hand-off.
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
from collections.abc import Callable
from typing import Any, cast

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.config import MqttConfig
from shared.topics import Channel, FleetChannel, fleet_topic, topic

__all__ = ["Backoff", "MqttLink", "PublishHandle"]

log = logging.getLogger(__name__)

SUBSCRIBED = (Channel.DESIRED, Channel.CMD)
FLEET_SUBSCRIBED = (FleetChannel.TRUST_ROOT,)  # subscribed first: a new root before a deployment

PublishHandle = paho.MQTTMessageInfo


class Backoff:
    """Capped exponential backoff with full jitter: uniform(min, min(max, min * 2**n))."""

    def __init__(self, min_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.min_s = min_s
        self.max_s = max(max_s, min_s)
        self.attempts = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.max_s, self.min_s * (2 ** min(self.attempts, 32)))
        self.attempts += 1
        return self._rng.uniform(self.min_s, ceiling)

    def reset(self) -> None:
        self.attempts = 0


class MqttLink:
    """One persistent MQTT session for one device."""

    def __init__(
        self,
        device_id: str,
        config: MqttConfig,
        state_payload: Callable[[bool], bytes],
        on_message: Callable[[Channel | FleetChannel, bytes], None],
        on_ack: Callable[[int, bool], None] | None = None,
        on_connected: Callable[[], None] | None = None,
    ) -> None:
        self.device_id = device_id
        self.config = config
        self.connected = threading.Event()
        self._state_payload = state_payload
        self._on_message_handoff = on_message
        self._on_ack = on_ack
        self._on_connected = on_connected
        self._backoff = Backoff(config.reconnect_min_s, config.reconnect_max_s)
        self._stopping = False
        self._v5 = config.protocol == "5"
        self._inbound_topics: dict[str, Channel | FleetChannel] = {
            fleet_topic(channel, config.topic_prefix): channel for channel in FLEET_SUBSCRIBED
        }
        self._inbound_topics.update(
            {topic(device_id, channel, config.topic_prefix): channel for channel in SUBSCRIBED}
        )
        self._client = self._build_client()

    # -- set-up ------------------------------------------------------------------------------

    def _build_client(self) -> paho.Client:
        cfg = self.config
        if self._v5:
            client = paho.Client(
                CallbackAPIVersion.VERSION2,
                client_id=self.device_id,
                protocol=MQTTProtocolVersion.MQTTv5,
            )
        else:
            client = paho.Client(
                CallbackAPIVersion.VERSION2,
                client_id=self.device_id,
                clean_session=False,
                protocol=MQTTProtocolVersion.MQTTv311,
            )
        paho_log = logging.getLogger(f"paho.{self.device_id}")
        paho_log.addFilter(self._quiet_after_disconnect)
        client.enable_logger(paho_log)
        # an exception in a callback would end paho's network thread: log it and carry on
        client.suppress_exceptions = True
        # paho keeps QoS 1 messages in memory only and its queue is unbounded: the durable,
        # bounded queue is the outbox, and paho only ever holds the drain's small window.
        client.reconnect_delay_set(_whole(self._backoff.next_delay()), _whole(cfg.reconnect_max_s))
        if cfg.tls_ca is not None or cfg.tls_cert is not None:
            client.tls_set(
                ca_certs=str(cfg.tls_ca) if cfg.tls_ca else None,
                certfile=str(cfg.tls_cert) if cfg.tls_cert else None,
                keyfile=str(cfg.tls_key) if cfg.tls_key else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        if cfg.username is not None:
            password = None
            if cfg.password_file is not None:
                password = cfg.password_file.read_text(encoding="utf-8").rstrip("\r\n")
            client.username_pw_set(cfg.username, password)
        self._refresh_will(client)
        client.on_connect = self._handle_connect
        client.on_connect_fail = self._handle_connect_fail
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        client.on_publish = self._handle_publish
        client.on_subscribe = self._handle_subscribe
        return client

    def _refresh_will(self, client: paho.Client) -> None:
        """The will the next CONNECT carries; called before each attempt (paho's network thread
        runs both the callbacks that call this and the reconnect that sends it)."""
        client.will_set(self.state_topic, self._state_payload(False), qos=1, retain=True)

    def _quiet_after_disconnect(self, record: logging.LogRecord) -> bool:
        # paho's network thread may run once more after a clean disconnect and log "Client is
        # not connected" as an error; during our own stop that is expected, not a fault.
        return not (self._stopping and "not connected" in record.getMessage())

    @property
    def state_topic(self) -> str:
        return topic(self.device_id, Channel.STATE, self.config.topic_prefix)

    def topic_for(self, channel: Channel) -> str:
        return topic(self.device_id, channel, self.config.topic_prefix)

    def set_handoffs(
        self,
        on_ack: Callable[[int, bool], None] | None = None,
        on_connected: Callable[[], None] | None = None,
    ) -> None:
        """Where acknowledgements and (re)connections are handed over; set before `start`."""
        if on_ack is not None:
            self._on_ack = on_ack
        if on_connected is not None:
            self._on_connected = on_connected

    def set_window(self, inflight: int) -> None:
        self._client.max_inflight_messages_set(inflight)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._refresh_will(self._client)
        properties = None
        if self._v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # untyped in paho
            properties.SessionExpiryInterval = self.config.session_expiry_s
            self._client.connect_async(
                self.config.host,
                self.config.port,
                self.config.keepalive_s,
                clean_start=False,
                properties=properties,
            )
        else:
            self._client.connect_async(self.config.host, self.config.port, self.config.keepalive_s)
        self._client.loop_start()
        log.info(
            "connecting to mqtt %s:%s as %s (MQTT %s%s)",
            self.config.host,
            self.config.port,
            self.device_id,
            self.config.protocol,
            ", TLS" if self.config.tls_ca or self.config.tls_cert else "",
        )

    def stop(self, timeout: float = 5.0) -> None:
        """Publish `online: false` (retained) if connected, disconnect cleanly, stop the thread."""
        self._stopping = True
        if self.connected.is_set():
            try:
                info = self._client.publish(
                    self.state_topic, self._state_payload(False), qos=1, retain=True
                )
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError) as e:
                log.warning("could not publish the offline state: %s", e)
        self._client.disconnect()
        self._client.loop_stop()
        self.connected.clear()

    # -- publishing --------------------------------------------------------------------------

    def publish(self, channel: Channel, payload: bytes, qos: int = 1) -> PublishHandle:
        """Queue one message with paho (sent now if connected, on reconnect otherwise)."""
        return self._client.publish(
            self.topic_for(channel), payload, qos=qos, retain=channel.retained
        )

    def publish_state(self) -> None:
        """Publish the retained state now (when connected; on_connect publishes it anyway)."""
        if not self.connected.is_set():
            return
        info = self._client.publish(self.state_topic, self._state_payload(True), qos=1, retain=True)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            log.debug("state publish deferred: %s", paho.error_string(info.rc))

    # -- callbacks (paho's network thread: hand over and return) ------------------------------

    def _handle_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: Any,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            log.error("mqtt broker refused the connection: %s", reason_code)
            return
        self._backoff.reset()
        client.reconnect_delay_set(
            _whole(self._backoff.next_delay()), _whole(self.config.reconnect_max_s)
        )
        client.subscribe([(t, 1) for t in self._inbound_topics])
        client.publish(self.state_topic, self._state_payload(True), qos=1, retain=True)
        log.info(
            "mqtt connected to %s:%s (session present: %s)",
            self.config.host,
            self.config.port,
            getattr(flags, "session_present", None),
        )
        self.connected.set()
        if self._on_connected is not None:
            self._on_connected()

    def _handle_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        delay = self._schedule_reconnect(client)
        log.warning(
            "mqtt connection to %s:%s failed; retrying in %.1fs",
            self.config.host,
            self.config.port,
            delay,
        )

    def _handle_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: Any,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.connected.clear()
        if self._stopping:
            log.info("mqtt disconnected")
            return
        delay = self._schedule_reconnect(client)
        log.warning("mqtt connection lost (%s); reconnecting in %.1fs", reason_code, delay)

    def _schedule_reconnect(self, client: paho.Client) -> float:
        self._refresh_will(client)
        delay = self._backoff.next_delay()
        # min == max makes paho wait exactly our jittered delay before its next attempt
        client.reconnect_delay_set(_whole(delay), _whole(delay))
        return delay

    def _handle_message(
        self, client: paho.Client, userdata: Any, message: paho.MQTTMessage
    ) -> None:
        channel = self._inbound_topics.get(message.topic)
        if channel is None:
            log.warning("dropped a message on unexpected topic %r", message.topic)
            return
        self._on_message_handoff(channel, bytes(message.payload))

    def _handle_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if self._on_ack is not None:
            self._on_ack(mid, reason_code.is_failure)

    def _handle_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        for code in reason_codes:
            if code.is_failure:
                log.error("mqtt subscription refused: %s", code)


def _whole(seconds: float) -> int:
    """paho annotates reconnect delays as int but computes with them as numbers; sub-second
    delays matter for tests and for jitter, so they are passed through unchanged."""
    return cast(int, seconds)
