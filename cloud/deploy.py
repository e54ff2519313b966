"""Choosing the devices of a deployment, and the offline bundle for `litefleet-agent apply`.

Devices are known from ingested state messages (profile, model) and from groups. Devices whose
known profile or model differs from the release's are refused up front: they would reject the
deployment (`wrong_profile`) anyway.

The offline bundle (`deploy --out DIR`) holds `DIR/<device_id>.json` (the signed deployment)
and the artifacts the device may need next to them, named by their sha256: the full artifact
as `<sha256>.zst` and each delta as `<sha256>.delta`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import sqlite_utils

from cloud.artifacts import ArtifactStore, StoreError
from shared.documents import Release

__all__ = ["TargetError", "known_devices", "resolve_targets", "write_bundle"]


class TargetError(ValueError):
    """The devices asked for cannot receive this release (unknown group, wrong profile...)."""


def known_devices(db: sqlite_utils.Database) -> dict[str, dict[str, Any]]:
    return {r["device_id"]: r for r in db.query("SELECT * FROM devices ORDER BY device_id")}


def resolve_targets(db: sqlite_utils.Database, release: Release, *, devices: list[str] | None = None,
                    group: str | None = None, profile: str | None = None) -> list[str]:
    """The device ids to deploy to, in a stable order."""
    known = known_devices(db)
    if devices:
        chosen = list(dict.fromkeys(devices))
    elif group is not None:
        chosen = [r[0] for r in db.execute(
            "SELECT device_id FROM groups WHERE group_name = ? ORDER BY device_id", [group])]
        if not chosen:
            raise TargetError(f"group {group!r} has no devices (litefleet groups add {group} ID...)")
    elif profile is not None:
        if profile != release.profile:
            raise TargetError(f"release {release.name}@{release.version} is for profile "
                              f"{release.profile!r}, not {profile!r}")
        chosen = [d for d, r in known.items() if r["profile"] == profile
                  and r["model_name"] in (None, release.name)]
        if not chosen:
            raise TargetError(f"no known device with profile {profile!r} runs {release.name!r}")
    else:
        raise TargetError("name the devices: --device ID..., --group G or --profile P")
    problems = []
    for device_id in chosen:
        row = known.get(device_id)
        if row is None:
            continue
        if row["profile"] and row["profile"] != release.profile:
            problems.append(f"{device_id} has profile {row['profile']!r}, the release is for "
                            f"{release.profile!r}")
        elif row["model_name"] and row["model_name"] != release.name:
            problems.append(f"{device_id} runs model {row['model_name']!r}, not {release.name!r}")
    if problems:
        raise TargetError("; ".join(problems))
    return chosen


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_bundle(out: Path, release: Release, artifact_key: str, delta_keys: list[str],
                 deployments: dict[str, dict[str, Any]], store: ArtifactStore,
                 max_bytes: int) -> list[Path]:
    """Write each deployment and the release's artifacts into `out`; returns the files."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    wanted = [(artifact_key, release.artifact.sha256, ".zst")]
    by_key = dict(zip(delta_keys, release.deltas, strict=False))
    wanted += [(k, d.sha256, ".delta") for k, d in by_key.items()]
    for key, sha, suffix in wanted:
        path = out / f"{sha}{suffix}"
        if not path.exists():
            data = store.get(key, max_bytes)
            if hashlib.sha256(data).hexdigest() != sha:
                raise StoreError(f"{key} in the store does not match its signed sha256")
            _write(path, data)
        written.append(path)
    for device_id, envelope in deployments.items():
        path = out / f"{device_id}.json"
        _write(path, (json.dumps(envelope, indent=2, sort_keys=True) + "\n").encode("utf-8"))
        written.append(path)
    return written
