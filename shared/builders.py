"""Build signed release and deployment envelopes: the producing side of `shared.verify`.

Pure: takes model bytes and keys, returns dicts ready for `canonical_json` or `json.dumps`.
The cloud's `release`/`deploy` commands and the tests make documents with these, so what the
agent verifies and what the operator signs cannot drift apart.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from shared.codec import compress, delta_encode
from shared.documents import (
    Artifact,
    Delta,
    Deployment,
    IOSignature,
    ProbationPolicy,
    Provenance,
    Release,
    Target,
    format_time,
)
from shared.envelope import sign_envelope
from shared.keys import SigningKey

__all__ = ["PackagedModel", "build_deployment", "build_release", "package_model"]


class PackagedModel:
    """A model's full zstd artifact and its deltas, with the hashes a release names."""

    def __init__(self, model: bytes, bases: Sequence[bytes] = (), level: int = 19) -> None:
        self.model = model
        self.target = Target(hashlib.sha256(model).hexdigest(), len(model))
        self.full = compress(model, level)
        self.full_sha256 = hashlib.sha256(self.full).hexdigest()
        self.deltas: dict[str, bytes] = {}
        for base in bases:
            base_sha = hashlib.sha256(base).hexdigest()
            if base_sha != self.target.sha256:
                self.deltas[base_sha] = delta_encode(base, model, level)

    def artifact(self, url: str) -> Artifact:
        return Artifact(url, self.full_sha256, len(self.full))

    def delta_entries(self, url_of: dict[str, str]) -> tuple[Delta, ...]:
        """One `Delta` per base; `url_of` maps the delta's own sha256 to its URL."""
        entries = []
        for base_sha, data in self.deltas.items():
            sha = hashlib.sha256(data).hexdigest()
            entries.append(Delta(base_sha, url_of.get(sha, ""), sha, len(data)))
        return tuple(entries)


def package_model(model: bytes, bases: Sequence[bytes] = (), level: int = 19) -> PackagedModel:
    return PackagedModel(model, bases, level)


def build_release(
    *,
    name: str,
    version: int,
    profile: str,
    target: Target,
    artifact: Artifact,
    io: IOSignature,
    keys: Sequence[SigningKey],
    now: datetime,
    deltas: Sequence[Delta] = (),
    lifetime: timedelta = timedelta(days=365),
    provenance: Provenance | None = None,
    probation: ProbationPolicy | None = None,
) -> dict[str, Any]:
    """A signed release envelope."""
    release = Release(
        name=name,
        version=version,
        profile=profile,
        created=format_time(now),
        expires=format_time(now + lifetime),
        target=target,
        artifact=artifact,
        deltas=tuple(deltas),
        io=io,
        provenance=provenance or Provenance(),
        probation=probation or ProbationPolicy(),
    )
    return sign_envelope(release.to_signed(), list(keys))


def build_deployment(
    *,
    release: dict[str, Any],
    device_id: str,
    rollout_id: str,
    keys: Sequence[SigningKey],
    now: datetime,
    lifetime: timedelta = timedelta(days=30),
) -> dict[str, Any]:
    """A signed deployment envelope binding one signed release to one device."""
    deployment = Deployment(
        rollout_id=rollout_id,
        device_id=device_id,
        issued=format_time(now),
        expires=format_time(now + lifetime),
        release=release,
    )
    return sign_envelope(deployment.to_signed(), list(keys))
