"""Upload grants for a file store: the URL a device PUTs one sample to, signed by `serve`.

A grant is `<public_url>/<key>?expires=<unix time>&sig=<hex HMAC-SHA256>` over
`PUT\\n<key>\\n<expires>` with a secret only the cloud holds (`upload.key` next to the store
database, 0600, made on first use). Like an S3 presigned PUT URL it names one key and expires;
the device holds no credential of its own, and a grant for one key writes nothing else.
Only keys under `samples/` are ever granted or accepted.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

__all__ = ["UPLOAD_PREFIX", "UploadSigner"]

UPLOAD_PREFIX = "samples/"
SECRET_BYTES = 32


class UploadSigner:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("an upload secret has at least 16 bytes")
        self._secret = secret

    @classmethod
    def from_file(cls, path: Path) -> UploadSigner:
        """The secret in `path`, made (0600) when the file does not exist yet."""
        try:
            return cls(path.read_bytes())
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process made it meanwhile
                return cls(path.read_bytes())
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(SECRET_BYTES))
                f.flush()
                os.fsync(f.fileno())
            return cls(path.read_bytes())

    def sign(self, key: str, expires: int) -> str:
        message = f"PUT\n{key}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def query(self, key: str, expires: int) -> str:
        return f"expires={expires}&sig={self.sign(key, expires)}"

    def check(self, key: str, expires: str, sig: str, now: float) -> bool:
        """Whether `sig` grants a PUT of `key` until `expires`, and that is still ahead."""
        if not key.startswith(UPLOAD_PREFIX) or not expires.isdigit() or len(expires) > 12:
            return False
        if int(expires) < now:
            return False
        return hmac.compare_digest(self.sign(key, int(expires)), sig)
