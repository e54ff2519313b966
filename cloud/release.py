"""Packaging a model as a signed release.

`publish_release` reads the model's IO signature, writes the zstd full artifact and a delta
against each of the last few releases of the same model and profile, uploads them, signs the
release (`shared.envelope` over `Release.to_signed()`), and records it in the cloud store.
Versions strictly increase per model name; anything else is refused with `VersionNotNewer`.

Two refusals protect the devices' application (`ReleaseRefused`, before anything is uploaded):

* a model whose I/O signature (dtypes and shapes) differs from the previous release of that
  model for that profile (or, for a first release on a profile, from the model's releases on
  other profiles), unless the request says the application changed with it (`new_io`);
* a `--from-report` provenance for another file: the report's chosen (or named) candidate must
  have the model's sha256, and a candidate that had no effect or changed the I/O has none.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cloud.artifacts import ArtifactStore, StoreError, artifact_key, delta_key, release_key
from cloud.modelinfo import read_io_signature
from cloud.release_report import read_report
from cloud.store import Store
from cloud.store import releases as stored
from cloud.variants import VariantRequest, package_variants
from shared.codec import compress, decompress, delta_encode
from shared.documents import (
    Artifact,
    Delta,
    IOSignature,
    ProbationPolicy,
    Provenance,
    Release,
    Target,
    format_time,
)
from shared.envelope import sign_envelope
from shared.errors import MalformedDocument, SizeExceeded, VersionNotNewer
from shared.features import FeatureExtractor
from shared.jsonload import INT64_MAX, INT64_MIN
from shared.keys import SigningKey
from shared.reference import ReferenceProfile
from shared.verify import describe_io

__all__ = [
    "PublishedRelease",
    "ReleaseRefused",
    "ReleaseRequest",
    "check_io",
    "latest_version",
    "load_releases",
    "provenance_from_report",
    "publish_release",
]

log = logging.getLogger(__name__)
_NAME_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


@dataclass(frozen=True)
class ReleaseRequest:
    model: Path
    name: str
    version: int
    profile: str
    lifetime_s: int = 90 * 86400
    provenance: Provenance = field(default_factory=Provenance)
    probation: ProbationPolicy = field(default_factory=ProbationPolicy)
    max_model_bytes: int | None = None  # the profile's budget, when known
    new_io: bool = False  # the application changed with this model: its I/O may differ
    reference: ReferenceProfile | None = None  # signed with the model; devices measure drift
    variants: VariantRequest | None = None  # other compressions; devices pick the fastest
    report: str = ""  # the compression report's summary (`cloud.release_report`), stored


class ReleaseRefused(Exception):
    """The release would break the devices' application, or its provenance is for another
    file; the message is one sentence for the operator."""


@dataclass(frozen=True)
class PublishedRelease:
    release: Release
    envelope: dict[str, Any]
    artifact_key: str
    delta_keys: tuple[str, ...]
    release_key: str


def _check_name(name: str, what: str) -> None:
    if not 1 <= len(name) <= 64 or not set(name) <= _NAME_CHARS:
        raise MalformedDocument(f"{name!r} is not [A-Za-z0-9_.-]{{1,64}}", what)


def latest_version(store: Store, name: str, profile: str) -> int | None:
    """The newest version of `name` built for `profile`. Versions increase per model and
    profile: `digits@2` may exist once for each device profile, and a device only ever
    receives the build for its own profile."""
    return stored.latest_version(store, name, profile)


def load_releases(store: Store, name: str, version: int) -> dict[str, PublishedRelease]:
    """Every profile's build of `name@version`, keyed by profile (empty when there is none)."""
    builds = {}
    for row in stored.builds_of(store, name, version):
        profile, akey, dkeys = row["profile"], row["artifact_key"], row["delta_keys"]
        envelope = json.loads(row["envelope"])
        builds[profile] = PublishedRelease(
            Release.parse_signed(envelope["signed"]),
            envelope,
            akey,
            tuple(json.loads(dkeys)),
            release_key(name, version, profile),
        )
    return builds


_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
_PROVENANCE_TEXT = 4096  # characters of one string taken from a report into the signed release


def _printable(text: str) -> str:
    """Report text as the signed release may carry it (`Release.parse_signed` refuses control
    characters, and would then refuse every later release of the model too)."""
    return _UNPRINTABLE.sub(" ", text)[:_PROVENANCE_TEXT]


def _metric(value: Any) -> str | int | None:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return _printable(value)
    if isinstance(value, int) and INT64_MIN <= value <= INT64_MAX:
        return value
    if isinstance(value, float):
        return repr(value)
    return None


