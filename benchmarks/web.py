"""Dashboard server time at fleet scale: the fleet page and /api/v1/devices.

A store in a temporary folder gets `--devices` devices (profiles, models, update phases,
groups, liveness, drift figures on about a third of them spread out) written directly, and a week of per-minute telemetry for
`--week-devices` of them (a week for all 10,000 would be 100 million rows: more than this
benchmark needs, since neither measured route reads telemetry; the device charts' 7-day query
is timed on a sampled device). The dashboard runs on uvicorn on a free loopback port, as
`serve` runs it; `--requests` requests per route go out one at a time with a mix of pages,
sorts, filters and searches. Server time is the app's own `Server-Timing` header (routing,
auth, queries, rendering); the client's wall time is reported beside it. Prints one JSON line.

    .venv/bin/python benchmarks/web.py [--devices 10000] [--week-devices 20] [--requests 200]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from cloud.config import parse_cloud_config
from cloud.store import open_store
from cloud.store.rollup import add_records
from cloud.web import WebServer, create_app
from cloud.web.accounts import Role, add_user, new_token

PROFILES = ("x86-gateway", "rpi5", "jetson-orin", "coral-dev")
MODELS = (("digits", 3), ("digits", 4), ("vibration", 2), ("people", 7))
PHASES = (
    "idle",
    "committed",
    "committed",
    "committed",
    "downloading",
    "probation",
    "rolled_back",
    "rejected",
)
SORTS = ("device_id", "fps", "p95", "last_seen", "model", "phase")
STATES = ("", "", "online", "offline", "failing", "updating", "drifting")


def populate(db_path: Path, devices: int, week_devices: int, now: float) -> None:
    db = open_store(db_path)
    rng = random.Random(7)
    rows, groups = [], []
    for i in range(devices):
        name, version = MODELS[i % len(MODELS)]
        device_id = f"cam-{i:05d}"
        seen = now - rng.choice((5, 20, 60, 600, 86400))
        drift, drifting = "", 0
        if i % 3 == 0:  # a reference profile: drift figures, some over the threshold
            score = round(rng.uniform(0.0, 0.5), 3)
            drift = json.dumps(
                {"score": score, "feature": "input.c0", "threshold": 0.25, "samples": 300}
            )
            drifting = int(score > 0.25)
        rows.append(
            (
                device_id,
                int(seen > now - 180),
                PROFILES[i % len(PROFILES)],
                "0.1.0",
                name,
                version,
                f"{i:064x}",
                rng.choice(PHASES),
                rng.choice(("up", "up", "up", "down: no frames")),
                round(rng.uniform(5, 30), 1),
                round(rng.uniform(2, 40), 1),
                seen,
                seen,
                drift,
                drifting,
            )
        )
        groups.append((f"site-{i % 10}", device_id))
    with db.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO devices (device_id, online, profile, agent_version, model_name, "
            "model_version, model_sha256, update_phase, source_status, fps, p95_ms, state_ts, "
            "last_seen, drift, drifting) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.exec_driver_sql("INSERT INTO groups (group_name, device_id) VALUES (?, ?)", groups)
    minutes = 7 * 24 * 60
    for d in range(week_devices):
        device_id = f"cam-{d:05d}"
        batch = []
        for m in range(minutes):
            ts = now - (minutes - m) * 60.0
            fps, p95 = 10 + rng.random(), 8 + rng.random() * 4
            body = json.dumps(
                {
                    "schema": "litefleet.telemetry/1",
                    "device_id": device_id,
                    "seq": m + 1,
                    "ts": ts,
                    "fps": fps,
                    "latency_p95_ms": p95,
                    "cpu_percent": 20 + rng.random() * 5,
                    "rss_mb": 140.0,
                    "outbox_depth": rng.randrange(3),
                },
                separators=(",", ":"),
            )
            batch.append((device_id, m + 1, ts, ts, "digits", 3, "", fps, p95, 600, 0, body))
        with db.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO telemetry (device_id, seq, ts, received, model_name, model_version,"
                " model_sha256, fps, latency_p95_ms, inferences, errors, body) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                batch,
            )
            add_records(conn, batch, all_new=True)  # the rollup the 7-day chart reads
    db.close()


def query_mix(rng: random.Random, devices: int) -> dict[str, Any]:
    params: dict[str, Any] = {
        "sort": rng.choice(SORTS),
        "desc": rng.choice(("true", "false")),
        "page": rng.randrange(1, max(2, devices // 50)),
    }
    state = rng.choice(STATES)
    if state:
        params["state"] = state
        params["page"] = 1
    if rng.random() < 0.2:
        params["q"] = f"{rng.randrange(100):02d}"
        params["page"] = 1
    if rng.random() < 0.2:
        params["group"] = f"site-{rng.randrange(10)}"
        params["page"] = 1
    return params


def server_ms(response: httpx.Response) -> float:
    found = re.search(r"dur=([0-9.]+)", response.headers.get("server-timing", ""))
    assert found, "no Server-Timing header"
    return float(found.group(1))


def p95(values: list[float]) -> float:
    return round(statistics.quantiles(values, n=20)[18], 1)


def measure(
    client: httpx.Client, path: str, requests: int, devices: int, seed: int
) -> dict[str, float]:
    rng = random.Random(seed)
    server, wall = [], []
    for _ in range(requests):
        started = time.perf_counter()
        r = client.get(path, params=query_mix(rng, devices))
        wall.append((time.perf_counter() - started) * 1e3)
        assert r.status_code == 200, (path, r.status_code, r.text[:200])
        server.append(server_ms(r))
    return {
        "server_p50_ms": round(statistics.median(server), 1),
        "server_p95_ms": p95(server),
        "wall_p95_ms": p95(wall),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--week-devices", type=int, default=20)
    ap.add_argument("--requests", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="litefleet-web-bench-") as tmp:
        root = Path(tmp)
        config = parse_cloud_config(
            '[store]\ndb = "cloud.db"\n[web]\nlisten = "127.0.0.1:0"\n[http]\nenabled = false\n',
            base_dir=root,
        )
        now = time.time()
        started = time.perf_counter()
        populate(config.store.db, args.devices, args.week_devices, now)
        populate_s = time.perf_counter() - started
        db = open_store(config.store.db)
        password = add_user(db, "bench", Role.VIEWER)
        token = new_token(db, "bench")
        db.close()
        server = WebServer(create_app(config, secret=os.urandom(32)), "127.0.0.1", 0)
        server.start()
        try:
            base = f"http://127.0.0.1:{server.port}"
            with (
                httpx.Client(base_url=base, timeout=60) as browser,
                httpx.Client(
                    base_url=base, timeout=60, headers={"Authorization": f"Bearer {token}"}
                ) as api,
            ):
                assert (
                    browser.post("/login", data={"name": "bench", "password": password}).status_code
                    == 303
                )
                browser.get("/fleet")  # warm: templates compiled, connections opened
                api.get("/api/v1/devices")
                fleet = measure(browser, "/fleet", args.requests, args.devices, 1)
                live = measure(browser, "/fleet/live", args.requests, args.devices, 2)
                devices = measure(api, "/api/v1/devices", args.requests, args.devices, 3)
                week = []
                for _ in range(20):
                    r = api.get("/api/v1/devices/cam-00000/series", params={"window": "7d"})
                    assert r.status_code == 200 and len(r.json()["t"]) >= 160
                    week.append(server_ms(r))
        finally:
            server.stop()
        print(
            json.dumps(
                {
                    "benchmark": "web",
                    "devices": args.devices,
                    "week_of_minutes_for": args.week_devices,
                    "telemetry_rows": args.week_devices * 7 * 24 * 60,
                    "populate_s": round(populate_s, 1),
                    "requests_per_route": args.requests,
                    "fleet_page": fleet,
                    "fleet_live_partial": live,
                    "api_devices": devices,
                    "device_series_7d_server_p95_ms": p95(week),
                    "target_p95_ms": 200,
                    "ok": fleet["server_p95_ms"] <= 200 and devices["server_p95_ms"] <= 200,
                    "loadavg": [round(x, 2) for x in os.getloadavg()],
                }
            )
        )


if __name__ == "__main__":
    main()
