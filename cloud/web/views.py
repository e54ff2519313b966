"""What the pages and the API show, shaped from the store's rows (`cloud.web.queries`).

Pages and API return the same dicts: a page renders them, the API sends them as JSON.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from cloud.fleet import json_object
from cloud.release_report import stored_summary
from cloud.store import Store
from cloud.store import dashboard as queries
from shared.documents import Release

__all__ = [
    "WINDOWS",
    "TableRequest",
    "device_detail",
    "device_row",
    "fleet_table",
    "record_body",
    "release_groups",
    "rollout_detail",
    "rollout_summary",
    "series",
]

# chart window -> (seconds, bucket seconds): each at most a few hundred points
WINDOWS = {"15m": (15 * 60, 10), "6h": (6 * 3600, 120), "7d": (7 * 86400, 3600)}
PAGE_MAX = 200
DEVICE_LIST_MAX = 200  # devices listed on a rollout's page (those under way first)
MAX_BODY = 64 * 1024  # a stored telemetry body larger than this is not parsed
PROBATION_PHASES = ("probation", "committed", "rolled_back")


def record_body(text: str | None) -> dict[str, Any]:
    """A stored telemetry body (ingest validated it); {} for anything unexpected."""
    if not text or len(text) > MAX_BODY:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def device_row(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "device_id": r["device_id"],
        "online": bool(r["is_online"]),
        "profile": r["profile"],
        "model": {"name": r["model_name"], "version": r["model_version"]}
        if r["model_name"] is not None
        else None,
        "fps": r["fps"],
        "p95_ms": r["p95_ms"],
        "source_status": r["source_status"],
        "update_phase": r["update_phase"],
        "last_seen": r["last_seen"] or None,
        "agent_version": r["agent_version"],
        "drifting": bool(r["drifting"]),
    }


@dataclass(frozen=True)
class TableRequest:
    filter: queries.DeviceFilter
    sort: str = "device_id"
    descending: bool = False
    page: int = 1
    per_page: int = 50


def fleet_table(db: Store, req: TableRequest, offline_after_s: float) -> dict[str, Any]:
    per_page = max(1, min(req.per_page, PAGE_MAX))
    page = max(1, req.page)
    total, rows = queries.device_page(
        db,
        req.filter,
        sort=req.sort if req.sort in queries.SORTS else "device_id",
        descending=req.descending,
        offset=(page - 1) * per_page,
        limit=per_page,
        now=time.time(),
        offline_after_s=offline_after_s,
    )
    return {
        "total": total,
        "page": page,
        "per_page": per_page,
        "pages": max(1, -(-total // per_page)),
        "devices": [device_row(r) for r in rows],
    }


def device_detail(db: Store, device_id: str, offline_after_s: float) -> dict[str, Any] | None:
    r = queries.device(db, device_id, time.time(), offline_after_s)
    if r is None:
        return None
    out = device_row(r)
    latest = record_body(queries.latest_telemetry_body(db, device_id))
    out.update(
        {
            "groups": r["groups"],
            "model_sha256": r["model_sha256"],
            "drift": json_object(r["drift"]),  # kept on the row by ingest
            "variant": json_object(r["variant"]),
            "state_ts": r["state_ts"] or None,
            "root_version": int(r["root_version"]),  # 0: not reported (an older agent)
            "facts": {
                k: latest.get(k)
                for k in (
                    "cpu_percent",
                    "rss_mb",
                    "temperature_c",
                    "disk_free_mb",
                    "outbox_depth",
                    "outbox_dropped",
                    "uptime_s",
                    "frames",
                    "inferences",
                    "errors",
                    "dropped_frames",
                    "latency_p50_ms",
                    "latency_p99_ms",
                )
            },
            "updates": queries.device_updates(db, device_id),
            "events": [
                {**e, "detail": _json_or_text(e["detail"])}
                for e in queries.device_events(db, device_id)
            ],
        }
    )
    out["probation"] = [u for u in out["updates"] if u["phase"] in PROBATION_PHASES][:5]
    return out


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def series(db: Store, device_id: str, window: str, now: float | None = None) -> dict[str, Any]:
    """uPlot-ready columns: t (epoch s) and fps, p95_ms, cpu_percent, rss_mb, outbox_depth."""
    span, bucket = WINDOWS[window]
    now = time.time() if now is None else now
    averages, lasts = queries.device_series(db, device_id, now - span, bucket)
    gauges = {int(r["seq"]): record_body(r["body"]) for r in lasts}
    cols: dict[str, list[Any]] = {
        k: [] for k in ("t", "fps", "p95_ms", "cpu_percent", "rss_mb", "outbox_depth")
    }
    for a in averages:
        g = gauges.get(int(a["last_seq"]), {})
        cols["t"].append(int(a["bucket"]) * bucket)
        cols["fps"].append(_round(a["fps"]))
        cols["p95_ms"].append(_round(a["p95_ms"]))
        for k in ("cpu_percent", "rss_mb", "outbox_depth"):
            cols[k].append(_round(g.get(k)))
    return {
        "window": window,
        "bucket_s": bucket,
        "since": int(now - span),
        "until": int(now),
        **cols,
    }


def _round(v: Any) -> float | None:
    return round(float(v), 2) if isinstance(v, int | float) else None


def rollout_summary(r: dict[str, Any]) -> dict[str, Any]:
    """`pending` counts the devices downloading too; `downloading` of them, with their summed
    `bytes_done` of `bytes_total`."""
    counts = r.get("counts", {})
    total = sum(counts.values())
    downloads = r.get("downloads", {})
    return {
        "id": r["id"],
        "release": f"{r['release_name']}@{r['release_version']}",
        "state": r["state"],
        "reason": r["reason"],
        "created": r["created"],
        "updated": r["updated"],
        "waves": json.loads(r["waves"]),
        "current_wave": r["current_wave"] + 1,
        "wave_count": r["last_wave"] + 1,
        "devices": total,
        "committed": counts.get("committed", 0),
        "failed": counts.get("failed", 0) + counts.get("timed_out", 0),
        "pending": counts.get("pending", 0),
        "waiting": counts.get("waiting", 0),
        "downloading": downloads.get("devices", 0),
        "bytes_done": downloads.get("bytes_done", 0),
        "bytes_total": downloads.get("bytes_total", 0),
    }


def rollout_detail(
    db: Store, rollout_id: str, device_limit: int = DEVICE_LIST_MAX
) -> dict[str, Any] | None:
    """The rollout's summary, its waves (downloads with their bytes), its failures by reason
    and its first `device_limit` devices (those under way first)."""
    r = queries.rollout(db, rollout_id)
    if r is None:
        return None
    waves: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for w in queries.rollout_waves(db, rollout_id):
        counts = waves[int(w["wave"])]
        status = "failed" if w["status"] == "timed_out" else w["status"]
        if status == "pending" and w["phase"] == "downloading":
            status = "downloading"
            counts["bytes_done"] += w["bytes_done"]
            counts["bytes_total"] += w["bytes_total"]
        counts[status] += int(w["n"])
        counts["total"] += int(w["n"])
    r["downloads"] = {
        "devices": sum(c["downloading"] for c in waves.values()),
        "bytes_done": sum(c["bytes_done"] for c in waves.values()),
        "bytes_total": sum(c["bytes_total"] for c in waves.values()),
    }
    r["counts"] = {}
    r["last_wave"] = max(waves, default=-1)
    for counts in waves.values():
        for k, n in counts.items():
            if k not in ("total", "bytes_done", "bytes_total"):
                key = "pending" if k == "downloading" else k
                r["counts"][key] = r["counts"].get(key, 0) + n
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for f in queries.rollout_failures(db, rollout_id):
        grouped[f["reason"] or f["status"]].append(
            {"device_id": f["device_id"], "wave": int(f["wave"]) + 1, "detail": f["detail"] or ""}
        )
    out = rollout_summary(r)
    out["wave_progress"] = []
    released = 0
    for i, c in sorted(waves.items()):
        released += c["total"]
        out["wave_progress"].append(
            {
                "wave": i + 1,
                "total": c["total"],
                "cumulative": released,
                "committed": c["committed"],
                "failed": c["failed"],
                "downloading": c["downloading"],
                "bytes_done": c["bytes_done"],
                "bytes_total": c["bytes_total"],
                "pending": c["pending"],
                "waiting": c["waiting"],
            }
        )
    out["failures"] = [
        {"reason": k, "devices": v} for k, v in sorted(grouped.items(), key=lambda kv: -len(kv[1]))
    ]
    out["success_threshold_pct"] = r["success_threshold_pct"]
    out["max_failures_pct"] = r["max_failures_pct"]
    out["device_list"] = [
        {
            "device_id": d["device_id"],
            "wave": int(d["wave"]) + 1,
            "status": d["status"],
            "phase": d["phase"],
            "reason": d["reason"],
            "bytes_done": int(d["bytes_done"]),
            "bytes_total": int(d["bytes_total"]),
        }
        for d in queries.rollout_devices(db, rollout_id, device_limit)
    ]
    return out


def release_groups(db: Store) -> list[dict[str, Any]]:
    """Per (model, profile): its versions, newest first, with sizes, provenance, the
    compression report's figures (`cloud.release_report`) and devices."""
    running = {
        (r["model_name"], r["model_version"], r["profile"]): int(r["n"])
        for r in queries.running_counts(db)
    }
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in queries.release_envelopes(db):
        rel = Release.parse_signed(json.loads(row["envelope"])["signed"])
        n = running.get((rel.name, rel.version, rel.profile), 0)
        groups[(rel.name, rel.profile)].append(
            {
                "name": rel.name,
                "version": rel.version,
                "profile": rel.profile,
                "created": rel.created,
                "expires": rel.expires,
                "target": {"sha256": rel.target.sha256, "size": rel.target.size},
                "artifact": {
                    "sha256": rel.artifact.sha256,
                    "size": rel.artifact.size,
                    "codec": rel.artifact.codec,
                },
                "deltas": [{"base_sha256": d.base_sha256, "size": d.size} for d in rel.deltas],
                "provenance": {
                    "parent_sha256": rel.provenance.parent_sha256,
                    "recipe": rel.provenance.recipe,
                    "metrics": dict(rel.provenance.metrics),
                },
                "report": stored_summary(row["report"]),  # None: released from a file
                "running": n,
                "running_devices": queries.running_devices(db, rel.name, rel.version, rel.profile)
                if n
                else [],
            }
        )
    return [
        {"name": name, "profile": profile, "versions": versions}
        for (name, profile), versions in sorted(groups.items())
    ]