def provenance_from_report(  # noqa: C901 — each refusal of a report is its own branch with its own message
    path: Path,
    model_sha256: str,
    candidate: str | None = None,
    report: dict[str, Any] | None = None,
) -> Provenance:
    """Provenance of the report's chosen candidate (or `candidate`), from a compression
    report.json (`report`: its content, when read already); `ReleaseRefused` unless that
    candidate's file has `model_sha256`."""
    if report is None:
        report = read_report(path)
    name = candidate or report.get("chosen")
    if not isinstance(name, str):
        raise ReleaseRefused(
            f"{path} chose no candidate; name the one to release with --candidate METHOD"
        )
    prov = _candidate_provenance(report, name, path)
    parent = prov.get("parent_sha256")
    if parent is not None and (not isinstance(parent, str) or len(parent) != 64):
        raise MalformedDocument("expected a sha256 hex string", "report.provenance.parent_sha256")
    raw_metrics = prov.get("metrics", {})
    sha = raw_metrics.get("sha256") if isinstance(raw_metrics, dict) else None
    if sha != model_sha256:
        named = f"sha256 {sha[:16]}..." if isinstance(sha, str) else "no sha256"
        raise ReleaseRefused(
            f"the model's sha256 {model_sha256[:16]}... is not that of {path}'s {name} "
            f"candidate ({named}): release that candidate's file, or name the candidate that "
            "made this file with --candidate"
        )
    recipe = prov.get("recipe") or name
    metrics: dict[str, str | int] = {}
    if isinstance(raw_metrics, dict):
        for k, v in raw_metrics.items():
            m = _metric(v)
            if m is not None:
                metrics[str(k)] = m
    for k, v in prov.items():
        if k not in ("parent_sha256", "recipe", "metrics"):
            m = _metric(v)
            if m is not None:
                metrics.setdefault(str(k), m)
    metrics["chosen"] = name
    reason = report.get("reason")
    if isinstance(reason, str) and name == report.get("chosen"):
        metrics.setdefault("reason", _printable(reason)[:200])
    if not isinstance(recipe, str):
        recipe = json.dumps(recipe, sort_keys=True)
    return Provenance(parent_sha256=parent, recipe=_printable(recipe), metrics=metrics)


