"""Packaging a release's variants: the same model compressed other ways, each uploaded as its
own zstd artifact, listed with its quality so that each device activates the fastest it
measures within the quality budget (`shared.variants`, `agent.update.variants`).

Every variant must have the release's I/O signature (dtypes and shapes): a device swaps any of
them into the same application.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cloud.artifacts import ArtifactStore
from shared.codec import compress
from shared.documents import Artifact, IOSignature, Target
from shared.variants import MAX_CANDIDATES, Variant, VariantSet

__all__ = ["VariantRequest", "package_variants", "variant_key"]


@dataclass(frozen=True)
class VariantRequest:
    primary_name: str  # the release's own model among the candidates
    primary_quality_ppm: int
    others: tuple[tuple[str, Path, int], ...]  # (name, .tflite, quality ppm)
    min_quality_ppm: int = 0
    max_bench_ms: int = 20_000


def variant_key(name: str, version: int, profile: str, variant: str) -> str:
    return f"{name}/{version}/{profile}/{name}-{version}-{profile}.{variant}.tflite.zst"


def package_variants(
    store: ArtifactStore,
    request: VariantRequest,
    name: str,
    version: int,
    profile: str,
    io: IOSignature,
    target: Target,
    artifact: Artifact,
    lifetime_s: int,
    max_model_bytes: int | None,
    read_io: Callable[[Path], IOSignature],
) -> VariantSet:
    """Upload each other variant; the candidates are the release's target and those.
    `read_io(path)` gives a model file's I/O signature. ValueError names what is wrong."""
    if 1 + len(request.others) > MAX_CANDIDATES:
        raise ValueError(f"a release carries at most {MAX_CANDIDATES} variants")
    candidates = [
        Variant(
            request.primary_name,
            request.primary_quality_ppm,
            target.sha256,
            target.size,
            artifact.url,
            artifact.sha256,
            artifact.size,
        )
    ]
    for vname, path, quality in request.others:
        blob = path.read_bytes()
        if max_model_bytes is not None and len(blob) > max_model_bytes:
            raise ValueError(
                f"variant {vname} ({path}) is {len(blob)} bytes, over the "
                f"profile's {max_model_bytes}"
            )
        if not read_io(path).fits(io):
            raise ValueError(f"variant {vname} ({path}) does not have the release's I/O")
        full = compress(blob)
        key = variant_key(name, version, profile, vname)
        store.put(key, full)
        candidates.append(
            Variant(
                vname,
                quality,
                hashlib.sha256(blob).hexdigest(),
                len(blob),
                store.url(key, lifetime_s),
                hashlib.sha256(full).hexdigest(),
                len(full),
            )
        )
    if len({c.name for c in candidates}) != len(candidates):
        raise ValueError(
            "variant names must differ (and differ from the release's own, "
            f"{request.primary_name!r})"
        )
    if len({c.sha256 for c in candidates}) != len(candidates):
        raise ValueError("two variants are the same model")
    return VariantSet(tuple(candidates), request.min_quality_ppm, request.max_bench_ms)
