"""`write_atomic`: all or nothing, with the mode asked for, and no litter when it fails."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from localio.atomic import write_atomic


def test_replaces_the_content_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "doc.json"
    target.write_bytes(b"old")
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["doc.json"]


def test_mode_given_or_from_the_umask(tmp_path: Path) -> None:
    write_atomic(tmp_path / "public", b"x", 0o644)
    assert (tmp_path / "public").stat().st_mode & 0o777 == 0o644
    previous = os.umask(0o077)
    try:
        write_atomic(tmp_path / "private", b"x")
    finally:
        os.umask(previous)
    assert (tmp_path / "private").stat().st_mode & 0o777 == 0o600


def test_a_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "doc.json"
    target.write_bytes(b"old")

    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match="No space"):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["doc.json"]
