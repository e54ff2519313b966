"""The folder artifact store: write-once files, atomically replaced, served over HTTP."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

from cloud.artifacts import StoreError
from cloud.config import StoreConfig
from localio.atomic import write_atomic

__all__ = ["FileStore", "safe_path"]

log = logging.getLogger(__name__)


def safe_path(root: Path, key: str) -> Path:
    """`root / key`, refusing keys that would leave `root` (.., absolute, empty parts)."""
    parts = key.split("/")
    if not key or any(p in ("", ".", "..") or "\\" in p or "\0" in p for p in parts):
        raise StoreError(f"artifact key {key!r} is not a plain relative path")
    return root.joinpath(*parts)


class FileStore:
    def __init__(self, root: Path, public_url: str | None = None) -> None:
        self.root = root
        self.public_url = public_url.rstrip("/") if public_url else None

    @classmethod
    def from_config(cls, config: StoreConfig, default_public_url: str | None = None) -> FileStore:
        root = Path(unquote(urlparse(config.artifacts).path))
        return cls(root, config.public_url or default_public_url)

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

    def url(self, key: str, lifetime_s: int) -> str:
        safe_path(self.root, key)
        if self.public_url is None:
            log.warning("no store.public_url: devices get file:// URLs for %s", key)
            return self.path(key).as_uri()
        return f"{self.public_url}/{quote(key)}"
