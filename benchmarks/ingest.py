"""Ingest throughput: records/s the ingester stores vs records/s `mosquitto_sub` receives.

A private mosquitto on a free loopback port; the ingester runs as its own process, the way
production runs it (`litefleet serve --no-http`: persistent session, batched transactions,
manual acks after commit); a `mosquitto_sub -q 1` subscribes to the same stream. Once a
warm-up record has reached both, `--devices` `mosquitto_pub -l` processes (C, QoS 1) each
publish `--records` telemetry records on their device's topic.

Each rate is records over the time from the start of the stream to the last record seen by
that side: mosquitto_sub stamps every line it prints (`-F %U`, read after it exits), and this
script reads the ingester's own `stored.telemetry` counter every 20 ms from a separate
process, so the measurement takes no CPU time from the ingester's interpreter. Also
reported: the CPU time the ingester process spent per record (user + system, all threads),
which depends less on what else the machine is doing. Prints one JSON line, with the load
average before and after the run.

    .venv/bin/python benchmarks/ingest.py [--devices 20] [--records 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from cloud.store import counter, open_store
from shared.messages import ModelIdentity, TelemetryRecord, encode_message
from shared.topics import Channel, fleet_subscription, topic

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_broker(work: Path, port: int) -> subprocess.Popen[bytes]:
    conf = work / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 0\nmax_inflight_messages 0\n"
        f"user {pwd.getpwuid(os.getuid()).pw_name}\nlog_dest none\n"
    )
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("mosquitto did not start")


def records(device: str, count: int) -> bytes:
    model = ModelIdentity("digits", 1, "ab" * 32)
    return b"".join(
        encode_message(
            TelemetryRecord(
                device_id=device,
                seq=seq,
                ts=time.time(),
                model=model,
                fps=15.0,
                latency_p95_ms=5.0,
                inferences=seq,
            )
        )
        + b"\n"
        for seq in range(1, count + 1)
    )


def stored(db_path: Path) -> int:
    db = open_store(db_path)
    try:
        return counter(db, "stored.telemetry")
    finally:
        db.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=20)
    ap.add_argument("--records", type=int, default=1000)
    args = ap.parse_args()
    total = args.devices * args.records
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="lf-ingest-bench-"))
    port = free_port()
    broker = start_broker(work, port)
    (work / "cloud.toml").write_text(
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\nclient_id = "bench"\n'
        '[store]\ndb = "cloud.db"\n[http]\nenabled = false\n[web]\nenabled = false\n'
        "[ingest]\nbatch_max = 5000\nbatch_wait_s = 0.05\n"
    )
    db_path = work / "cloud.db"
    open_store(db_path).close()
    litefleet = Path(sys.executable).with_name("litefleet")
    ingester = subprocess.Popen(
        [
            str(litefleet),
            "serve",
            "--no-http",
            "--log-level",
            "WARNING",
            "--config",
            str(work / "cloud.toml"),
        ],
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=(work / "serve.log").open("wb"),
    )
    sub_out = work / "sub.txt"
    sub = subprocess.Popen(
        [
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-q",
            "1",
            "-V",
            "5",
            "-t",
            fleet_subscription(Channel.TELEMETRY),
            "-F",
            "%U",
        ],
        stdout=sub_out.open("wb"),
        stderr=subprocess.DEVNULL,
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        # a warm-up record: both subscriptions are in place once both have seen it
        warm = encode_message(TelemetryRecord(device_id="warm-up", seq=1, ts=time.time()))
        deadline = time.monotonic() + 30
        while stored(db_path) < 1 or sub_out.stat().st_size == 0:
            if time.monotonic() > deadline or ingester.poll() is not None:
                raise RuntimeError("the ingester or mosquitto_sub did not subscribe")
            subprocess.run(
                [
                    "mosquitto_pub",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-q",
                    "1",
                    "-t",
                    topic("warm-up", Channel.TELEMETRY),
                    "-m",
                    warm,
                ],
                check=True,
            )
            time.sleep(0.3)
        warm_lines = len(sub_out.read_text().split())
        files = []
        for i in range(args.devices):
            device = f"bench-{i:04d}"
            path = work / f"{device}.jsonl"
            path.write_bytes(records(device, args.records))
            files.append((device, path))
        base = stored(db_path)
        ingester_cpu = psutil.Process(ingester.pid)
        cpu_before = sum(ingester_cpu.cpu_times()[:2])
        started_wall, started = time.time(), time.monotonic()
        procs = [
            subprocess.Popen(
                [
                    "mosquitto_pub",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-q",
                    "1",
                    "-V",
                    "5",
                    "-t",
                    topic(d, Channel.TELEMETRY),
                    "-l",
                ],
                stdin=p.open("rb"),
                stderr=subprocess.DEVNULL,
            )
            for d, p in files
        ]
        last_stored = None
        count = 0
        deadline = started + 300
        while time.monotonic() < deadline:
            count = stored(db_path) - base
            if count >= total:
                last_stored = time.monotonic()
                cpu_used = sum(ingester_cpu.cpu_times()[:2]) - cpu_before
                break
            time.sleep(0.02)
        for p in procs:
            p.wait(60)
        deadline = time.monotonic() + 30
        while (
            len(sub_out.read_bytes().split()) < warm_lines + total and time.monotonic() < deadline
        ):
            time.sleep(0.1)
        sub.terminate()
        sub.wait()
        stamps = [float(x) for x in sub_out.read_text().split()][warm_lines:]
        ingester.send_signal(signal.SIGTERM)
        ingester.wait(30)
    finally:
        for p in (*procs, sub, ingester):
            if p.poll() is None:
                p.kill()
                p.wait()
        broker.kill()
        broker.wait()
    shutil.rmtree(work, ignore_errors=True)
    if last_stored is None or len(stamps) < total:
        print(
            json.dumps(
                {"benchmark": "ingest", "error": "incomplete", "stored": count, "sub": len(stamps)}
            )
        )
        return 1
    ingest_rate = total / (last_stored - started)
    sub_rate = total / (stamps[-1] - started_wall)
    print(
        json.dumps(
            {
                "benchmark": "ingest",
                "devices": args.devices,
                "records": total,
                "ingest_records_per_s": round(ingest_rate),
                "mosquitto_sub_records_per_s": round(sub_rate),
                "ratio": round(ingest_rate / sub_rate, 3),
                "ingest_cpu_us_per_record": round(cpu_used / total * 1e6, 1),
                "cpu_count": os.cpu_count(),
                "loadavg_before": [round(x, 2) for x in load_before],
                "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
