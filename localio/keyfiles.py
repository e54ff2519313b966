"""Signing-key files: written with mode 0600 and never over an existing file; read only when
group and others cannot read them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from shared.keys import KeyFileError, SigningKey

__all__ = ["load_signing_key", "save_signing_key"]


def save_signing_key(key: SigningKey, path: Path) -> None:
    """Write the private key with mode 0600, refusing to overwrite an existing file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.to_pem())
        f.flush()
        os.fsync(f.fileno())


def load_signing_key(path: Path) -> SigningKey:
    """Load a private key, refusing a file that group or others can read."""
    try:
        mode = path.stat().st_mode
    except OSError as e:
        raise KeyFileError(f"{path}: {e.strerror}") from e
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"{path}: mode {stat.S_IMODE(mode):04o} lets group or others read the signing key; "
            f"run `chmod 600 {path}`"
        )
    return SigningKey.from_pem(path.read_bytes())
