"""A full disk is `unavailable: disk_full`: reported, retried, and taken when space returns.

Real small filesystems: tmpfs mounts of a few hundred KB for the model store and for the
download folder (needs root; skipped otherwise), filled up with a plain file, then emptied.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.update.retry import RetryPolicy
from shared.messages import UpdatePhase

from .conftest import DIGITS_FT, Bench, SteppedClock, sha, write_config

NEW = DIGITS_FT.read_bytes()


@pytest.fixture
def small_fs() -> Iterator[object]:
    mounted: list[Path] = []

    def mount(path: Path, size_kb: int) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        run = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
            capture_output=True,
            text=True,
        )
        if run.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {run.stderr.strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path, leave: int) -> Path:
    """Write a file that leaves about `leave` bytes free on `folder`'s filesystem."""
    stat = os.statvfs(folder)
    free = stat.f_bavail * stat.f_frsize
    filler = folder / "filler"
    with filler.open("wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


def test_a_full_model_store_is_reported_and_the_update_retried_when_space_returns(
    tmp_path, keys, device_factory, small_fs
):
    config = write_config(tmp_path, keys)
    models = small_fs(tmp_path / "state" / "models", 512)
    clock = SteppedClock()
    device = device_factory(config, clock=clock, retry=RetryPolicy(first_s=0.2))
    device.updater.recover()  # the initial model goes into the small store
    filler = fill(models, 16 * 1024)
    bench = Bench(tmp_path / "artifacts", keys)
    data = bench.deployment(bench.release(NEW, 1), rollout="r-full")

    outcome = device.updater.handle_deployment(data)
    assert (outcome.phase, outcome.reason) == (UpdatePhase.IDLE, "disk_full"), outcome
    status = device.last_status()
    assert (status.phase, status.reason, status.rollout_id) == ("idle", "disk_full", "r-full")
    assert device.updater.phase() == UpdatePhase.IDLE
    assert not any(p.name.endswith(".tmp") for p in models.rglob("*"))  # nothing half-written

    filler.unlink()  # space comes back: the retry installs it
    device.updater.tick()  # not yet due: the retry waits its time
    assert device.updater.active().sha256 != sha(NEW)
    clock.advance(0.2)
    device.updater.tick()
    assert device.updater.active().sha256 == sha(NEW), device.statuses()[-3:]
    assert device.last_status().phase == UpdatePhase.COMMITTED


def test_a_full_download_folder_is_disk_full_not_a_fetch_failure(
    tmp_path, keys, device_factory, small_fs, artifact_server
):
    config = write_config(tmp_path, keys)
    downloads = small_fs(tmp_path / "state" / "downloads", 256)
    clock = SteppedClock()
    device = device_factory(config, clock=clock, retry=RetryPolicy(first_s=0.2))
    device.updater.recover()
    filler = fill(downloads, 8 * 1024)
    bench = Bench(artifact_server.root, keys, base_url=artifact_server.url)
    data = bench.deployment(bench.release(NEW, 1), rollout="r-full")

    outcome = device.updater.handle_deployment(data)
    assert (outcome.phase, outcome.reason) == (UpdatePhase.IDLE, "disk_full"), outcome
    assert device.last_status().reason == "disk_full"

    filler.unlink()
    device.updater.tick()  # not yet due: the retry waits its time
    assert device.updater.active().sha256 != sha(NEW)
    clock.advance(0.2)
    device.updater.tick()
    assert device.updater.active().sha256 == sha(NEW), device.statuses()[-3:]
    assert device.last_status().phase == UpdatePhase.COMMITTED
