"""Replacing a file all at once: a reader sees the old content or the new, never a part.

The data goes to a temporary file beside the target (same filesystem), is flushed to disk, and
is renamed over the target. A crash leaves at most a stray `.<name>.<random>.tmp` file behind.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(path: Path, data: bytes, mode: int | None = None) -> None:
    """Replace `path` with `data`; `mode` if given, else what the umask gives a new file."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with tmp.open("xb") as f:
            f.write(data)
            f.flush()
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
