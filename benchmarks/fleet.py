"""A fleet on one machine: rollouts to N simulated devices, telemetry kept whole, ingest rate.

Everything real and on loopback: a private mosquitto with a generated config, a key made with
`litefleet keys generate`, the example models released with `litefleet release` (digits as v1,
digits-ft as v2, so v2 ships as a delta), one `litefleet serve` (ingest, rollout controller,
artifact HTTP), and `litefleet sim --devices N` (one process, one MQTT session per device).

    1. the fleet connects (ramp-up) and reports; its devices form one group
    2. rollout_s        `litefleet deploy digits@1 --group G --waves 1%,10%,100% --wait`: until
                        every device committed (full artifacts over HTTP)
    3. rollout_delta_s  the same for digits@2 (each device downloads the delta)
    4. steady telemetry for --duration seconds: stored against offered records per second
    5. ingest_records_per_s  `serve` is paused (SIGSTOP) while the fleet keeps sending for
                        --backlog seconds; the broker queues for its persistent session; the
                        fleet stops (each device's outbox acknowledged by the broker), `serve`
                        resumes, and the backlog's records over the time to store them all
    6. telemetry_records and telemetry_missing: the stored telemetry rows, and the gaps in each
                        device's seqs (telemetry, events and update reports share one outbox
                        seq per device, as on the agent)

Prints one JSON line. Fields the current cloud cannot measure (a second ingest worker, a
standby controller) are null with a note.

    .venv/bin/python benchmarks/fleet.py [--devices 1000] [--backend sqlite]
        [--ingest-workers 1] [--duration 30] [--telemetry-interval 1] [--backlog 20]
        [--downloads 32]
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from cloud.sim.audit import missing_seqs

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "examples" / "models"
GROUP = "bench"
PREFIX = "fleet"
NOTES = {
    "ingest_records_per_s_2_workers": "one `litefleet serve --role all` over SQLite is the only "
    "ingest today; shared-subscription ingest workers are not built yet",
    "controller_failover_s": "no standby controller yet (a controller lease in the store is not "
    "built yet); nothing to fail over to",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}")


def start_broker(work: Path, port: int) -> subprocess.Popen[bytes]:
    """As tests/conftest.py writes it: loopback listener, unlimited queues, our own user."""
    conf = work / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 0\nmax_queued_bytes 0\nmax_inflight_messages 100\n"
        "message_size_limit 0\n"
        f"user {pwd.getpwuid(os.getuid()).pw_name}\nlog_dest file {work / 'mosquitto.log'}\n"
        "log_type error\nlog_type warning\n")
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_port(port, proc, "mosquitto")
    return proc


class Bench:
    def __init__(self, work: Path, args: argparse.Namespace) -> None:
        self.work, self.args = work, args
        self.mqtt_port, self.http_port = free_port(), free_port()
        self.config = work / "cloud.toml"
        self.db = work / "cloud.db"
        self.env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.procs: list[subprocess.Popen[bytes]] = []

    def litefleet(self, *argv: str, timeout: float = 600, config: bool = True
                  ) -> subprocess.CompletedProcess[str]:
        more = ["--config", str(self.config)] if config else []
        done = subprocess.run([sys.executable, "-m", "cloud.cli", *argv, *more],
                              capture_output=True, text=True, cwd=self.work,
                              env=self.env, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"litefleet {' '.join(argv)}: {done.stderr.strip()[-2000:]}")
        return done

    def spawn(self, name: str, *argv: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "cloud.cli", *argv, "--config",
                                 str(self.config)], cwd=self.work, env=self.env,
                                stdout=(self.work / f"{name}.out").open("wb"),
                                stderr=(self.work / f"{name}.log").open("wb"))
        self.procs.append(proc)
        return proc

    def setup(self) -> None:
        self.procs.append(start_broker(self.work, self.mqtt_port))
        self.config.write_text(f"""
[mqtt]
host = "127.0.0.1"
port = {self.mqtt_port}

[store]
db = "cloud.db"
artifacts = "file://artifacts"
public_url = "http://127.0.0.1:{self.http_port}/artifacts"

[signing]
key = "keys/release.key"

[http]
host = "127.0.0.1"
port = {self.http_port}

[web]
enabled = false

