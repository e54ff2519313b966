"""Ingest throughput: records/s the ingester stores vs records/s `mosquitto_sub` receives.

A private mosquitto on a free loopback port; `--devices` `mosquitto_pub -l` processes (C, QoS 1)
each publish `--records` telemetry records on their device's topic; the ingester (persistent
session, batched transactions, manual acks after commit) and a `mosquitto_sub -q 1` both
subscribe to the same stream. Each rate is records over the time between the first and the
last record seen by that side. Prints one JSON line.

    .venv/bin/python benchmarks/ingest.py [--devices 20] [--records 1000]
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

from cloud.config import parse_cloud_config
from cloud.ingest import Ingester
from cloud.store import open_store
from shared.messages import ModelIdentity, TelemetryRecord, encode_message
from shared.topics import Channel, fleet_subscription, topic


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_broker(work: Path, port: int) -> subprocess.Popen[bytes]:
    conf = work / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 0\nmax_inflight_messages 0\n"
        f"user {pwd.getpwuid(os.getuid()).pw_name}\nlog_dest none\n")
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("mosquitto did not start")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=20)
    ap.add_argument("--records", type=int, default=1000)
    args = ap.parse_args()
    total = args.devices * args.records
    work = Path(tempfile.mkdtemp(prefix="lf-ingest-bench-"))
    port = free_port()
    broker = start_broker(work, port)
    config = parse_cloud_config(
        f'[mqtt]\nport = {port}\nclient_id = "bench"\n[store]\ndb = "cloud.db"\n'
        '[ingest]\nbatch_max = 5000\nbatch_wait_s = 0.05\n', "bench", work)
    ingester = Ingester(config)
    sub = subprocess.Popen(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-V", "5",
         "-t", fleet_subscription(Channel.TELEMETRY), "-C", str(total)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    sub_times: list[float] = []

    def read_sub() -> None:
        assert sub.stdout is not None
        for _ in sub.stdout:
            sub_times.append(time.monotonic())

    reader = threading.Thread(target=read_sub, daemon=True)
    reader.start()
    ingester.start()
    time.sleep(1.0)  # both subscriptions in place
    model = ModelIdentity("digits", 1, "ab" * 32)
    pubs = []
    for i in range(args.devices):
        device = f"bench-{i:04d}"
        lines = b"".join(encode_message(TelemetryRecord(
            device_id=device, seq=seq, ts=time.time(), model=model, fps=15.0,
            latency_p95_ms=5.0, inferences=seq)) + b"\n" for seq in range(1, args.records + 1))
        path = work / f"{device}.jsonl"
        path.write_bytes(lines)
        pubs.append((device, path))
    started = time.monotonic()
    procs = [subprocess.Popen(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-q", "1",
                               "-V", "5", "-t", topic(d, Channel.TELEMETRY), "-l"],
                              stdin=p.open("rb"), stderr=subprocess.DEVNULL)
             for d, p in pubs]
    db = open_store(config.store.db)
    first_stored = last_stored = None
    deadline = time.monotonic() + 300
    stored = 0
    while time.monotonic() < deadline:
        stored = db.execute("SELECT COUNT(*) FROM telemetry").fetchone()[0]
        now = time.monotonic()
        if stored and first_stored is None:
            first_stored = now
        if stored >= total:
            last_stored = now
            break
        time.sleep(0.01)
    for p in procs:
        p.wait(60)
    reader.join(60)
    sub.kill()
    ingester.stop()
    broker.kill()
    broker.wait()
    db.conn.close()
    shutil.rmtree(work, ignore_errors=True)
    if last_stored is None or first_stored is None or len(sub_times) < 2:
        print(json.dumps({"error": "incomplete", "stored": stored, "sub": len(sub_times)}))
        return 1
    # the first row becomes visible one batch after the stream started: time from the start
    ingest_rate = total / (last_stored - started)
    sub_rate = len(sub_times) / (sub_times[-1] - started)
    print(json.dumps({
        "benchmark": "ingest", "devices": args.devices, "records": total,
        "ingest_records_per_s": round(ingest_rate), "mosquitto_sub_records_per_s":
        round(sub_rate), "ratio": round(ingest_rate / sub_rate, 3), "stored": stored,
        "cpu_count": os.cpu_count(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
