"""Broker down, ten times the outbox bound produced: the outbox stays within its bound, the
agent's memory stays flat, and the drop count arrives with the next delivered record."""

from __future__ import annotations

import json
import time

import psutil

from shared.keys import SigningKey

DEVICE = "dev-1"
MAX_ROWS = 300


def test_a_long_outage_keeps_the_outbox_bounded_and_reports_the_drops(  # type: ignore[no-untyped-def]
    mosquitto, mqtt_subscriber, agent_process
) -> None:
    sub = mqtt_subscriber(
        mosquitto,
        [f"litefleet/v1/devices/{DEVICE}/+"],
        persistent=True,
        client_id="bounds-subscriber",
    )
    time.sleep(1.5)  # mosquitto autosaves the subscription before going down
    mosquitto.stop()
    agent = agent_process(
        mosquitto,
        [SigningKey.generate().public.hex],
        telemetry_s=0.004,
        extra_toml=f"[outbox]\nmax_rows = {MAX_ROWS}\nmax_bytes = 1000000\n",
    )
    proc = psutil.Process(agent.pid)
    db = agent.state_dir / "agent.db"

    def outbox_depth() -> int:
        import sqlite3

        if not db.exists():
            return 0
        conn = sqlite3.connect(str(db), timeout=10)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        except sqlite3.OperationalError:
            return 0
        finally:
            conn.close()

    depths: list[int] = []
    rss: dict[str, int] = {}
    deadline = time.monotonic() + 120
    while agent.last_seq() < 10 * MAX_ROWS and time.monotonic() < deadline:
        assert agent.alive(), agent.log()[-3000:]
        depths.append(outbox_depth())
        if "early" not in rss and agent.last_seq() >= 2 * MAX_ROWS:
            rss["early"] = proc.memory_info().rss
        time.sleep(0.1)
    rss["late"] = proc.memory_info().rss
    produced = agent.last_seq()
    assert produced >= 10 * MAX_ROWS
    assert max(depths) <= MAX_ROWS
    assert depths[-1] == MAX_ROWS
    growth_mb = (rss["late"] - rss["early"]) / 1e6
    print(f"\nproduced {produced} with a bound of {MAX_ROWS}; RSS growth {growth_mb:.1f} MB")
    assert growth_mb < 15, f"agent memory grew {growth_mb:.1f} MB while the broker was down"

    mosquitto.start()
    assert sub.wait_for(lambda ms: any(m.topic.endswith("/telemetry") for m in ms), 30)
    assert agent.terminate() == 0
    last = agent.last_seq()
    sub.wait_for(
        lambda ms: max((json.loads(m.payload).get("seq", 0) for m in ms), default=0) >= last, 20
    )

    records = [json.loads(m.payload) for m in sub.snapshot() if not m.topic.endswith("/state")]
    delivered = {r["seq"] for r in records}
    telemetry = sorted(
        (r for r in records if r["schema"] == "litefleet.telemetry/1"), key=lambda r: r["seq"]
    )
    first = telemetry[0]
    # the first record delivered after the outage already carries the drops
    assert first["outbox_dropped"] >= first["seq"] - MAX_ROWS > 0
    # and the last one accounts for every seq: each was delivered or counted as dropped
    final = telemetry[-1]
    dropped = final["outbox_dropped"]
    assert dropped >= produced - MAX_ROWS
    assert len({s for s in delivered if s <= final["seq"]}) + dropped == final["seq"]
