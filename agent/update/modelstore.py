"""Content-addressed model files and the `active`/`previous` links.

    models/<name>/<sha256>.tflite    read-only once written; the name is the content's hash
    models/<name>/active, previous   relative symlinks, each replaced atomically

Every write is a temp file in the same directory, fsync, `os.replace`, fsync of the directory,
so a power cut leaves either the old or the new file or link, never a torn one. Links are
replaced one at a time; the journal says which pair was intended, and `recover` in the updater
puts back the pair a half-done activation left.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

from agent.update.crash import crashpoint
from shared.errors import HashMismatch

__all__ = ["ACTIVE", "PREVIOUS", "ModelStore", "file_sha256"]

log = logging.getLogger(__name__)

ACTIVE = "active"
PREVIOUS = "previous"
_SHA_FILE = re.compile(r"^([0-9a-f]{64})\.tflite$")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ModelStore:
    def __init__(self, state_dir: Path, name: str) -> None:
        self.dir = state_dir / "models" / name
        self.dir.mkdir(parents=True, exist_ok=True)

    def path_of(self, sha256: str) -> Path:
        return self.dir / f"{sha256}.tflite"

    def has(self, sha256: str) -> bool:
        return self.path_of(sha256).is_file()

    def verified_path(self, sha256: str) -> Path | None:
        """The file for `sha256` if it exists and its bytes still hash to it."""
        path = self.path_of(sha256)
        try:
            actual = file_sha256(path)
        except OSError:
            return None
        if actual != sha256:
            log.error("model file %s hashes to %s: removing it", path, actual)
            self.remove(sha256)
            return None
        return path

    def install(self, data: bytes, sha256: str) -> Path:
        """Write verified bytes as `<sha256>.tflite`, read-only; a no-op if already there."""
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise HashMismatch(f"model bytes hash to {actual[:12]}, expected {sha256[:12]}")
        final = self.path_of(sha256)
        if self.verified_path(sha256) is not None:
            return final
        tmp = self.dir / f".{sha256}.tmp"
        try:
            with tmp.open("wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError:
            tmp.unlink(missing_ok=True)  # a full disk: give back what the half file took
            raise
        os.chmod(tmp, 0o444)
        crashpoint("store.before_rename")
        os.replace(tmp, final)
        fsync_dir(self.dir)
        crashpoint("store.after_rename")
        return final

    def remove(self, sha256: str) -> None:
        if sha256 in (self.link(ACTIVE), self.link(PREVIOUS)):
            raise RuntimeError(f"refusing to remove linked model {sha256[:12]}")
        try:
            self.path_of(sha256).unlink()
        except FileNotFoundError:
            return
        fsync_dir(self.dir)

    # links -------------------------------------------------------------------------------

    def link(self, which: str) -> str | None:
        """The sha256 a link points at, or None when it is missing or not ours."""
        try:
            target = os.readlink(self.dir / which)
        except OSError:
            return None
        match = _SHA_FILE.match(Path(target).name)
        return match.group(1) if match else None

    def set_link(self, which: str, sha256: str | None) -> None:
        """Point `which` at `<sha256>.tflite` (or remove it) atomically and durably."""
        path = self.dir / which
        if sha256 is None:
            try:
                path.unlink()
            except FileNotFoundError:
                return
            fsync_dir(self.dir)
            return
        if not self.has(sha256):
            raise RuntimeError(f"cannot link {which} to missing model {sha256[:12]}")
        tmp = self.dir / f".{which}.tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(f"{sha256}.tflite", tmp)
        crashpoint("links.before_replace")
        os.replace(tmp, path)
        fsync_dir(self.dir)

    def activate(self, sha256: str) -> None:
        """`previous` <- old `active`, then `active` <- `sha256`."""
        current = self.link(ACTIVE)
        if current is not None and current != sha256:
            self.set_link(PREVIOUS, current)
        crashpoint("links.between_swaps")
        self.set_link(ACTIVE, sha256)
        crashpoint("links.after_swaps")

    def restore(self, active: str, previous: str | None) -> None:
        """Put back a pair of links (a rollback): `active` first, so it is never absent."""
        self.set_link(ACTIVE, active)
        crashpoint("links.restore_between")
        if previous is not None and self.has(previous):
            self.set_link(PREVIOUS, previous)
        elif previous is None:
            self.set_link(PREVIOUS, None)

    # housekeeping ------------------------------------------------------------------------

    def models(self) -> list[str]:
        return [m.group(1) for p in self.dir.iterdir() if (m := _SHA_FILE.match(p.name))]

    def prune(self, keep: int, protect: tuple[str, ...] = ()) -> list[str]:
        """Keep the linked models and the most recent others, `keep` in all; remove the rest."""
        linked = {s for s in (self.link(ACTIVE), self.link(PREVIOUS), *protect) if s}
        others = sorted(
            (s for s in self.models() if s not in linked),
            key=lambda s: self.path_of(s).stat().st_mtime,
            reverse=True,
        )
        doomed = others[max(0, keep - len(linked)) :]
        for sha in doomed:
            log.info("removing old model %s", sha[:12])
            self.remove(sha)
        for leftover in self.dir.glob(".*.tmp"):
            leftover.unlink(missing_ok=True)
        return doomed
