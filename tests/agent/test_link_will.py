"""The last will is built afresh for every connection: its `ts` is when that connection opened."""

from __future__ import annotations

import socket
import time

from agent.config import MqttConfig
from agent.link.client import MqttLink
from shared.messages import DeviceState, decode_message, encode_message


def test_the_will_of_a_reconnected_link_carries_the_reconnect_time(
    mosquitto,  # type: ignore[no-untyped-def]
    mqtt_subscriber,
) -> None:
    def state(online: bool) -> bytes:
        return encode_message(DeviceState("dev-1", online, time.time()))

    config = MqttConfig(
        host=mosquitto.host, port=mosquitto.port, reconnect_min_s=0.1, reconnect_max_s=0.5
    )
    link = MqttLink("dev-1", config, state, lambda c, p: None)
    link.start()
    try:
        assert link.connected.wait(10)
        time.sleep(1.0)
        restarted = time.time()
        mosquitto.restart()  # the link reconnects: a new connection, a new will
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (
            link.connected.is_set() and link._client.is_connected()
        ):
            time.sleep(0.05)
        assert link.connected.is_set()
        sub = mqtt_subscriber(mosquitto, ["litefleet/v1/devices/dev-1/state"])
        assert sub.wait_for(lambda ms: len(ms) >= 1)  # the retained online state
        # the device dies: its socket closes with no DISCONNECT, the broker sends the will
        link._client.loop_stop()
        sock = link._client.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()

        def offline(ms) -> bool:  # type: ignore[no-untyped-def]
            return any(not decode_message(m.payload).online for m in ms)  # type: ignore[union-attr]

        assert sub.wait_for(offline, 20)
        will = next(s for m in sub.snapshot() if not (s := decode_message(m.payload)).online)  # type: ignore[union-attr]
        assert isinstance(will, DeviceState)
        assert will.ts >= restarted  # not the moment of the first connection
    finally:
        link._stopping = True
