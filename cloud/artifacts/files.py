"""The folder artifact store: write-once files, atomically replaced, served over HTTP."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

from cloud.artifacts import StoreError
from cloud.artifacts.upload import UPLOAD_PREFIX, UploadSigner
from cloud.config import StoreConfig
from localio.atomic import write_atomic

__all__ = ["UPLOAD_KEY_FILE", "FileStore", "safe_path"]

UPLOAD_KEY_FILE = "upload.key"  # next to the store database, never in the served folder

log = logging.getLogger(__name__)


def safe_path(root: Path, key: str) -> Path:
    """`root / key`, refusing keys that would leave `root` (.., absolute, empty parts)."""
    parts = key.split("/")
    if not key or any(p in ("", ".", "..") or "\\" in p or "\0" in p for p in parts):
        raise StoreError(f"artifact key {key!r} is not a plain relative path")
    return root.joinpath(*parts)


class FileStore:
    def __init__(
        self, root: Path, public_url: str | None = None, upload_key: Path | None = None
    ) -> None:
        self.root = root
        self.public_url = public_url.rstrip("/") if public_url else None
        self.upload_key = upload_key  # the secret upload grants are signed with (`serve`'s)

    @classmethod
    def from_config(cls, config: StoreConfig, default_public_url: str | None = None) -> FileStore:
        root = Path(unquote(urlparse(config.artifacts).path))
        return cls(
            root, config.public_url or default_public_url, config.db.parent / UPLOAD_KEY_FILE
        )

    def put(self, key: str, data: bytes) -> None:
        path = safe_path(self.root, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data, 0o644)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def get(self, key: str, max_bytes: int) -> bytes:
        path = safe_path(self.root, key)
        try:
            with path.open("rb") as f:
                data = f.read(max_bytes + 1)
        except OSError as e:
            raise StoreError(f"{path}: {e.strerror}") from e
        if len(data) > max_bytes:
            raise StoreError(f"{path} is larger than {max_bytes} bytes")
        return data

    def exists(self, key: str) -> bool:
        return safe_path(self.root, key).is_file()

    def path(self, key: str) -> Path:
        return safe_path(self.root, key)

    def keys(self, prefix: str) -> list[str]:
        """Every key under `prefix` (a folder path ending in /), sorted."""
        folder = safe_path(self.root, prefix.rstrip("/"))
        if not folder.is_dir():
            return []
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in folder.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )

    def put_url(self, key: str, lifetime_s: int, now: float) -> str:
        """A grant to PUT `key` (under samples/) to `serve` for `lifetime_s` seconds."""
        safe_path(self.root, key)
        if not key.startswith(UPLOAD_PREFIX):
            raise StoreError(f"uploads go under {UPLOAD_PREFIX}, not to {key!r}")
        if self.public_url is None or self.upload_key is None:
            raise StoreError(
                "uploads to a file store need store.public_url (served by `litefleet serve`)"
            )
        signer = UploadSigner.from_file(self.upload_key)
        return f"{self.public_url}/{quote(key)}?{signer.query(key, int(now) + lifetime_s)}"

    def url(self, key: str, lifetime_s: int) -> str:
        safe_path(self.root, key)
        if self.public_url is None:
            log.warning("no store.public_url: devices get file:// URLs for %s", key)
            return self.path(key).as_uri()
        return f"{self.public_url}/{quote(key)}"
