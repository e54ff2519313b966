"""Artifact stores: where release artifacts live and the URLs devices fetch them from.

    file://DIR            a local folder, served over HTTP by `litefleet serve` (Range, ETag);
                          devices fetch `public_url + "/" + key`
    s3://bucket/prefix    S3 or an S3-compatible server through boto3; devices fetch presigned
                          GET URLs and hold no cloud credentials

Keys (the same in every store):

    <name>/<version>/<name>-<version>.tflite.zst                     the full artifact
    <name>/<version>/<name>-<version>.from-<base_sha256[:16]>.delta   a delta from one base
    <name>/<version>/<name>-<version>.release.json                   the signed release
    samples/<device>/<sample id>.{jpg,npy,json}                       captured samples (never
                                                                      served back over HTTP)
"""

from __future__ import annotations

from typing import Protocol

from cloud.config import StoreConfig

__all__ = [
    "ArtifactStore",
    "StoreError",
    "artifact_key",
    "delta_key",
    "open_artifact_store",
    "release_key",
]


class StoreError(Exception):
    """The artifact store could not read or write (missing key, I/O or S3 error)."""


class ArtifactStore(Protocol):
    """Write-once blobs addressed by key, and the URL a device fetches each one from."""

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str, max_bytes: int) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def keys(self, prefix: str) -> list[str]:
        """Every key under `prefix`, sorted."""
        ...

    def put_url(self, key: str, lifetime_s: int, now: float) -> str:
        """A URL a device can PUT `key` to for `lifetime_s` seconds, holding no credential
        (S3: presigned; a file store: a grant `serve` checks)."""
        ...

    def url(self, key: str, lifetime_s: int) -> str:
        """An absolute URL a device can GET for at least `lifetime_s` seconds (where the store
        can promise that: S3 presigned URLs are capped at 7 days)."""
        ...


def _stem(name: str, version: int, profile: str) -> str:
    # One release of a model version per device profile: each build has its own keys.
    return f"{name}/{version}/{profile}/{name}-{version}-{profile}"


def artifact_key(name: str, version: int, profile: str) -> str:
    return f"{_stem(name, version, profile)}.tflite.zst"


def delta_key(name: str, version: int, profile: str, base_sha256: str) -> str:
    return f"{_stem(name, version, profile)}.from-{base_sha256[:16]}.delta"


def release_key(name: str, version: int, profile: str) -> str:
    return f"{_stem(name, version, profile)}.release.json"


def open_artifact_store(
    config: StoreConfig, default_public_url: str | None = None
) -> ArtifactStore:
    """The store named by `config.artifacts` (`file://` or `s3://`)."""
    if config.artifacts.startswith("s3://"):
        from cloud.artifacts.s3 import S3Store

        return S3Store.from_config(config)
    from cloud.artifacts.files import FileStore

    return FileStore.from_config(config, default_public_url)
