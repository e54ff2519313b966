"""Every query of `cloud.store.dashboard` (the dashboard's) on both of the store's backends,
SQLite and a real PostgreSQL (the session's server, `tests/postgres_server.py`), with the same
rows and the same answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cloud.store import Store, engine_url, open_store
from cloud.store import dashboard as queries
from cloud.store.migrate import migrate

ROWS = {
    "devices": [
        "INSERT INTO devices (device_id, online, profile, model_name, model_version, "
        "update_phase, source_status, fps, p95_ms, last_seen, drifting, root_version) VALUES "
        "(:d, :o, :p, 'digits', :v, :ph, :s, :f, 5.0, :t, :dr, :rv)",
        [
            {
                "d": f"Cam-{i}",
                "o": i % 2,
                "p": "rpi5" if i % 3 else "x86-gateway",
                "v": 1 + i % 2,
                "ph": "rejected" if i == 4 else "idle",
                "s": "down: x" if i == 5 else "up",
                "f": float(i),
                "t": 1000.0 + i,
                "dr": int(i in (3, 6)),
                "rv": i % 3,  # 0: an agent that does not report its root
            }
            for i in range(12)
        ],
    ],
    "groups": [
        "INSERT INTO groups (group_name, device_id) VALUES ('north', :d)",
        [{"d": f"Cam-{i}"} for i in range(4)],
    ],
    "telemetry": [
        "INSERT INTO telemetry (device_id, seq, ts, received, fps, latency_p95_ms, "
        "body) VALUES ('Cam-1', :s, :t, :t, :f, 2.0, :b)",
        [
            {"s": s, "t": 1000.0 + 7 * s, "f": float(s), "b": f'{{"seq": {s}}}'}
            for s in range(1, 40)
        ],
    ],
    "updates": [
        "INSERT INTO updates (device_id, seq, ts, received, rollout_id, phase, model, "
        "version, sha256, reason, detail, via) VALUES ('Cam-1', :s, :s, :s, 'r1', :p, "
        "'digits', 2, '', :r, :x, 'full')",
        [
            {"s": 1, "p": "downloading", "r": "", "x": ""},
            {"s": 2, "p": "rolled_back", "r": "probation_failed", "x": "agreement 40%"},
        ],
    ],
    "rollouts": [
        "INSERT INTO rollouts (id, release_name, release_version, state, waves, "
        "current_wave, success_threshold_pct, max_failures_pct, created, updated, "
        "wave_started) VALUES ('r1', 'digits', 2, 'paused', '[\"1\"]', 0, 95, 5, 1, 1, 1)",
        [{}],
    ],
    "rollout_devices": [
        "INSERT INTO rollout_devices (rollout_id, device_id, wave, status, "
        "reason, phase, deployment, updated, bytes_done, bytes_total) VALUES "
        "('r1', :d, 0, :st, :r, :ph, '{}', 1, :bd, :bt)",
        [
            {"d": "Cam-1", "st": "failed", "r": "probation_failed", "ph": "", "bd": 0, "bt": 0},
            {"d": "Cam-2", "st": "committed", "r": "", "ph": "", "bd": 5, "bt": 5},
            # two downloads whose figures overflow an integer sum (a device may say any int64)
            {
                "d": "Cam-3",
                "st": "pending",
                "r": "",
                "ph": "downloading",
                "bd": 1 << 62,
                "bt": (1 << 63) - 1,
            },
            {
                "d": "Cam-4",
                "st": "pending",
                "r": "",
                "ph": "downloading",
                "bd": 1 << 62,
                "bt": (1 << 63) - 1,
            },
        ],
    ],
    "audit": [
        "INSERT INTO audit (ts, actor, action, target) VALUES (:t, 'ann', 'deploy', 'r1')",
        [{"t": 1.0}, {"t": 2.0}],
    ],
}


def answers(db: Any) -> dict[str, Any]:
    """Every query's answer, made comparable (floats rounded, ints as ints)."""
    for sql, rows in ROWS.values():
        for row in rows:
            queries.write(db, sql, row)
    assert queries.insert_user(db, "ann", "operator", "h")
    queries.insert_token(db, "ann", "abc")
    f = queries.DeviceFilter
    out: dict[str, Any] = {
        "counts": queries.fleet_counts(db, 1010.0, 8.0),
        "options": queries.filter_options(db),
        "device": queries.device(db, "Cam-1", 1010.0, 8.0),
        "latest": queries.latest_telemetry_body(db, "Cam-1"),
        "updates": queries.device_updates(db, "Cam-1"),
        "events": queries.device_events(db, "Cam-1"),
        "since": queries.telemetry_since(db, "Cam-1", 1200.0, 5),
        "rollouts": queries.rollouts(db),
        "rollout": queries.rollout(db, "r1"),
        "waves": queries.rollout_waves(db, "r1"),
        "failures": queries.rollout_failures(db, "r1"),
        "rollout_devices": queries.rollout_devices(db, "r1", 3),
        "releases": queries.release_envelopes(db),
        "running": queries.running_counts(db),
        "running_devices": queries.running_devices(db, "digits", 2, "rpi5"),
        "groups": queries.group_names(db),
        "audit": queries.audit_page(db, 0, 10),
        "user": queries.user(db, "ann"),
        "users": queries.users(db),
        "token": queries.user_for_token(db, "abc"),
    }
    for state in ("", *queries.STATES):
        for sort in queries.SORTS:
            out[f"page-{state}-{sort}"] = queries.device_page(
                db,
                f(
                    state=state,
                    group="north" if sort == "fps" else "",
                    search="cam-1" if sort == "profile" else "",
                ),
                sort=sort,
                descending=sort == "p95",
                offset=1,
                limit=4,
                now=1010.0,
                offline_after_s=8.0,
            )
    out["series"] = queries.device_series(db, "Cam-1", 1000.0, 60)
    assert queries.delete_user(db, "ann") and queries.user(db, "ann") is None
    return normal(out)


