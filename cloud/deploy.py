"""Choosing the devices of a deployment, and the offline bundle for `litefleet-agent apply`.

Devices are known from ingested state messages (profile, model) and from groups. A model
version is released once per device profile; each device gets the build for the profile it
reported. Devices whose model differs, or whose profile has no build at this version, are
refused up front: they would reject the deployment (`wrong_profile`) anyway.

The offline bundle (`deploy --out DIR`) holds `DIR/<device_id>.json` (the signed deployment)
and the artifacts the device may need next to them, named by their sha256: the full artifact
as `<sha256>.zst` and each delta as `<sha256>.delta`; and, once keys have been rotated,
`DIR/roots.json`, the chain of signed roots (`litefleet-agent apply` walks it first).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

from cloud.artifacts import ArtifactStore, StoreError
from cloud.store import Store
from cloud.store.devices import device_rows, group_members
from localio.atomic import write_atomic
from shared.documents import Release
from shared.root import BUNDLE_FILE

__all__ = ["TargetError", "known_devices", "resolve_targets", "write_bundle"]


class TargetError(ValueError):
    """The devices asked for cannot receive this release (unknown group, wrong profile...)."""


def known_devices(store: Store) -> dict[str, dict[str, Any]]:
    return {r["device_id"]: r for r in device_rows(store)}


def resolve_targets(  # noqa: C901 — the target selectors (devices, group, profile) and their mutual checks
    db: Store,
    name: str,
    profiles: Collection[str],
    *,
    devices: list[str] | None = None,
    group: str | None = None,
    profile: str | None = None,
) -> dict[str, str]:
    """The devices to deploy to, in a stable order, each with the profile whose build it gets.

    `profiles` are the profiles `name` was released for at this version. A device's profile
    is the one it reported; a device never seen yet gets the only build there is, or is
    refused when there are several to choose from.
    """
    known = known_devices(db)
    if devices:
        chosen = list(dict.fromkeys(devices))
    elif group is not None:
        chosen = group_members(db, group)
        if not chosen:
            raise TargetError(
                f"group {group!r} has no devices (litefleet groups add {group} ID...)"
            )
    elif profile is not None:
        if profile not in profiles:
            raise TargetError(
                f"{name} has no release for profile {profile!r} at this version "
                f"(built for: {', '.join(sorted(profiles))})"
            )
        chosen = [
            d
            for d, r in known.items()
            if r["profile"] == profile and r["model_name"] in (None, name)
        ]
        if not chosen:
            raise TargetError(f"no known device with profile {profile!r} runs {name!r}")
    else:
        raise TargetError("name the devices: --device ID..., --group G or --profile P")
    problems = []
    targets: dict[str, str] = {}
    for device_id in chosen:
        row = known.get(device_id)
        device_profile = row["profile"] if row is not None else ""
        if row is not None and row["model_name"] and row["model_name"] != name:
            problems.append(f"{device_id} runs model {row['model_name']!r}, not {name!r}")
        elif device_profile and device_profile not in profiles:
            problems.append(
                f"{device_id} has profile {device_profile!r}; this version was built "
                f"for {', '.join(sorted(profiles))}"
            )
        elif device_profile:
            targets[device_id] = device_profile
        elif len(profiles) == 1:
            targets[device_id] = next(iter(profiles))
        else:
            problems.append(
                f"{device_id} has not reported its profile yet, and this version has "
                f"builds for {', '.join(sorted(profiles))}"
            )
    if problems:
        raise TargetError("; ".join(problems))
    return targets


def write_bundle(
    out: Path,
    builds: Collection[tuple[Release, str, list[str]]],
    deployments: dict[str, dict[str, Any]],
    store: ArtifactStore,
    max_bytes: int,
    roots: bytes | None = None,
) -> list[Path]:
    """Write each deployment and the artifacts of the builds it uses into `out`.

    `builds` holds (release, artifact key, delta keys) for each profile deployed to.
    Returns the files written.
    """
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    wanted: list[tuple[str, str, str]] = []
    for release, artifact_key, delta_keys in builds:
        wanted.append((artifact_key, release.artifact.sha256, ".zst"))
        by_key = dict(zip(delta_keys, release.deltas, strict=False))
        wanted += [(k, d.sha256, ".delta") for k, d in by_key.items()]
    for key, sha, suffix in wanted:
        path = out / f"{sha}{suffix}"
        if not path.exists():
            data = store.get(key, max_bytes)
            if hashlib.sha256(data).hexdigest() != sha:
                raise StoreError(f"{key} in the store does not match its signed sha256")
            write_atomic(path, data)
        written.append(path)
    for device_id, envelope in deployments.items():
        path = out / f"{device_id}.json"
        write_atomic(path, (json.dumps(envelope, indent=2, sort_keys=True) + "\n").encode("utf-8"))
        written.append(path)
    if roots is not None:
        write_atomic(out / BUNDLE_FILE, roots)
        written.append(out / BUNDLE_FILE)
    return written
