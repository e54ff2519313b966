"""Every query the dashboard (`cloud.web`) and its API make, as portable SQL.

The SQL here is standard: valid on SQLite and PostgreSQL alike (named `:param` placeholders,
`LIMIT/OFFSET`, `LOWER(...) LIKE`, `CAST(... AS INTEGER)`, no JSON functions, no rowid). Each
function takes the `Store` as its first argument and goes through `execute` or `write`, the
only two functions that touch a connection (SQLAlchemy `text()`), and runs on both backends
(tests/cloud/test_store.py and tests/cloud/web run them on each).

`CAST(x AS INTEGER)` truncates on SQLite and rounds on PostgreSQL: `_BUCKET` corrects the
rounding, so the series buckets of `device_series` are the same on both. (The outer query
groups by the output alias, not by a repeated expression: PostgreSQL does not see two bound
copies of one parameter as the same expression.) Short series are computed from raw telemetry;
buckets of an hour or more come from the per-minute rollup through `cloud.store.rollup.buckets`,
the one query of the rollup, which `litefleet telemetry --every` reads as well.

Byte counts are summed as `CAST(... AS DOUBLE PRECISION)`: a device may report any int64,
and SQLite's integer SUM fails on overflow where a float sum only loses precision.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from cloud.store import rollup
from cloud.store.engine import Store
from shared.phases import UpdatePhase

__all__ = [
    "SORTS",
    "STATES",
    "DeviceFilter",
    "audit_page",
    "delete_user",
    "device",
    "device_events",
    "device_page",
    "device_series",
    "device_updates",
    "execute",
    "filter_options",
    "fleet_counts",
    "group_names",
    "insert_token",
    "insert_user",
    "latest_telemetry_body",
    "release_envelopes",
    "rollout",
    "rollout_devices",
    "rollout_failures",
    "rollout_waves",
    "rollouts",
    "running_counts",
    "running_devices",
    "set_password_hash",
    "telemetry_since",
    "user",
    "user_for_token",
    "users",
    "write",
]

Row = dict[str, Any]

# fleet table: the columns a user may sort by (the request names a key, never SQL)
SORTS = {
    "device_id": "device_id",
    "profile": "profile",
    "model": "model_name",
    "version": "model_version",
    "fps": "fps",
    "p95": "p95_ms",
    "phase": "update_phase",
    "source": "source_status",
    "last_seen": "last_seen",
}
STATES = ("online", "offline", "failing", "updating", "drifting")
FAILED_PHASES = ("rolled_back", "rejected")
# every phase of an update under way (a newer agent may add one: shared.phases declares them)
BUSY_PHASES = tuple(phase.value for phase in UpdatePhase if not phase.terminal)
# floor(ts / :b) for positive ts, alike on SQLite (CAST truncates) and PostgreSQL (CAST rounds)
_BUCKET = (
    "(CAST(ts / :b AS INTEGER) - CASE WHEN CAST(ts / :b AS INTEGER) > ts / :b THEN 1 ELSE 0 END)"
)


def execute(db: Store, sql: str, params: dict[str, Any] | None = None) -> list[Row]:
    """Run one read; rows as dicts keyed by column name."""
    with db.connect() as conn:
        return [dict(r) for r in conn.execute(text(sql), params or {}).mappings()]


def write(db: Store, sql: str, params: dict[str, Any] | None = None) -> int:
    """Run one change in its own transaction; how many rows it touched."""
    with db.begin() as conn:
        return int(conn.execute(text(sql), params or {}).rowcount)


def _in(name: str, values: tuple[object, ...]) -> tuple[str, dict[str, Any]]:
    """`name IN (:name0, :name1...)` and its parameters."""
    params = {f"{name}{i}": v for i, v in enumerate(values)}
    return ", ".join(f":{k}" for k in params), params


# ---- fleet ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceFilter:
    group: str = ""
    profile: str = ""
    model: str = ""  # a model name
    state: str = ""  # one of STATES, or "" for all
    search: str = ""  # part of the device id, any case


def _liveness(now: float, offline_after_s: float) -> dict[str, Any]:
    return {"fresh_after": now - offline_after_s}


ONLINE_SQL = "(online = 1 AND last_seen >= :fresh_after)"


def _where(f: DeviceFilter) -> tuple[str, dict[str, Any]]:
    clauses: list[str] = []
    params: dict[str, Any] = {}
    if f.group:
        clauses.append("device_id IN (SELECT device_id FROM groups WHERE group_name = :grp)")
        params["grp"] = f.group
    if f.profile:
        clauses.append("profile = :profile")
        params["profile"] = f.profile
    if f.model:
        clauses.append("model_name = :model")
        params["model"] = f.model
    if f.search:
        clauses.append("LOWER(device_id) LIKE :search")
        escaped = f.search.lower().replace("\\", "").replace("%", "").replace("_", "")
        params["search"] = f"%{escaped}%"
    failed, fp = _in("failed", FAILED_PHASES)
    busy, bp = _in("busy", BUSY_PHASES)
    if f.state == "online":
        clauses.append(ONLINE_SQL)
    elif f.state == "offline":
        clauses.append(f"NOT {ONLINE_SQL}")
    elif f.state == "failing":
        clauses.append(f"(update_phase IN ({failed}) OR source_status LIKE 'down%')")
        params.update(fp)
    elif f.state == "updating":
        clauses.append(f"update_phase IN ({busy})")
        params.update(bp)
    elif f.state == "drifting":
        clauses.append("drifting = 1")
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def fleet_counts(db: Store, now: float, offline_after_s: float) -> Row:
    """Devices in total, online, failing, drifting (drift over the release's threshold, as
    far as known); and per model@version, per update phase and per root version (the root of
    trust each device's state reports; 0: not reported, an older agent)."""
    failed, fp = _in("failed", FAILED_PHASES)
    head = execute(
        db,
        f"SELECT COUNT(*) AS total, "
        f"SUM(CASE WHEN {ONLINE_SQL} THEN 1 ELSE 0 END) AS online, "
        f"SUM(CASE WHEN update_phase IN ({failed}) OR source_status LIKE 'down%' "
        f"THEN 1 ELSE 0 END) AS failing, "
        f"SUM(CASE WHEN drifting = 1 THEN 1 ELSE 0 END) AS drifting FROM devices",
        {**_liveness(now, offline_after_s), **fp},
    )[0]
    total = int(head["total"] or 0)
    online = int(head["online"] or 0)
    models = execute(
        db,
        "SELECT model_name, model_version, COUNT(*) AS n FROM devices "
        "GROUP BY model_name, model_version ORDER BY n DESC, model_name, "
        "model_version",
    )
    phases = execute(
        db,
        "SELECT update_phase, COUNT(*) AS n FROM devices "
        "GROUP BY update_phase ORDER BY n DESC, update_phase",
    )
    roots = execute(
        db,
        "SELECT root_version, COUNT(*) AS n FROM devices "
        "GROUP BY root_version ORDER BY root_version DESC",
    )
    return {
        "total": total,
        "online": online,
        "offline": total - online,
        "failing": int(head["failing"] or 0),
        "drifting": int(head["drifting"] or 0),
        "models": [
            {
                "model": f"{r['model_name']}@{r['model_version']}" if r["model_name"] else "(none)",
                "devices": r["n"],
            }
            for r in models
        ],
        "phases": [{"phase": r["update_phase"] or "(none)", "devices": r["n"]} for r in phases],
        "roots": [{"root_version": int(r["root_version"]), "devices": r["n"]} for r in roots],
    }


def device_page(
    db: Store,
    f: DeviceFilter,
    *,
    sort: str = "device_id",
    descending: bool = False,
    offset: int = 0,
    limit: int = 50,
    now: float,
    offline_after_s: float,
) -> tuple[int, list[Row]]:
    """(devices matching, one page of them) for the fleet table."""
    where, params = _where(f)
    params.update(_liveness(now, offline_after_s))
    total = execute(db, f"SELECT COUNT(*) AS n FROM devices{where}", params)[0]["n"]
    column = SORTS.get(sort, "device_id")
    order = f"{column} {'DESC' if descending else 'ASC'}"
    if column != "device_id":
        order += ", device_id ASC"
    rows = execute(
        db,
        f"SELECT device_id, profile, model_name, model_version, fps, p95_ms, "
        f"source_status, update_phase, last_seen, agent_version, drifting, "
        f"CASE WHEN {ONLINE_SQL} THEN 1 ELSE 0 END AS is_online "
        f"FROM devices{where} ORDER BY {order} LIMIT :lim OFFSET :off",
        {**params, "lim": limit, "off": offset},
    )
    return int(total), rows


def filter_options(db: Store) -> Row:
    """The groups, profiles and model names there are, for the fleet filters."""
    return {
        "groups": [
            r["group_name"]
            for r in execute(db, "SELECT DISTINCT group_name FROM groups ORDER BY group_name")
        ],
        "profiles": [
            r["profile"]
            for r in execute(
                db, "SELECT DISTINCT profile FROM devices WHERE profile <> '' ORDER BY profile"
            )
        ],
        "models": [
            r["model_name"]
            for r in execute(
                db,
                "SELECT DISTINCT model_name FROM devices WHERE model_name IS NOT NULL "
                "ORDER BY model_name",
            )
        ],
    }


# ---- one device ----------------------------------------------------------------------------


def device(db: Store, device_id: str, now: float, offline_after_s: float) -> Row | None:
    rows = execute(
        db,
        f"SELECT devices.*, CASE WHEN {ONLINE_SQL} THEN 1 ELSE 0 END AS is_online "
        "FROM devices WHERE device_id = :d",
        {"d": device_id, **_liveness(now, offline_after_s)},
    )
    if not rows:
        return None
    row = rows[0]
    row["groups"] = [
        r["group_name"]
        for r in execute(
            db,
            "SELECT group_name FROM groups WHERE device_id = :d ORDER BY group_name",
            {"d": device_id},
        )
    ]
    return row


def latest_telemetry_body(db: Store, device_id: str) -> str | None:
    rows = execute(
        db,
        "SELECT body FROM telemetry WHERE device_id = :d ORDER BY seq DESC LIMIT 1",
        {"d": device_id},
    )
    return str(rows[0]["body"]) if rows else None


def device_updates(db: Store, device_id: str, limit: int = 50) -> list[Row]:
    """The device's update reports, newest first: phase, outcome reason and its own sentence."""
    return execute(
        db,
        "SELECT seq, ts, rollout_id, phase, model, version, sha256, reason, "
        "detail, via FROM updates WHERE device_id = :d ORDER BY seq DESC "
        "LIMIT :lim",
        {"d": device_id, "lim": limit},
    )


def device_events(db: Store, device_id: str, limit: int = 30) -> list[Row]:
    return execute(
        db,
        "SELECT seq, ts, kind, detail FROM events WHERE device_id = :d "
        "ORDER BY seq DESC LIMIT :lim",
        {"d": device_id, "lim": limit},
    )


def telemetry_since(db: Store, device_id: str, since: float, limit: int) -> list[Row]:
    """Raw records (bodies) with a device timestamp at or after `since`, oldest first."""
    return execute(
        db,
        "SELECT seq, ts, received, body FROM telemetry WHERE device_id = :d "
        "AND ts >= :since ORDER BY seq LIMIT :lim",
        {"d": device_id, "since": since, "lim": limit},
    )


# buckets this long or longer (the 7-day chart) are read from the per-minute rollup
ROLLUP_FROM_S = 3600
ROLLUP_MAX = 100_000  # buckets of one series at most (the 7-day chart has 168)


def device_series(
    db: Store, device_id: str, since: float, bucket_s: int, rollup: bool | None = None
) -> tuple[list[Row], list[Row]]:
    """Bucketed series from `since`: (averages of fps and p95 per bucket, and the body of each
    bucket's last record, for the gauges kept only in the body: CPU, RSS, outbox depth).
    Whole-minute buckets of an hour or more come from `telemetry_minutes` (`rollup`)."""
    params = {"d": device_id, "since": since, "b": bucket_s}
    if rollup is None:
        rollup = bucket_s >= ROLLUP_FROM_S and bucket_s % 60 == 0
    if rollup:
        return _rollup_series(db, params)
    averages = execute(
        db,
        f"SELECT {_BUCKET} AS bucket, AVG(fps) AS fps, "
        "AVG(latency_p95_ms) AS p95_ms, MAX(seq) AS last_seq FROM telemetry "
        "WHERE device_id = :d AND ts >= :since GROUP BY bucket ORDER BY bucket",
        params,
    )
    lasts = execute(
        db,
        "SELECT seq, body FROM telemetry WHERE device_id = :d AND seq IN ("
        "SELECT MAX(seq) FROM telemetry WHERE device_id = :d AND ts >= :since "
        f"GROUP BY {_BUCKET}) ORDER BY seq",
        params,
    )
    return averages, lasts


def _rollup_series(db: Store, params: dict[str, Any]) -> tuple[list[Row], list[Row]]:
    """`device_series` from the rollup (`rollup.buckets`, which `litefleet telemetry --every`
    reads too): minutes from the one holding `since` (whole minutes: up to a minute more than
    the raw series at its start)."""
    rows = rollup.buckets(db, params["since"], params["b"], params["d"], limit=ROLLUP_MAX)
    averages: list[Row] = [
        {"bucket": r.bucket, "fps": r.fps, "p95_ms": r.p95_ms, "last_seq": r.last_seq} for r in rows
    ]
    lasts: list[Row] = []
    for i in range(0, len(rows), 500):  # a bounded IN list (SQLite allows 32,766 parameters)
        seqs, seq_params = _in("s", tuple(r.last_seq for r in rows[i : i + 500]))
        lasts += execute(
            db,
            f"SELECT seq, body FROM telemetry WHERE device_id = :d AND seq IN ({seqs}) "
            "ORDER BY seq",
            {"d": params["d"], **seq_params},
        )
    return averages, lasts


# ---- rollouts ------------------------------------------------------------------------------


_BYTES = (
    "SUM(CAST(bytes_done AS DOUBLE PRECISION)) AS bytes_done, "
    "SUM(CAST(bytes_total AS DOUBLE PRECISION)) AS bytes_total"
)
_DOWNLOADING = f"status = 'pending' AND phase = '{UpdatePhase.DOWNLOADING.value}'"


def rollouts(db: Store, limit: int = 100) -> list[Row]:
    """The newest rollouts, each with its device counts per status, its last wave and its
    downloads under way (`downloads`: devices, bytes_done, bytes_total)."""
    rows = execute(db, "SELECT * FROM rollouts ORDER BY created DESC LIMIT :lim", {"lim": limit})
    if not rows:
        return rows
    ids, params = _in("r", tuple(r["id"] for r in rows))
    counts: dict[str, dict[str, int]] = {}
    for c in execute(
        db,
        f"SELECT rollout_id, status, COUNT(*) AS n FROM rollout_devices "
        f"WHERE rollout_id IN ({ids}) GROUP BY rollout_id, status",
        params,
    ):
        counts.setdefault(c["rollout_id"], {})[c["status"]] = int(c["n"])
    last_wave = {
        c["rollout_id"]: int(c["last_wave"])
        for c in execute(
            db,
            f"SELECT rollout_id, MAX(wave) AS last_wave FROM rollout_devices "
            f"WHERE rollout_id IN ({ids}) GROUP BY rollout_id",
            params,
        )
    }
    downloads = {
        c["rollout_id"]: _download(c)
        for c in execute(
            db,
            f"SELECT rollout_id, COUNT(*) AS n, {_BYTES} FROM rollout_devices "
            f"WHERE rollout_id IN ({ids}) AND {_DOWNLOADING} GROUP BY rollout_id",
            params,
        )
    }
    for r in rows:
        r["counts"] = counts.get(r["id"], {})
        r["last_wave"] = last_wave.get(r["id"], -1)
        r["downloads"] = downloads.get(r["id"], _download({}))
    return rows


def _download(row: Row) -> Row:
    """Devices downloading and their summed bytes (whole numbers; floats in the sum)."""
    return {
        "devices": int(row.get("n") or 0),
        "bytes_done": int(row.get("bytes_done") or 0),
        "bytes_total": int(row.get("bytes_total") or 0),
    }


def rollout(db: Store, rollout_id: str) -> Row | None:
    rows = execute(db, "SELECT * FROM rollouts WHERE id = :r", {"r": rollout_id})
    return rows[0] if rows else None


def rollout_waves(db: Store, rollout_id: str) -> list[Row]:
    """(wave, status, phase, n, bytes_done, bytes_total) rows: what each wave's devices are
    doing, and how far their downloads got (summed)."""
    return [
        {**r, "bytes_done": int(r["bytes_done"] or 0), "bytes_total": int(r["bytes_total"] or 0)}
        for r in execute(
            db,
            f"SELECT wave, status, phase, COUNT(*) AS n, {_BYTES} FROM rollout_devices "
            "WHERE rollout_id = :r GROUP BY wave, status, phase ORDER BY wave, status, phase",
            {"r": rollout_id},
        )
    ]


def rollout_devices(db: Store, rollout_id: str, limit: int = 200) -> list[Row]:
    """Up to `limit` of the rollout's devices, those under way (pending) first, then by wave
    and id: status, phase, reason and download figures."""
    return execute(
        db,
        "SELECT device_id, wave, status, phase, reason, bytes_done, bytes_total "
        "FROM rollout_devices WHERE rollout_id = :r ORDER BY "
        "CASE WHEN status = 'pending' THEN 0 ELSE 1 END, wave, device_id LIMIT :lim",
        {"r": rollout_id, "lim": limit},
    )


def rollout_failures(db: Store, rollout_id: str) -> list[Row]:
    """Failed and timed-out devices with their reason and their last report's sentence."""
    return execute(
        db,
        "SELECT rd.device_id, rd.wave, rd.status, rd.reason, "
        "(SELECT u.detail FROM updates u WHERE u.device_id = rd.device_id AND "
        "u.rollout_id = rd.rollout_id ORDER BY u.seq DESC LIMIT 1) AS detail "
        "FROM rollout_devices rd WHERE rd.rollout_id = :r AND rd.status IN "
        "('failed', 'timed_out') ORDER BY rd.reason, rd.device_id",
        {"r": rollout_id},
    )


# ---- releases ------------------------------------------------------------------------------


def release_envelopes(db: Store, limit: int = 500) -> list[Row]:
    """Signed envelopes with the compression report each was made from ('' when none)."""
    return execute(
        db,
        "SELECT name, version, profile, envelope, report FROM releases "
        "ORDER BY name, profile, version DESC LIMIT :lim",
        {"lim": limit},
    )


def running_counts(db: Store) -> list[Row]:
    """How many devices run each (model, version, profile)."""
    return execute(
        db,
        "SELECT model_name, model_version, profile, COUNT(*) AS n FROM devices "
        "WHERE model_name IS NOT NULL GROUP BY model_name, model_version, profile "
        "ORDER BY model_name, model_version, profile",
    )


def running_devices(db: Store, name: str, version: int, profile: str, limit: int = 20) -> list[str]:
    return [
        r["device_id"]
        for r in execute(
            db,
            "SELECT device_id FROM devices WHERE model_name = :n AND model_version = :v AND "
            "profile = :p ORDER BY device_id LIMIT :lim",
            {"n": name, "v": version, "p": profile, "lim": limit},
        )
    ]


def group_names(db: Store) -> list[str]:
    return [
        r["group_name"]
        for r in execute(db, "SELECT DISTINCT group_name FROM groups ORDER BY group_name")
    ]


# ---- audit ---------------------------------------------------------------------------------


def audit_page(db: Store, offset: int = 0, limit: int = 100) -> tuple[int, list[Row]]:
    total = execute(db, "SELECT COUNT(*) AS n FROM audit")[0]["n"]
    rows = execute(
        db,
        "SELECT id, ts, actor, action, target, sha256, detail FROM audit "
        "ORDER BY id DESC LIMIT :lim OFFSET :off",
        {"lim": limit, "off": offset},
    )
    return int(total), rows


# ---- users and tokens ----------------------------------------------------------------------


def user(db: Store, name: str) -> Row | None:
    rows = execute(
        db, "SELECT name, role, password_hash, created FROM users WHERE name = :n", {"n": name}
    )
    return rows[0] if rows else None


def users(db: Store) -> list[Row]:
    return execute(
        db,
        "SELECT u.name, u.role, u.created, u.password_hash <> '' AS has_password, "
        "(SELECT COUNT(*) FROM api_tokens t WHERE t.user_name = u.name) AS tokens "
        "FROM users u ORDER BY u.name",
    )


def insert_user(db: Store, name: str, role: str, password_hash: str) -> bool:
    """False when the name is taken."""
    if user(db, name) is not None:
        return False
    write(
        db,
        "INSERT INTO users (name, role, password_hash, created) VALUES (:n, :r, :h, :t)",
        {"n": name, "r": role, "h": password_hash, "t": time.time()},
    )
    return True


def set_password_hash(db: Store, name: str, password_hash: str) -> None:
    write(
        db, "UPDATE users SET password_hash = :h WHERE name = :n", {"h": password_hash, "n": name}
    )


def delete_user(db: Store, name: str) -> bool:
    """Remove the user and every token of theirs; False when there was none."""
    write(db, "DELETE FROM api_tokens WHERE user_name = :n", {"n": name})
    return write(db, "DELETE FROM users WHERE name = :n", {"n": name}) > 0


def insert_token(db: Store, name: str, token_sha256: str) -> None:
    write(
        db,
        "INSERT INTO api_tokens (token_sha256, user_name, created) VALUES (:s, :n, :t)",
        {"s": token_sha256, "n": name, "t": time.time()},
    )


def user_for_token(db: Store, token_sha256: str) -> Row | None:
    rows = execute(
        db,
        "SELECT u.name, u.role FROM api_tokens t JOIN users u ON "
        "u.name = t.user_name WHERE t.token_sha256 = :s",
        {"s": token_sha256},
    )
    return rows[0] if rows else None