def normal(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: normal(v) for k, v in value.items() if k != "created"}
    if isinstance(value, list | tuple):
        return [normal(v) for v in value]
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return round(value, 6)
    return value


def test_every_query_answers_the_same_on_sqlite_and_postgresql(
    tmp_path: Path, postgres: Any
) -> None:
    lite = open_store(tmp_path / "cloud.db")
    try:
        on_sqlite = answers(lite)
    finally:
        lite.close()
    url = postgres.create_database()
    fresh = Store(engine_url(url))
    migrate(fresh)
    fresh.close()
    pg = open_store(url)
    try:
        on_postgres = answers(pg)
    finally:
        pg.close()
    assert on_postgres == on_sqlite
    assert on_sqlite["counts"]["failing"] == 2 and len(on_sqlite["page-failing-fps"][1]) == 0
    assert on_sqlite["counts"]["drifting"] == 2
    assert on_sqlite["counts"]["roots"] == [
        {"root_version": 2, "devices": 4},
        {"root_version": 1, "devices": 4},
        {"root_version": 0, "devices": 4},
    ]
    assert on_sqlite["device"]["root_version"] == 1  # Cam-1
    assert [d["device_id"] for d in on_sqlite["page-drifting-device_id"][1]] == [
        "Cam-6"
    ]  # offset 1
    assert on_sqlite["rollouts"][0]["downloads"]["devices"] == 2
    assert on_sqlite["rollouts"][0]["downloads"]["bytes_done"] == 1 << 63
    assert [d["device_id"] for d in on_sqlite["rollout_devices"]] == ["Cam-3", "Cam-4", "Cam-1"]
    assert on_sqlite["page--profile"][0] == 3  # Cam-1, Cam-10, Cam-11: any case
    # 39 records, 7 s apart from ts 1007: minutes 16 (1007-1019) to 21 (1260-1280)
    assert [a["bucket"] for a in on_sqlite["series"][0]] == [16, 17, 18, 19, 20, 21]
