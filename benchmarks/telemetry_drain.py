"""How fast the outbox drains a day of telemetry to a local mosquitto, against bare paho.

A backlog of 86,400 telemetry records (a day at 1 Hz) is written to a fresh outbox, then the
agent's drain (`agent.link.drain.OutboxDrain` over `agent.link.client.MqttLink`, QoS 1, deleting
each record on PUBACK) sends it to a local mosquitto. The same payloads are then sent by a bare
paho QoS 1 publisher with the same in-flight window (no store, nothing deleted). Prints one JSON
line: records/s for both, their ratio, and whether the day drained in under 60 s.

    .venv/bin/python benchmarks/telemetry_drain.py [--records N] [--window W] [--synchronous FULL]
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: the imports below need the repo

from agent.config import MqttConfig, OutboxConfig  # noqa: E402
from agent.link.client import MqttLink  # noqa: E402
from agent.link.drain import OutboxDrain  # noqa: E402
from agent.outbox import Outbox  # noqa: E402
from agent.store import open_store  # noqa: E402
from shared.messages import DeviceState, ModelIdentity, TelemetryRecord, encode_message  # noqa: E402
from shared.topics import Channel  # noqa: E402

DEVICE = "bench-01"
MODEL = ModelIdentity(
    "digits", 3, "7a0a7eea8c37ca7b84a372356ffa001ce7a57e34f04ea55f835dd15e3c2f0509"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_mosquitto(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    conf = folder / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        f"max_inflight_messages 0\nmax_queued_messages 0\nlog_dest none\n"
        f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
    )
    proc = subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("mosquitto did not start")


def record(seq: int, dropped: int) -> TelemetryRecord:
    return TelemetryRecord(
        device_id=DEVICE,
        seq=seq,
        ts=1_760_000_000.0 + seq,
        model=MODEL,
        frames=30 * seq,
        inferences=30 * seq,
        errors=0,
        dropped_frames=seq // 100,
        fps=29.97,
        latency_p50_ms=4.1,
        latency_p95_ms=6.3,
        latency_p99_ms=9.8,
        outputs={
            "kind": "classes",
            "top": [
                {"label": "7", "count": 17, "mean_score": 0.93},
                {"label": "1", "count": 9, "mean_score": 0.88},
            ],
        },
        cpu_percent=37.5,
        rss_mb=142.2,
        temperature_c=51.3,
        disk_free_mb=10240.0,
        outbox_depth=seq,
        outbox_dropped=dropped,
        source_status="up",
        uptime_s=float(seq),
    )


def fill(outbox: Outbox, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        outbox.append(Channel.TELEMETRY, lambda s: record(s, outbox.dropped))
    return time.perf_counter() - start


def drain_with_agent(outbox: Outbox, port: int, window: int, n: int) -> float:
    config = MqttConfig(host="127.0.0.1", port=port, reconnect_min_s=0.2, reconnect_max_s=1.0)
    link = MqttLink(
        DEVICE,
        config,
        lambda online: encode_message(DeviceState(DEVICE, online, time.time())),
        lambda channel, payload: None,
    )
    drain = OutboxDrain(outbox, link, window)
    link.set_window(window)
    link.set_handoffs(on_ack=drain.ack, on_connected=drain.wake)
    link.start()
    if not link.connected.wait(10):
        raise RuntimeError("agent link did not connect")
    start = time.perf_counter()
    drain.start()
    while outbox.depth() > 0:
        time.sleep(0.005)
    elapsed = time.perf_counter() - start
    drain.stop()
    link.stop()
    if drain.acked != n:
        raise RuntimeError(f"drain acknowledged {drain.acked} of {n}")
    return elapsed


def drain_with_bare_paho(payloads: list[bytes], port: int, window: int) -> float:
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id="bench-bare", protocol=MQTTProtocolVersion.MQTTv5
    )
    client.max_inflight_messages_set(window)
    done = threading.Event()
    acked = [0]

    def on_publish(c, u, mid, rc, props):  # type: ignore[no-untyped-def]
        acked[0] += 1
        if acked[0] == len(payloads):
            done.set()

    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    topic = f"litefleet/v1/devices/{DEVICE}/telemetry"
    start = time.perf_counter()
    for sent, payload in enumerate(payloads):  # at most `window` unacknowledged, like the drain
        while sent - acked[0] >= window:
            time.sleep(0.0002)
        client.publish(topic, payload, qos=1)
    if not done.wait(300):
        raise RuntimeError(f"bare paho: {acked[0]} of {len(payloads)} acknowledged")
    elapsed = time.perf_counter() - start
    client.disconnect()
    client.loop_stop()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=86_400)
    parser.add_argument("--window", type=int, default=OutboxConfig.publish_window)
    parser.add_argument("--synchronous", choices=("NORMAL", "FULL"), default="NORMAL")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lf-drain-") as tmp:
        folder = Path(tmp)
        broker, port = start_mosquitto(folder)
        try:
            limits = OutboxConfig(
                max_rows=max(args.records, 1), max_bytes=1 << 30, synchronous=args.synchronous
            )
            outbox = Outbox(open_store(folder / "state", args.synchronous), limits)
            fill_s = fill(outbox, args.records)
            payloads = [e.payload for e in outbox.pending(0, args.records)]
            agent_s = drain_with_agent(outbox, port, args.window, args.records)
            bare_s = drain_with_bare_paho(payloads, port, args.window)
        finally:
            broker.terminate()
            broker.wait(10)
    agent_rate = args.records / agent_s
    bare_rate = args.records / bare_s
    print(
        json.dumps(
            {
                "benchmark": "telemetry_drain",
                "records": args.records,
                "payload_bytes_mean": round(sum(map(len, payloads)) / len(payloads), 1),
                "window": args.window,
                "synchronous": args.synchronous,
                "append_records_per_s": round(args.records / fill_s, 1),
                "outbox_drain_s": round(agent_s, 2),
                "outbox_records_per_s": round(agent_rate, 1),
                "bare_paho_s": round(bare_s, 2),
                "bare_paho_records_per_s": round(bare_rate, 1),
                "ratio": round(agent_rate / bare_rate, 3),
                "day_under_60s": agent_s * 86_400 / args.records < 60.0,
            }
        )
    )


if __name__ == "__main__":
    main()
