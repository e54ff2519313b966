"""Nothing lost across outages: a real agent process, a real mosquitto, a real model.

Records are produced at a high rate while the broker is restarted three times (once with
kill -9) and the agent is stopped once (SIGTERM) and killed once (kill -9). A persistent QoS 1
subscriber must end with every seq from the first to the last; duplicates are allowed (QoS 1
is at-least-once), counted and reported.

The broker's kill -9 is set up so that a gap can only be the agent's fault: at a quiet moment
(agent paused, every acknowledged record already delivered to the subscriber) the broker is
frozen (SIGSTOP), the agent resumes and fills its in-flight window with records the frozen
broker never acknowledges, then both are killed with SIGKILL. The broker acknowledged nothing
it could lose; the agent must still have every unacknowledged record on disk.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable

from shared.keys import SigningKey

DEVICE = "dev-1"
TOTAL = 5000
STEP = 600  # records between two disruptions


def seqs(sub) -> list[int]:  # type: ignore[no-untyped-def]
    return [json.loads(m.payload)["seq"] for m in sub.snapshot() if not m.topic.endswith("/state")]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, fail: bool = True) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    if fail:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_every_seq_arrives_across_broker_and_agent_outages(  # type: ignore[no-untyped-def]
    mosquitto, mqtt_subscriber, agent_process
) -> None:
    sub = mqtt_subscriber(
        mosquitto,
        [f"litefleet/v1/devices/{DEVICE}/+"],
        persistent=True,
        client_id="durability-subscriber",
    )
    agent = agent_process(
        mosquitto,
        [SigningKey.generate().public.hex],
        telemetry_s=0.004,
        extra_toml="[outbox]\npublish_window = 50\n",
    )

    def received_at_least(n: int) -> Callable[[], bool]:
        return lambda: len(set(seqs(sub))) >= n

    def produced_at_least(n: int) -> Callable[[], bool]:
        return lambda: agent.last_seq() >= n

    target = STEP
    wait_until(received_at_least(target), 60, f"{target} records")

    # 1. broker restarts gracefully
    mosquitto.stop()
    wait_until(
        produced_at_least(agent.last_seq() + 100), 30, "records made while the broker is down"
    )
    mosquitto.start()
    target += STEP
    wait_until(received_at_least(target), 60, f"{target} records after a broker restart")

    # 2. agent stops with SIGTERM (flushes what the broker takes) and starts again
    assert agent.terminate() == 0
    agent.start()
    target += STEP
    wait_until(received_at_least(target), 60, f"{target} records after an agent restart")

    # 3. broker restarts gracefully, again
    mosquitto.restart()
    target += STEP
    wait_until(received_at_least(target), 60, f"{target} records after a second broker restart")

    # 4. agent killed with SIGKILL mid-stream, then started again
    agent.kill()
    agent.start()
    target += STEP
    wait_until(received_at_least(target), 60, f"{target} records after the agent was killed")

    # 5. broker frozen, then broker and agent both killed with SIGKILL (see the docstring)
    agent.pause()
    quiet_since, count = time.monotonic(), len(sub.snapshot())
    while time.monotonic() - quiet_since < 1.5:  # > mosquitto's autosave_interval
        time.sleep(0.1)
        if len(sub.snapshot()) != count:
            quiet_since, count = time.monotonic(), len(sub.snapshot())
    mosquitto.freeze()
    agent.resume()
    wait_until(produced_at_least(agent.last_seq() + 100), 30, "records sent to a frozen broker")
    mosquitto.kill()
    agent.kill()
    mosquitto.start()
    agent.start()

    # run on to TOTAL records, then stop the agent cleanly: it flushes its outbox
    wait_until(produced_at_least(TOTAL), 90, f"{TOTAL} records produced")
    assert agent.terminate() == 0
    last = agent.last_seq()
    wait_until(lambda: set(seqs(sub)) >= set(range(1, last + 1)), 30, "every seq", fail=False)

    got = seqs(sub)
    counts = Counter(got)
    missing = sorted(set(range(1, last + 1)) - set(counts))
    duplicates = sum(n - 1 for n in counts.values())
    print(
        f"\nrecords {last}, deliveries {len(got)}, duplicates {duplicates}, missing {len(missing)}"
    )
    assert last >= TOTAL
    assert missing == [], f"{len(missing)} records lost: {missing[:20]}"
    assert max(counts) == last
    assert agent.log().count("---- start") == 4
