"""Writing the installed tree: only what differs, atomically, and saying what happened.

Every write compares content and mode first, so running the installer twice changes nothing
(same bytes, same mtimes) and reports each path as `unchanged`.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from localio.atomic import write_atomic

__all__ = [
    "Change",
    "plan_file",
    "plan_symlink",
    "remove_file",
    "remove_tree",
    "write_file",
    "write_symlink",
]


@dataclass(frozen=True)
class Change:
    """One line of the installer's report: `action` is created, updated, unchanged, removed,
    kept, absent or skipped."""

    action: str
    path: Path
    note: str = ""

    def __str__(self) -> str:
        tail = f"  ({self.note})" if self.note else ""
        return f"{self.action:<12} {self.path}{tail}"


def write_file(path: Path, data: bytes, mode: int) -> Change:
    """Write `data` to `path` with `mode` unless it already holds exactly that."""
    if path.is_file() and not path.is_symlink():
        if path.read_bytes() == data:
            if (path.stat().st_mode & 0o7777) != mode:
                path.chmod(mode)
                return Change("updated", path, f"mode {mode:04o}")
            return Change("unchanged", path)
        action = "updated"
    else:
        action = "created"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data, mode)
    _fsync_dir(path.parent)
    return Change(action, path)


def write_symlink(path: Path, target: str) -> Change:
    """Point the symlink `path` at `target` (which may not exist outside an image root)."""
    if path.is_symlink() and os.readlink(path) == target:
        return Change("unchanged", path)
    action = "updated" if path.is_symlink() or path.exists() else "created"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return Change(action, path, f"-> {target}")


def remove_file(path: Path) -> Change:
    if path.is_symlink() or path.is_file():
        path.unlink()
        return Change("removed", path)
    return Change("absent", path)


def remove_tree(path: Path, note: str = "") -> Change:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
        return Change("removed", path, note)
    return Change("absent", path)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def plan_file(path: Path, data: bytes, mode: int) -> Change:
    """What `write_file` would do, without doing it (a dry run)."""
    if path.is_file() and not path.is_symlink():
        if path.read_bytes() == data:
            if (path.stat().st_mode & 0o7777) != mode:
                return Change("would update", path, f"mode {mode:04o}")
            return Change("unchanged", path)
        return Change("would update", path, f"mode {mode:04o}")
    return Change("would create", path, f"mode {mode:04o}")


def plan_symlink(path: Path, target: str) -> Change:
    """What `write_symlink` would do, without doing it (a dry run)."""
    if path.is_symlink() and os.readlink(path) == target:
        return Change("unchanged", path)
    return Change(
        "would update" if path.is_symlink() or path.exists() else "would create",
        path,
        f"-> {target}",
    )
