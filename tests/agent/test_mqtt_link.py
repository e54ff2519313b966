"""The MQTT link and the outbox drain against a real mosquitto that really goes down."""

from __future__ import annotations

import json
import random
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.config import MqttConfig, OutboxConfig
from agent.link.client import Backoff, MqttLink
from agent.link.drain import OutboxDrain
from agent.outbox import Outbox
from agent.store import open_store
from shared.messages import DeviceState, Event, TelemetryRecord, decode_message, encode_message
from shared.topics import Channel

DEVICE = "dev-1"
PREFIX = "litefleet/v1"


def state(online: bool) -> bytes:
    return encode_message(DeviceState(DEVICE, online, time.time()))


class Agentish:
    """Outbox + link + drain wired as the daemon wires them."""

    def __init__(self, state_dir: Path, config: MqttConfig, **outbox_limits: int) -> None:
        self.inbound: list[tuple[Channel, bytes]] = []
        self.outbox = Outbox(open_store(state_dir), OutboxConfig(**outbox_limits))
        self.link = MqttLink(DEVICE, config, state, lambda c, p: self.inbound.append((c, p)))
        self.drain = OutboxDrain(self.outbox, self.link, window=50)
        self.link.set_handoffs(on_ack=self.drain.ack, on_connected=self.drain.wake)
        self.drain.start()
        self.link.start()

    def record(self, n: int = 1) -> None:
        for _ in range(n):
            self.outbox.append(
                Channel.TELEMETRY,
                lambda s: TelemetryRecord(
                    DEVICE, s, time.time(), outbox_dropped=self.outbox.dropped
                ),
            )

    def close(self) -> None:
        self.drain.stop()
        self.link.stop()
        self.outbox.close()


def mqtt_config(broker, **extra: object) -> MqttConfig:  # type: ignore[no-untyped-def]
    return MqttConfig(
        host=broker.host, port=broker.port, reconnect_min_s=0.1, reconnect_max_s=0.5, **extra
    )  # type: ignore[arg-type]


def seqs_of(payloads: list[bytes]) -> list[int]:
    return [json.loads(p)["seq"] for p in payloads]


@pytest.fixture
def agentish(tmp_path: Path, mosquitto) -> Callable[..., Agentish]:  # type: ignore[no-untyped-def]
    made: list[Agentish] = []

    def make(config: MqttConfig | None = None, **limits: int) -> Agentish:
        a = Agentish(tmp_path / "state", config or mqtt_config(mosquitto), **limits)
        made.append(a)
        return a

    yield make
    for a in made:
        a.close()


