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

With `--backend postgresql` the store is a PostgreSQL server of the benchmark's own (Debian's
binaries, `initdb` into the work folder, as the tests do) and the cloud runs as separate
processes: `serve --role artifacts`, two `serve --role controller` (one active, one standing
by) and `--ingest-workers` `serve --role ingest` sharing the device topics. During the first
rollout one ingest worker is killed with -9 and started again under its name 3 s later
(`ingest_worker_killed`); during the second, the active controller is killed with -9 and
`controller_failover_s` is the time until the standby holds the lease and has ticked (the
killed one is started again as the new standby). On SQLite one `serve --role all` runs, and
those fields are null.

Prints one JSON line.

    .venv/bin/python benchmarks/fleet.py [--devices 1000] [--backend sqlite|postgresql]
        [--ingest-workers 1] [--duration 30] [--telemetry-interval 1] [--backlog 20]
        [--downloads 32]
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import text

from cloud.sim.audit import missing_seqs
from cloud.store import open_store
from cloud.store.leases import holder

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "examples" / "models"
GROUP = "bench"
PREFIX = "fleet"
NOTES = {
    "controller_failover_s": "on SQLite one `serve --role all` runs: no standby controller",
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
        "log_type error\nlog_type warning\n"
    )
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_port(port, proc, "mosquitto")
    return proc


