"""A refused release leaves no partial download behind, whatever refused it.

Real releases of real models served over loopback HTTP; after each refusal `downloads/` holds
no file for that release (a download that merely failed keeps its part, to resume).
"""

from __future__ import annotations

import pytest

from shared.messages import UpdatePhase

from .conftest import DIGITS, DIGITS_FT, Bench, sha, write_config

NEW = DIGITS_FT.read_bytes()


def _corrupt(bench: Bench) -> dict:
    return bench.release(NEW, 1, artifact=b"not a zstd frame at all" * 400)


def _hash_mismatch(bench: Bench) -> dict:
    release = bench.release(NEW, 1)
    art = bench.root / release["signed"]["artifact"]["sha256"]
    data = bytearray(art.read_bytes())
    data[len(data) // 2] ^= 0xFF
    art.write_bytes(bytes(data))  # the mirror serves other bytes of the same size
    return release


def _too_big_decompressed(bench: Bench) -> dict:
    return bench.release(NEW, 1, target_size=len(NEW) - 1000)


def _not_a_model(bench: Bench) -> dict:
    return bench.release(b"\x00" * 50_000, 1)


def _bad_delta_then_bad_full(bench: Bench) -> dict:
    release = bench.release(
        NEW, 1, bases=[DIGITS.read_bytes()], artifact=b"not a zstd frame at all" * 400
    )
    for delta in release["signed"]["deltas"]:  # a delta that does not rebuild the target
        path = bench.root / delta["sha256"]
        data = bytearray(path.read_bytes())
        data[-8] ^= 0xFF
        path.write_bytes(bytes(data))
    return release


CASES = {
    "corrupt_artifact": (_corrupt, "corrupt_artifact"),
    "hash_mismatch": (_hash_mismatch, "hash_mismatch"),
    "size_exceeded": (_too_big_decompressed, "size_exceeded"),
    "invalid_model": (_not_a_model, "invalid_model"),
    "delta_and_full_refused": (_bad_delta_then_bad_full, "corrupt_artifact"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_refused_release_leaves_no_partial_download(
    case, tmp_path, keys, device_factory, artifact_server
):
    make, reason = CASES[case]
    device = device_factory(write_config(tmp_path, keys))
    device.updater.recover()
    bench = Bench(artifact_server.root, keys, base_url=artifact_server.url)
    release = make(bench)
    outcome = device.updater.handle_deployment(bench.deployment(release))
    assert (outcome.phase, outcome.reason) == (UpdatePhase.REJECTED, reason), outcome
    assert artifact_server.sent > 0  # bytes were downloaded ...
    downloads = device.config.state_dir / "downloads"
    assert sorted(p.name for p in downloads.iterdir()) == []  # ... and none are left
    assert device.updater.active().sha256 == sha(DIGITS.read_bytes())


def test_a_failed_download_keeps_its_part_to_resume(
    tmp_path, keys, device_factory, artifact_server
):
    """The positive control: not every failure deletes (a dropped connection resumes)."""
    device = device_factory(write_config(tmp_path, keys))
    device.updater.recover()
    bench = Bench(artifact_server.root, keys, base_url=artifact_server.url)
    release = bench.release(NEW, 1)
    artifact_server.drop_after = release["signed"]["artifact"]["size"] // 2
    outcome = device.updater.handle_deployment(bench.deployment(release))
    assert (outcome.phase, outcome.reason) == (UpdatePhase.IDLE, "fetch_failed")
    parts = list((device.config.state_dir / "downloads").glob("*.part"))
    assert [p.name for p in parts] == [f"{release['signed']['artifact']['sha256']}.part"]