def wait(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_records_reach_the_broker_and_leave_the_outbox(
    mosquitto, mqtt_subscriber, agentish
) -> None:  # type: ignore[no-untyped-def]
    sub = mqtt_subscriber(mosquitto, [f"{PREFIX}/devices/+/#"])
    a = agentish()
    a.record(20)
    assert sub.wait_for(lambda ms: len([m for m in ms if m.topic.endswith("/telemetry")]) >= 20)
    assert seqs_of(sub.payloads("/telemetry")) == list(range(1, 21))
    assert wait(lambda: a.outbox.depth() == 0)
    assert a.outbox.stats().last_publish is not None
    states = [decode_message(p) for p in sub.payloads("/state")]
    assert states and isinstance(states[0], DeviceState) and states[0].online


def test_records_made_while_the_broker_is_down_arrive_after_it_returns(  # type: ignore[no-untyped-def]
    mosquitto, mqtt_subscriber, agentish
) -> None:
    sub = mqtt_subscriber(mosquitto, [f"{PREFIX}/devices/+/telemetry"], persistent=True)
    a = agentish()
    a.record(5)
    assert sub.wait_for(lambda ms: len(ms) >= 5)
    mosquitto.stop()
    assert wait(lambda: not a.link.connected.is_set())
    a.record(50)
    time.sleep(0.3)
    assert a.outbox.depth() == 50  # on disk, nothing lost
    mosquitto.start()
    assert wait(lambda: a.outbox.depth() == 0, 20)
    assert sub.wait_for(lambda ms: set(seqs_of([m.payload for m in ms])) >= set(range(1, 56)), 20)
    # oldest first: the replay after the outage is in seq order
    got = seqs_of(sub.payloads())
    first_seen = list(dict.fromkeys(got))
    assert first_seen == sorted(first_seen)


def test_subscriptions_are_renewed_after_the_broker_forgot_the_session(  # type: ignore[no-untyped-def]
    mosquitto_factory, agentish
) -> None:
    broker = mosquitto_factory("persistence false")
    a = agentish(mqtt_config(broker))
    assert wait(lambda: a.link.connected.is_set())
    cmd_topic = f"{PREFIX}/devices/{DEVICE}/cmd"

    def pub(text: str) -> None:
        subprocess.run(
            [
                "mosquitto_pub",
                "-h",
                broker.host,
                "-p",
                str(broker.port),
                "-q",
                "1",
                "-t",
                cmd_topic,
                "-m",
                text,
            ],
            check=True,
            timeout=10,
        )

    time.sleep(0.2)
    pub("before")
    assert wait(lambda: (Channel.CMD, b"before") in a.inbound)
    broker.restart()  # no persistence: the broker lost the subscription
    assert wait(lambda: broker.log().count(f"as {DEVICE} ") >= 2, 15)
    assert wait(lambda: a.link.connected.is_set(), 15)
    time.sleep(0.3)
    pub("after")
    assert wait(lambda: (Channel.CMD, b"after") in a.inbound)


def test_offline_state_is_retained_after_a_clean_stop(mosquitto, mqtt_subscriber, agentish) -> None:  # type: ignore[no-untyped-def]
    a = agentish()
    assert wait(lambda: a.link.connected.is_set())
    a.close()
    sub = mqtt_subscriber(mosquitto, [f"{PREFIX}/devices/{DEVICE}/state"])
    assert sub.wait_for(lambda ms: len(ms) >= 1)
    last = decode_message(sub.snapshot()[-1].payload)
    assert isinstance(last, DeviceState) and last.online is False
    assert sub.snapshot()[-1].retain


def test_mqtt_311_works_too(mosquitto, mqtt_subscriber, agentish) -> None:  # type: ignore[no-untyped-def]
    sub = mqtt_subscriber(mosquitto, [f"{PREFIX}/devices/+/telemetry"])
    a = agentish(mqtt_config(mosquitto, protocol="3.1.1"))
    a.record(10)
    assert sub.wait_for(lambda ms: len(ms) >= 10)
    assert wait(lambda: a.outbox.depth() == 0)


def test_backoff_is_capped_and_jittered() -> None:
    backoff = Backoff(0.5, 8.0, random.Random(1))
    delays = [backoff.next_delay() for _ in range(20)]
    assert all(0.5 <= d <= 8.0 for d in delays)
    assert max(delays[6:]) > 4.0  # grew toward the cap
    assert len({round(d, 3) for d in delays}) > 15  # jittered, not lockstep
    backoff.reset()
    assert backoff.next_delay() == 0.5  # first attempt after a success: uniform(0.5, 0.5)


def test_the_last_will_marks_a_killed_agent_offline_and_sigterm_does_too(  # type: ignore[no-untyped-def]
    mosquitto, mqtt_subscriber, agent_process
) -> None:
    from shared.keys import SigningKey

    state_topic = f"{PREFIX}/devices/{DEVICE}/state"
    sub = mqtt_subscriber(mosquitto, [state_topic])
    agent = agent_process(mosquitto, [SigningKey.generate().public.hex], telemetry_s=0.2)

    def last_state() -> dict:  # type: ignore[type-arg]
        payloads = sub.payloads("/state")
        return json.loads(payloads[-1]) if payloads else {}

    assert sub.wait_for(lambda ms: last_state().get("online") is True, 30), agent.log()[-2000:]
    agent.kill()  # no clean disconnect: the broker sends the will
    assert sub.wait_for(lambda ms: last_state().get("online") is False, 15)
    assert last_state()["model"]["name"] == "digits"

    agent.start()
    assert sub.wait_for(lambda ms: last_state().get("online") is True, 30)
    time.sleep(1.0)  # some telemetry waits in the outbox or in flight
    assert agent.terminate() == 0
    assert last_state()["online"] is False
    assert "outbox flushed (0 records left" in agent.log()
    late = mqtt_subscriber(mosquitto, [state_topic])  # the offline state is retained
    assert late.wait_for(lambda ms: len(ms) == 1 and ms[0].retain, 10)
    assert json.loads(late.snapshot()[0].payload)["online"] is False


def test_records_the_broker_refuses_are_dropped_and_do_not_block_the_rest(  # type: ignore[no-untyped-def]
    tmp_path: Path, mosquitto_factory, mqtt_subscriber, agentish
) -> None:
    acl = tmp_path / "acl"
    # this device may not publish telemetry (a misconfigured ACL); everything else is allowed
    acl.write_text(f"topic deny {PREFIX}/devices/{DEVICE}/telemetry\ntopic readwrite #\n")
    broker = mosquitto_factory(f"acl_file {acl}\n")
    sub = mqtt_subscriber(broker, [f"{PREFIX}/devices/+/events"])
    a = agentish(mqtt_config(broker))
    a.record(5)
    a.outbox.append(Channel.EVENTS, lambda s: Event(DEVICE, s, time.time(), "source", {}))
    assert wait(lambda: a.outbox.depth() == 0, 20)
    assert sub.wait_for(lambda ms: len(ms) == 1, 10)
    assert seqs_of(sub.payloads()) == [6]  # the event behind the refused records got through
    assert a.outbox.dropped == 5  # MQTT 5 PUBACK "not authorized": counted, not retried forever