[rollout]
tick_s = 1.0
""")
        self.litefleet("keys", "generate", "--dir", str(self.work / "keys"), config=False)
        for version, model in ((1, "digits.tflite"), (2, "digits-ft.tflite")):
            self.litefleet("release", str(MODELS / model), "--name", "digits", "--version",
                           str(version), "--profile", "x86-gateway")

    def query(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(str(self.db), timeout=60)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def count(self, sql: str, *params: object) -> int:
        return int(self.query(sql, *params)[0][0])

    def wait(self, check: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.25)
        raise RuntimeError(f"timed out waiting for {what}")

    def rollout(self, ref: str) -> tuple[float, dict[str, int]]:
        started = time.monotonic()
        done = self.litefleet("deploy", ref, "--group", GROUP, "--waves", "1%,10%,100%",
                              "--wait", "--json", "--timeout", "20m", timeout=1500)
        elapsed = time.monotonic() - started
        rollout_id = json.loads(done.stdout.splitlines()[0])["id"]
        statuses = dict(self.query("SELECT status, COUNT(*) FROM rollout_devices WHERE "
                                   "rollout_id = ? GROUP BY status", rollout_id))
        return elapsed, statuses

    def stored_records(self) -> int:
        """Rows the ingester stored in telemetry, updates and events (its own counters: cheap
        to read every 50 ms, unlike COUNT(*) over a growing table)."""
        return self.count("SELECT COALESCE(SUM(value), 0) FROM counters WHERE name IN "
                          "('stored.telemetry', 'stored.updates', 'stored.events')")


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    b = Bench(work, args)
    n = args.devices
    b.setup()
    serve = b.spawn("serve", "serve", "--log-level", "WARNING")
    wait_port(b.http_port, serve, "litefleet serve")
    serve_ps = psutil.Process(serve.pid)
    ramp_started = time.monotonic()
    sim = b.spawn("sim", "sim", "--devices", str(n), "--id-prefix", PREFIX, "--group", GROUP,
                  "--initial", str(MODELS / "digits.tflite"),
                  "--telemetry-interval", str(args.telemetry_interval),
                  "--downloads", str(args.downloads), "--log-level", "WARNING")
    sim_ps = psutil.Process(sim.pid)
    b.wait(lambda: sim.poll() is None and b.count(
        "SELECT COUNT(*) FROM devices WHERE online = 1 AND profile != ''") == n,
        300, f"{n} devices online")
    ramp_s = time.monotonic() - ramp_started

    cpu = {p: sum(ps.cpu_times()[:2]) for p, ps in (("serve", serve_ps), ("sim", sim_ps))}
    rollout_s, full = b.rollout("digits@1")
    rollout_delta_s, delta = b.rollout("digits@2")
    cpu = {"serve": sum(serve_ps.cpu_times()[:2]) - cpu["serve"],
           "sim": sum(sim_ps.cpu_times()[:2]) - cpu["sim"]}

    before, t0 = b.count("SELECT COUNT(*) FROM telemetry"), time.monotonic()
    time.sleep(args.duration)
    steady = (b.count("SELECT COUNT(*) FROM telemetry") - before) / (time.monotonic() - t0)

    # the backlog: serve paused, the fleet keeps sending, then stops (outboxes acknowledged
    # by the broker), serve resumes and stores it all
    serve.send_signal(signal.SIGSTOP)
    frozen = b.stored_records()
    time.sleep(args.backlog)
    sim.send_signal(signal.SIGTERM)
    sim.wait(120)
    summary = json.loads((work / "sim.out").read_text())
    sent = summary["records_sent"]
    backlog = sent - frozen
    resumed = time.monotonic()
    serve.send_signal(signal.SIGCONT)
    last, last_change = frozen, resumed
    while time.monotonic() - last_change < 10 and last < sent:
        time.sleep(0.05)
        now_stored = b.stored_records()
        if now_stored != last:
            last, last_change = now_stored, time.monotonic()
    drain_s = last_change - resumed
    serve.send_signal(signal.SIGTERM)
    serve.wait(60)

    conn = sqlite3.connect(str(b.db))
    try:
        missing = missing_seqs(conn, PREFIX)
    finally:
        conn.close()
    return {
        "benchmark": "fleet", "devices": n, "backend": args.backend,
        "ingest_workers": args.ingest_workers,
        "rollout_s": round(rollout_s, 1), "rollout_committed": full.get("committed", 0),
        "rollout_delta_s": round(rollout_delta_s, 1),
        "rollout_delta_committed": delta.get("committed", 0),
        "rollout_cpu_s": {k: round(v, 1) for k, v in cpu.items()},
        "ramp_up_s": round(ramp_s, 1),
        "telemetry_interval_s": args.telemetry_interval,
        "sim_downloads": args.downloads,
        "telemetry_offered_per_s": round(n / args.telemetry_interval),
        "telemetry_stored_per_s": round(steady),
        "telemetry_records": b.count("SELECT COUNT(*) FROM telemetry WHERE device_id LIKE ?",
                                     f"{PREFIX}-%"),
        "telemetry_missing": sum(missing.values()),
        "devices_with_gaps": len(missing),
        "records_sent": sent, "records_stored": last, "sim_max_rss_mb": summary["max_rss_mb"],
        "ingest_backlog_records": backlog,
        "ingest_records_per_s": round(backlog / drain_s) if drain_s > 0 else None,
        "ingest_records_per_s_2_workers": None,
        "controller_failover_s": None,
        "note": NOTES,
        "cpu_count": os.cpu_count(),
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--backend", choices=["sqlite"], default="sqlite",
                    help="the store's backend (PostgreSQL comes with the store package)")
    ap.add_argument("--ingest-workers", type=int, choices=[1], default=1,
                    help="ingest processes (one `serve --role all` on SQLite)")
    ap.add_argument("--duration", type=float, default=30.0,
                    help="seconds of steady telemetry after the rollouts (default 30)")
    ap.add_argument("--telemetry-interval", type=float, default=1.0,
                    help="seconds between a device's telemetry records (default 1)")
    ap.add_argument("--backlog", type=float, default=20.0,
                    help="seconds the ingest is paused while the fleet sends (default 20)")
    ap.add_argument("--downloads", type=int, default=32,
                    help="the simulator's concurrent downloads (default 32)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs, store)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lf-fleet-bench-"))
    try:
        result = run(args, work)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        result = {"benchmark": "fleet", "devices": args.devices, "error": str(e),
                  "work": str(work)}
        args.keep = True
    finally:
        for proc in psutil.Process().children():  # what this script started and left
            try:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
            except psutil.NoSuchProcess:
                pass
    if args.keep:
        result["work"] = str(work)
    else:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
