"""The cloud's MQTT connections (paho-mqtt 2, MQTT 5, or 3.1.1 with `[mqtt] protocol`).

`CloudLink` is one paho client: connect_async + loop_start, subscriptions renewed in
`on_connect` (so a reconnect after a broker restart resubscribes), persistent sessions for
the ingester (clean start off, a session expiry), and `publish_retained` that waits for the
broker's PUBACK. Callbacks run on paho's network thread and only hand work on. A link given
`on_raw` receives through `cloud.mqtt_receive.ReceiveClient` (raw topic and payload, acks
in batches with `ack_many`): the ingester's path.

Each link serves one `CloudRole` (ingest, controller, operator) and logs in with that role's
credentials (`[mqtt.<role>]`, else `[mqtt]`): a broker configured by `litefleet broker-config`
gives each role its own user and ACL. TLS with `tls_ca`, mutual TLS with `tls_cert`/`tls_key`.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable, Iterable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud.config import CloudRole, MqttConfig
from cloud.mqtt_receive import RawSink, ReceiveClient, supported
from shared.errors import Unavailable

__all__ = ["BrokerUnavailable", "CloudLink"]

log = logging.getLogger(__name__)


class BrokerUnavailable(Unavailable):
    reason = "broker_unavailable"


class _PahoLog(logging.Filter):
    """paho's own log lines, through logging: "Client is not connected" is what paho says on
    every attempt while the broker is away, which `serve` already reports once, so it goes to
    debug instead of paho's error level."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG and "not connected" in record.getMessage():
            log.debug("paho: %s", record.getMessage())
            return False
        return True


_paho_log = logging.getLogger(f"{__name__}.paho")
_paho_log.addFilter(_PahoLog())


class CloudLink:
    def __init__(
        self,
        config: MqttConfig,
        client_id: str,
        *,
        persistent: bool = False,
        subscriptions: tuple[str, ...] = (),
        on_message: Callable[[mqtt.MQTTMessage], None] | None = None,
        on_raw: RawSink | None = None,
        manual_ack: bool = False,
        receive_maximum: int = 1000,
        role: CloudRole = CloudRole.OPERATOR,
    ) -> None:
        config = config.for_role(role)
        self.config = config
        self.client_id = client_id
        self.role = role
        self.subscriptions = subscriptions
        self.persistent = persistent
        self._on_message_cb = on_message
        self._on_raw = on_raw
        self._connected = threading.Event()
        self.v5 = config.protocol == "5"
        kwargs: dict[str, Any] = {
            "callback_api_version": CallbackAPIVersion.VERSION2,
            "client_id": client_id,
            "manual_ack": manual_ack,
        }
        if self.v5:
            kwargs["protocol"] = mqtt.MQTTv5
        else:  # MQTT 3.1.1: the session persists with clean_session off, with no expiry
            kwargs.update(protocol=mqtt.MQTTv311, clean_session=not persistent)
        if on_raw is not None and supported():
            self.client: mqtt.Client = ReceiveClient(sink=on_raw, **kwargs)
        else:
            self.client = mqtt.Client(**kwargs)
        self.client.enable_logger(_paho_log)
        self.client.max_inflight_messages_set(1000)
        self.client.reconnect_delay_set(min_delay=1, max_delay=10)
        if config.username:
            password = None
            if config.password_file is not None:
                password = config.password_file.read_text().strip()
            self.client.username_pw_set(config.username, password)
        if config.tls_ca is not None or config.tls_cert is not None:
            self.client.tls_set(
                ca_certs=str(config.tls_ca) if config.tls_ca else None,
                certfile=str(config.tls_cert) if config.tls_cert else None,
                keyfile=str(config.tls_key) if config.tls_key else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        self._connect_props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # untyped in paho
        self._connect_props.ReceiveMaximum = receive_maximum
        if persistent:
            self._connect_props.SessionExpiryInterval = config.session_expiry_s
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        if reason_code.is_failure:
            log.warning("broker refused the connection: %s", reason_code)
            return
        log.info(
            "connected to %s:%s (session present: %s)",
            self.config.host,
            self.config.port,
            getattr(flags, "session_present", None),
        )
        if self.subscriptions:
            client.subscribe([(t, 1) for t in self.subscriptions])
        self._connected.set()

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any
    ) -> None:
        refused = [str(rc) for rc in reason_codes if rc.is_failure]
        if refused:
            log.warning(
                "the broker refused %s of %s subscription(s): %s",
                len(refused),
                len(reason_codes),
                ", ".join(refused),
            )
        else:  # from here on the broker keeps this session's messages
            log.info("%s subscribed to %s topic(s)", self.client_id, len(reason_codes))

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        self._connected.clear()
        log.info("disconnected from the broker: %s", reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if self._on_message_cb is not None:
            self._on_message_cb(message)
        if self._on_raw is not None:  # what ReceiveClient leaves to paho, or a plain client
            try:
                name = message.topic.encode("utf-8")
            except UnicodeDecodeError:
                name = b""  # not a topic of the contract: dropped as malformed
            self._on_raw(name, bytes(message.payload), message.mid, message.qos)

    def start(self, timeout: float | None = 10.0) -> None:
        """Connect in the background; with a timeout, wait for the first CONNACK."""
        if self.v5:
            self.client.connect_async(
                self.config.host,
                self.config.port,
                keepalive=self.config.keepalive_s,
                clean_start=not self.persistent,
                properties=self._connect_props,
            )
        else:
            self.client.connect_async(
                self.config.host, self.config.port, keepalive=self.config.keepalive_s
            )
        self.client.loop_start()
        if timeout is not None and not self._connected.wait(timeout):
            self.stop()
            raise BrokerUnavailable(
                f"no connection to the broker at {self.config.host}:{self.config.port} "
                f"within {timeout:g} s"
            )

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def ack(self, mid: int, qos: int) -> None:
        self.client.ack(mid, qos)

    def ack_many(self, mids: Iterable[int]) -> None:
        """Acknowledge QoS 1 messages received with manual acks."""
        if isinstance(self.client, ReceiveClient):
            self.client.ack_many(mids)
        else:
            for mid in mids:
                self.client.ack(mid, 1)

    def publish(
        self, topic: str, payload: bytes, *, retain: bool = False, timeout: float = 10.0
    ) -> None:
        """Publish at QoS 1 and wait for the broker's acknowledgement."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError) as e:
            raise BrokerUnavailable(f"publish to {topic} failed: {e}") from e
        if not info.is_published():
            raise BrokerUnavailable(f"publish to {topic} not acknowledged within {timeout:g} s")

    def stop(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()