class Bench:
    def __init__(self, work: Path, args: argparse.Namespace) -> None:
        self.work, self.args = work, args
        self.mqtt_port, self.http_port = free_port(), free_port()
        self.config = work / "cloud.toml"
        self.db = work / "cloud.db"
        self.url = f"sqlite:///{self.db}"
        self.postgres: Any = None
        if args.backend == "postgresql":
            sys.path.insert(0, str(REPO))
            from tests.postgres_server import PostgresServer, postgres_bin

            bindir = postgres_bin()
            if bindir is None:
                raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
            self.postgres = PostgresServer(bindir)
            self.postgres.start()
            self.url = self.postgres.create_database()
        self._store: Any = None
        self.env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.procs: list[subprocess.Popen[bytes]] = []

    def litefleet(
        self, *argv: str, timeout: float = 600, config: bool = True
    ) -> subprocess.CompletedProcess[str]:
        more = ["--config", str(self.config)] if config else []
        done = subprocess.run(
            [sys.executable, "-m", "cloud.cli", *argv, *more],
            capture_output=True,
            text=True,
            cwd=self.work,
            env=self.env,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"litefleet {' '.join(argv)}: {done.stderr.strip()[-2000:]}")
        return done

    def spawn(self, name: str, *argv: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cloud.cli", *argv, "--config", str(self.config)],
            cwd=self.work,
            env=self.env,
            stdout=(self.work / f"{name}.out").open("wb"),
            stderr=(self.work / f"{name}.log").open("wb"),
        )
        self.procs.append(proc)
        return proc

    def setup(self) -> None:
        self.procs.append(start_broker(self.work, self.mqtt_port))
        self.config.write_text(f"""
[mqtt]
host = "127.0.0.1"
port = {self.mqtt_port}

[store]
url = "{self.url}"
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
        self.litefleet("store", "migrate")
        self.litefleet("keys", "generate", "--dir", str(self.work / "keys"), config=False)
        for version, model in ((1, "digits.tflite"), (2, "digits-ft.tflite")):
            self.litefleet(
                "release",
                str(MODELS / model),
                "--name",
                "digits",
                "--version",
                str(version),
                "--profile",
                "x86-gateway",
            )

    def store(self) -> Any:
        if self._store is None:
            self._store = open_store(self.url)
        return self._store

    def query(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        """`?` placeholders, on either backend."""
        names = iter(range(len(params)))
        named = re.sub(r"\?", lambda _m: f":p{next(names)}", sql)
        with self.store().connect() as conn:
            return [
                tuple(r)
                for r in conn.execute(text(named), {f"p{i}": p for i, p in enumerate(params)})
            ]

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
        if self.postgres is not None:
            self.postgres.stop()

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
        done = self.litefleet(
            "deploy",
            ref,
            "--group",
            GROUP,
            "--waves",
            "1%,10%,100%",
            "--wait",
            "--json",
            "--timeout",
            "20m",
            timeout=1500,
        )
        elapsed = time.monotonic() - started
        rollout_id = json.loads(done.stdout.splitlines()[0])["id"]
        statuses = dict(
            self.query(
                "SELECT status, COUNT(*) FROM rollout_devices WHERE rollout_id = ? GROUP BY status",
                rollout_id,
            )
        )
        return elapsed, statuses

    def stored_records(self) -> int:
        """Rows the ingester stored in telemetry, updates and events (its own counters: cheap
        to read every 50 ms, unlike COUNT(*) over a growing table)."""
        return self.count(
            "SELECT COALESCE(SUM(value), 0) FROM counters WHERE name IN "
            "('stored.telemetry', 'stored.updates', 'stored.events')"
        )


class Cloud:
    """The cloud's processes: one `serve --role all` (SQLite), or an artifact server, two
    controllers and the ingest workers (PostgreSQL)."""

    def __init__(self, b: Bench, workers: int) -> None:
        self.b = b
        if b.args.backend == "sqlite":
            serve = b.spawn("serve", "serve", "--log-level", "WARNING")
            self.http, self.controllers, self.ingest = serve, [serve], [serve]
            wait_port(b.http_port, serve, "litefleet serve")
            return
        self.http = b.spawn("artifacts", "serve", "--role", "artifacts", "--log-level", "WARNING")
        self.controllers = [
            b.spawn(f"controller-{i}", "serve", "--role", "controller", "--log-level", "INFO")
            for i in (1, 2)
        ]
        self.ingest = [self.ingest_worker(i) for i in range(1, workers + 1)]
        wait_port(b.http_port, self.http, "litefleet serve --role artifacts")
        for i in range(1, workers + 1):  # every session subscribed before the fleet starts
            log = b.work / f"ingest-{i}.log"
            b.wait(lambda log=log: "connected to" in log.read_text(), 60, f"ingest worker {i}")

    def ingest_worker(self, i: int, again: int = 0) -> subprocess.Popen[bytes]:
        return self.b.spawn(
            f"ingest-{i}" + (f"-again{again}" if again else ""),
            "serve",
            "--role",
            "ingest",
            "--worker",
            f"w{i}",
            "--log-level",
            "INFO",
        )

    @property
    def all(self) -> list[subprocess.Popen[bytes]]:
        return list(dict.fromkeys([self.http, *self.controllers, *self.ingest]))

    def cpu_s(self) -> float:
        total = 0.0
        for p in self.all:
            try:
                total += sum(psutil.Process(p.pid).cpu_times()[:2])
            except psutil.NoSuchProcess:
                pass
        return total

    def kill_ingest_worker(self, after_s: float, down_s: float) -> None:
        """Kill worker 1 with -9 `after_s` into what runs now; start it again `down_s` later."""
        time.sleep(after_s)
        self.ingest[0].kill()
        self.ingest[0].wait()
        time.sleep(down_s)
        self.ingest[0] = self.ingest_worker(1, again=1)

    def fail_over(self, after_s: float, result: dict[str, Any]) -> None:
        """Kill the active controller with -9 `after_s` into what runs now; the time until the
        standby holds the lease (it ticks as it takes it) goes to `result`."""
        time.sleep(after_s)
        store = self.b.store()
        held = holder(store, "controller")
        if held is None:
            return
        pid = int(held[0].rsplit(":", 1)[1])
        active = next(p for p in self.controllers if p.pid == pid)
        active.kill()
        active.wait()
        killed = time.monotonic()
        while time.monotonic() - killed < 60:
            now = holder(store, "controller")
            if now is not None and not now[0].endswith(f":{pid}"):
                result["controller_failover_s"] = round(time.monotonic() - killed, 1)
                break
            time.sleep(0.05)
        i = self.controllers.index(active)
        self.controllers[i] = self.b.spawn(
            f"controller-{i + 1}-again", "serve", "--role", "controller", "--log-level", "INFO"
        )


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import threading

    b = Bench(work, args)
    n = args.devices
    pg = args.backend == "postgresql"
    try:
        b.setup()
        cloud = Cloud(b, args.ingest_workers if pg else 1)
        return measure(args, b, cloud, n, pg, threading)
    finally:
        b.close()


def measure(
    args: argparse.Namespace, b: Bench, cloud: Cloud, n: int, pg: bool, threading: Any
) -> dict[str, Any]:
    work = b.work
    ramp_started = time.monotonic()
    sim = b.spawn(
        "sim",
        "sim",
        "--devices",
        str(n),
        "--id-prefix",
        PREFIX,
        "--group",
        GROUP,
        "--initial",
        str(MODELS / "digits.tflite"),
        "--telemetry-interval",
        str(args.telemetry_interval),
        "--downloads",
        str(args.downloads),
        "--log-level",
        "WARNING",
    )
    sim_ps = psutil.Process(sim.pid)
    b.wait(
        lambda: (
            sim.poll() is None
            and b.count("SELECT COUNT(*) FROM devices WHERE online = 1 AND profile != ''") == n
        ),
        300,
        f"{n} devices online",
    )
    ramp_s = time.monotonic() - ramp_started

    faults: dict[str, Any] = {"ingest_worker_killed": False, "controller_failover_s": None}
    cpu = {"serve": cloud.cpu_s(), "sim": sum(sim_ps.cpu_times()[:2])}
    killer = None
    if pg:  # one ingest worker killed -9 mid-rollout, and started again under its name
        killer = threading.Thread(target=cloud.kill_ingest_worker, args=(4.0, 3.0))
        killer.start()
        faults["ingest_worker_killed"] = True
    rollout_s, full = b.rollout("digits@1")
    if killer is not None:
        killer.join()
    failover = None
    if pg:  # the active controller killed -9 mid-rollout: the standby takes over
        failover = threading.Thread(target=cloud.fail_over, args=(4.0, faults))
        failover.start()
    rollout_delta_s, delta = b.rollout("digits@2")
    if failover is not None:
        failover.join()
    cpu = {"serve": cloud.cpu_s() - cpu["serve"], "sim": sum(sim_ps.cpu_times()[:2]) - cpu["sim"]}

    before, t0 = b.count("SELECT COUNT(*) FROM telemetry"), time.monotonic()
    time.sleep(args.duration)
    steady = (b.count("SELECT COUNT(*) FROM telemetry") - before) / (time.monotonic() - t0)

    # the backlog: ingest paused, the fleet keeps sending, then stops (outboxes acknowledged
    # by the broker), ingest resumes and stores it all
    for p in cloud.ingest:
        p.send_signal(signal.SIGSTOP)
    frozen = b.stored_records()
    time.sleep(args.backlog)
    sim.send_signal(signal.SIGTERM)
    sim.wait(120)
    summary = json.loads((work / "sim.out").read_text())
    sent = summary["records_sent"]
    backlog = sent - frozen
    resumed = time.monotonic()
    for p in cloud.ingest:
        p.send_signal(signal.SIGCONT)
    last, last_change = frozen, resumed
    while time.monotonic() - last_change < 10 and last < sent:
        time.sleep(0.05)
        now_stored = b.stored_records()
        if now_stored != last:
            last, last_change = now_stored, time.monotonic()
    drain_s = last_change - resumed
    for p in cloud.all:
        p.send_signal(signal.SIGTERM)
    for p in cloud.all:
        p.wait(60)

    missing = missing_seqs(b.store(), PREFIX)
    return {
        "benchmark": "fleet",
        "devices": n,
        "backend": args.backend,
        "ingest_workers": len(cloud.ingest) if pg else 1,
        "rollout_s": round(rollout_s, 1),
        "rollout_committed": full.get("committed", 0),
        "rollout_delta_s": round(rollout_delta_s, 1),
        "rollout_delta_committed": delta.get("committed", 0),
        "rollout_cpu_s": {k: round(v, 1) for k, v in cpu.items()},
        "ramp_up_s": round(ramp_s, 1),
        "telemetry_interval_s": args.telemetry_interval,
        "sim_downloads": args.downloads,
        "telemetry_offered_per_s": round(n / args.telemetry_interval),
        "telemetry_stored_per_s": round(steady),
        "telemetry_records": b.count(
            "SELECT COUNT(*) FROM telemetry WHERE device_id LIKE ?", f"{PREFIX}-%"
        ),
        "telemetry_missing": sum(missing.values()),
        "devices_with_gaps": len(missing),
        "records_sent": sent,
        "records_stored": last,
        "sim_max_rss_mb": summary["max_rss_mb"],
        "ingest_backlog_records": backlog,
        "ingest_records_per_s": round(backlog / drain_s) if drain_s > 0 else None,
        **faults,
        "note": {} if pg else NOTES,
        "cpu_count": os.cpu_count(),
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument(
        "--backend",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="the store: SQLite (one `serve --role all`) or a PostgreSQL server "
        "of the benchmark's own (separate roles, faults injected)",
    )
    ap.add_argument(
        "--ingest-workers",
        type=int,
        default=1,
        help="`serve --role ingest` processes (PostgreSQL only; default 1)",
    )
    ap.add_argument(
        "--duration",
        type=float,
        default=30.0,
        help="seconds of steady telemetry after the rollouts (default 30)",
    )
    ap.add_argument(
        "--telemetry-interval",
        type=float,
        default=1.0,
        help="seconds between a device's telemetry records (default 1)",
    )
    ap.add_argument(
        "--backlog",
        type=float,
        default=20.0,
        help="seconds the ingest is paused while the fleet sends (default 20)",
    )
    ap.add_argument(
        "--downloads",
        type=int,
        default=32,
        help="the simulator's concurrent downloads (default 32)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs, store)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lf-fleet-bench-"))
    try:
        result = run(args, work)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        result = {"benchmark": "fleet", "devices": args.devices, "error": str(e), "work": str(work)}
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