def _candidate_provenance(report: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    """The report's provenance for candidate `name`; a refusal names why there is none."""
    provenances = report.get("provenances")
    if isinstance(provenances, dict):
        prov = provenances.get(name)
    else:  # a report from before per-candidate provenances: only the chosen one has one
        prov = report.get("provenance") if name == report.get("chosen") else None
    if isinstance(prov, dict):
        return prov
    entries = report.get("candidates")
    entry = (
        next((c for c in entries if isinstance(c, dict) and c.get("method") == name), None)
        if isinstance(entries, list)
        else None
    )
    if entry is None:
        raise ReleaseRefused(f"{path} has no candidate {name!r}")
    why = entry.get("no_effect") or entry.get("io_change") or "it has no provenance"
    raise ReleaseRefused(
        f"{path}'s {name} candidate cannot be released as {name}: {str(why)[:200]}"
    )


def check_io(store: Store, req: ReleaseRequest, io: IOSignature) -> None:
    """`ReleaseRefused` when `io` differs from the previous release of the model for the
    profile (else on any profile), unless `req.new_io`."""
    if req.new_io:
        return
    row = stored.previous_release(store, req.name, req.profile)
    if row is None:
        return
    version, profile, envelope = row
    previous = Release.parse_signed(json.loads(envelope)["signed"]).io
    if io.fits(previous):
        return
    raise ReleaseRefused(
        f"{req.model} has I/O {describe_io(io)} but {req.name}@{version} for profile {profile} "
        f"has {describe_io(previous)}, so devices running {req.name} would refuse it "
        "(io_signature_mismatch): release it under another name, or pass --new-io if the "
        "application changes with it"
    )


def _deltas(
    db: Store,
    store: ArtifactStore,
    req: ReleaseRequest,
    target: bytes,
    target_sha: str,
    history: int,
    lifetime_s: int,
) -> list[tuple[Delta, str]]:
    rows = stored.history(db, req.name, req.profile)
    out: list[tuple[Delta, str]] = []
    seen: set[str] = {target_sha}
    for version, base_sha, base_size, key in rows:
        if len(out) >= history:
            break
        if base_sha in seen:
            continue
        seen.add(base_sha)
        try:
            base = decompress(store.get(key, base_size + 1024 * 1024), base_size)
        except (StoreError, MalformedDocument, SizeExceeded) as e:
            log.warning("no delta from %s@%s: %s", req.name, version, e)
            continue
        if hashlib.sha256(base).hexdigest() != base_sha:
            log.warning(
                "no delta from %s@%s: stored artifact does not match its hash", req.name, version
            )
            continue
        data = delta_encode(base, target)
        dkey = delta_key(req.name, req.version, req.profile, base_sha)
        store.put(dkey, data)
        out.append(
            (
                Delta(
                    base_sha256=base_sha,
                    url=store.url(dkey, lifetime_s),
                    sha256=hashlib.sha256(data).hexdigest(),
                    size=len(data),
                ),
                dkey,
            )
        )
    return out


def publish_release(
    db: Store,
    store: ArtifactStore,
    key: SigningKey,
    req: ReleaseRequest,
    now: datetime,
    history: int = 3,
) -> PublishedRelease:
    """Package, upload, sign and record one release."""
    _check_name(req.name, "name")
    _check_name(req.profile, "profile")
    if req.version < 1:
        raise MalformedDocument("versions start at 1 (0 is a device's initial model)", "version")
    latest = latest_version(db, req.name, req.profile)
    if latest is not None and req.version <= latest:
        raise VersionNotNewer(
            f"{req.name}@{req.version}: versions must increase; the latest "
            f"release for profile {req.profile} is {req.name}@{latest}"
        )
    try:
        target = req.model.read_bytes()
    except OSError as e:
        raise MalformedDocument(f"cannot read {req.model}: {e.strerror}", "model") from e
    if req.max_model_bytes is not None and len(target) > req.max_model_bytes:
        raise SizeExceeded(
            f"{req.model} is {len(target)} bytes; profile {req.profile} allows "
            f"{req.max_model_bytes}"
        )
    io = read_io_signature(req.model)
    check_io(db, req, io)
    if req.reference is not None:
        wanted = FeatureExtractor(io).names
        if tuple(f.name for f in req.reference.features) != wanted:
            raise ReleaseRefused(
                f"the reference profile does not describe {req.model}'s I/O "
                f"(features {', '.join(wanted)} expected)"
            )
    target_sha = hashlib.sha256(target).hexdigest()
    lifetime = req.lifetime_s
    expires = now + timedelta(seconds=lifetime)

    full = compress(target)
    akey = artifact_key(req.name, req.version, req.profile)
    store.put(akey, full)
    artifact = Artifact(
        url=store.url(akey, lifetime), sha256=hashlib.sha256(full).hexdigest(), size=len(full)
    )
    deltas = _deltas(db, store, req, target, target_sha, history, lifetime)
    variants = None
    if req.variants is not None:
        try:
            variants = package_variants(
                store,
                req.variants,
                req.name,
                req.version,
                req.profile,
                io,
                Target(target_sha, len(target)),
                artifact,
                lifetime,
                req.max_model_bytes,
                read_io_signature,
            )
        except ValueError as e:
            raise ReleaseRefused(str(e)) from e
    release = Release(
        name=req.name,
        version=req.version,
        profile=req.profile,
        created=format_time(now),
        expires=format_time(expires),
        target=Target(target_sha, len(target)),
        artifact=artifact,
        deltas=tuple(d for d, _ in deltas),
        io=io,
        provenance=req.provenance,
        probation=req.probation,
        reference=req.reference,
        variants=variants,
    )
    envelope = sign_envelope(release.to_signed(), [key])
    rkey = release_key(req.name, req.version, req.profile)
    store.put(rkey, json.dumps(envelope, indent=2, sort_keys=True).encode("utf-8"))
    try:
        _record(db, release, akey, [k for _, k in deltas], envelope, req.report)
    except stored.AlreadyStored as e:
        raise VersionNotNewer(f"{req.name}@{req.version} was released meanwhile") from e
    log.info("released %s@%s (%s bytes, %s deltas)", req.name, req.version, len(full), len(deltas))
    return PublishedRelease(release, envelope, akey, tuple(k for _, k in deltas), rkey)


def _record(
    db: Store,
    release: Release,
    akey: str,
    dkeys: list[str],
    envelope: dict[str, Any],
    report: str,
) -> None:
    stored.insert_release(
        db,
        {
            "name": release.name,
            "version": release.version,
            "profile": release.profile,
            "created": release.created,
            "expires": release.expires,
            "target_sha256": release.target.sha256,
            "target_size": release.target.size,
            "artifact_key": akey,
            "delta_keys": json.dumps(dkeys),
            "envelope": json.dumps(envelope),
            "report": report,
        },
    )
