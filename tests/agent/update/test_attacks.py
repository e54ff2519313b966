"""Each attack on the update path is refused with its typed reason while the old model serves.

Every test runs a real inference loop on a paced synthetic camera, sends one hostile or broken
deployment through the updater, and asserts: the outcome and the reported UpdateStatus carry
the expected reason; the active link and the loop still hold the old model; and every
inference while the update was handled came from the old model (how long the loop may pause
meanwhile is a figure of benchmarks/ota_update.py, not a wall-clock assertion here).
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import zstandard

from agent.update.modelstore import ACTIVE, ModelStore
from shared.documents import ProbationPolicy
from shared.keys import SigningKey

from .conftest import (
    DIGITS,
    DIGITS_BAD,
    DIGITS_FT,
    FRAME_FPS,
    VIBRATION,
    VIBRATION_IO,
    Bench,
    sha,
    write_config,
)

SOURCE = f"synthetic:image?fps={FRAME_FPS}"
OLD = sha(DIGITS.read_bytes())
NEW = DIGITS_FT.read_bytes()


def refused(live, data: bytes, reason: str, phase: str = "rejected") -> None:
    """Hand `data` to the updater; assert the refusal and that the old model kept serving."""
    started = time.monotonic()
    outcome = live.updater.handle_deployment(data)
    windows = [(started, time.monotonic())]  # while the updater worked beside the loop
    if outcome.phase == "probation":
        live.settle()
        windows.append(live.last_tick)  # the rollback swap
        outcome_phase, outcome_reason = live.updater.phase(), live.device.last_status().reason
    else:
        outcome_phase, outcome_reason = outcome.phase, outcome.reason
    live.wait_inferences(3)
    assert (outcome_phase, outcome_reason) == (phase, reason), outcome
    status = live.device.last_status()
    assert (status.phase, status.reason, status.device_id) == (phase, reason, "cam-01")
    assert ModelStore(live.device.config.state_dir, "digits").link(ACTIVE) == OLD
    assert live.serving() == OLD
    assert live.times[-1][1] == OLD
    # refused before activation: the old model answered every frame from the start; rolled
    # back: it answers every frame after the rollback
    since = windows[-1][1] if len(windows) > 1 else started
    assert {s for t, s in live.times if t >= since} == {OLD}


@pytest.fixture
def live(tmp_path, keys, live_factory):
    return live_factory(write_config(tmp_path, keys, source=SOURCE))


@pytest.fixture
def bench(tmp_path, keys):
    return Bench(tmp_path / "artifacts", keys)


# arbitrary installation ------------------------------------------------------------------


def test_signed_by_an_unknown_key(live, bench):
    stranger = [SigningKey.generate()]
    release = bench.release(NEW, 1, keys=stranger)
    refused(live, bench.deployment(release, keys=stranger), "bad_signature")


def test_release_signed_by_an_unknown_key_inside_a_trusted_deployment(live, bench):
    release = bench.release(NEW, 1, keys=[SigningKey.generate()])
    refused(live, bench.deployment(release), "bad_signature")


def test_signed_content_altered_after_signing(live, bench):
    release = bench.release(NEW, 1)
    release["signed"]["version"] = 7
    refused(live, bench.deployment(release), "bad_signature")


def test_no_signatures_at_all(live, bench):
    import json

    envelope = json.loads(bench.deployment(bench.release(NEW, 1)))
    envelope["signatures"] = []
    refused(live, json.dumps(envelope).encode(), "bad_signature")


def test_key_compromise_one_key_is_below_the_threshold(tmp_path, live_factory):
    k1, k2 = SigningKey.generate(), SigningKey.generate()
    live = live_factory(write_config(tmp_path, [k1, k2], threshold=2, source=SOURCE))
    bench = Bench(tmp_path / "artifacts", [k1])  # the attacker holds k1 only
    refused(live, bench.deployment(bench.release(NEW, 1)), "bad_signature")


def test_not_json(live):
    refused(live, b"\xff{not json", "malformed")


# endless data -------------------------------------------------------------------------------


def test_server_sends_more_than_the_signed_size(tmp_path, keys, live, artifact_server):
    bench = Bench(artifact_server.root, keys, base_url=artifact_server.url)
    artifact_server.extra = b"\0" * (1 << 20)
    refused(live, bench.deployment(bench.release(NEW, 1)), "size_exceeded")
    assert artifact_server.sent <= len(NEW) + (1 << 20)


def test_zstd_bomb(live, bench):
    bomb = zstandard.ZstdCompressor(level=1, write_content_size=False).compress(b"\0" * (64 << 20))
    assert len(bomb) < 64 * 1024
    release = bench.release(NEW, 1, artifact=bomb)
    refused(live, bench.deployment(release), "size_exceeded")


def test_declared_size_over_the_device_cap(tmp_path, keys, live_factory, bench):
    live = live_factory(
        write_config(tmp_path, keys, source=SOURCE, extra="[update]\nmax_model_bytes = 100000\n")
    )
    refused(live, bench.deployment(bench.release(NEW, 1)), "size_exceeded")


# extraneous dependencies -----------------------------------------------------------------------


def test_release_that_names_extra_things_to_fetch(live, bench):
    def add(signed):
        signed["dependencies"] = [{"url": "http://evil.example/x", "sha256": "0" * 64}]

    refused(live, bench.deployment(bench.release(NEW, 1, mutate=add)), "malformed")


# fast-forward and rollback --------------------------------------------------------------------


def test_rollback_to_an_older_version_and_replay_of_the_same_version(live, bench):
    policy = ProbationPolicy(min_inferences=5, max_latency_ratio_pct=100000)
    outcome = live.updater.handle_deployment(
        bench.deployment(bench.release(NEW, 5, probation=policy), rollout="r5")
    )
    assert outcome.phase == "probation"
    assert live.settle() == "committed"
    global OLD
    old, OLD = OLD, sha(NEW)
    try:
        refused(live, bench.deployment(bench.release(DIGITS.read_bytes(), 4)), "version_not_newer")
        # the same version number with other bytes (a replayed or forged "new" 5)
        refused(
            live, bench.deployment(bench.release(DIGITS_BAD.read_bytes(), 5)), "version_not_newer"
        )
    finally:
        OLD = old


# indefinite freeze ------------------------------------------------------------------------------


def test_expired_release(live, bench):
    bench.now -= timedelta(days=40)
    release = bench.release(NEW, 1)  # expired ten days ago
    bench.now += timedelta(days=40)
    refused(live, bench.deployment(release), "expired")


def test_expired_deployment(live, bench):
    release = bench.release(NEW, 1)
    bench.now -= timedelta(days=2)
    refused(live, bench.deployment(release), "expired")


# malicious mirrors ----------------------------------------------------------------------------


def test_mirror_serves_other_bytes(live, bench):
    release = bench.release(NEW, 1)
    art = bench.root / release["signed"]["artifact"]["sha256"]
    data = bytearray(art.read_bytes())
    data[len(data) // 2] ^= 0xFF
    art.write_bytes(bytes(data))
    refused(live, bench.deployment(release), "hash_mismatch")


def test_truncated_artifact(tmp_path, keys, live, artifact_server):
    bench = Bench(artifact_server.root, keys, base_url=artifact_server.url)
    release = bench.release(NEW, 1)
    art = bench.root / release["signed"]["artifact"]["sha256"]
    art.write_bytes(art.read_bytes()[: art.stat().st_size // 2])
    refused(live, bench.deployment(release), "corrupt_artifact")


# mix-and-match ---------------------------------------------------------------------------------


def test_deployment_for_another_device(live, bench):
    refused(live, bench.deployment(bench.release(NEW, 1), device="cam-02"), "wrong_device")


def test_release_for_another_profile(live, bench):
    refused(live, bench.deployment(bench.release(NEW, 1, profile="rpi4")), "wrong_profile")


def test_release_for_another_model(live, bench):
    refused(live, bench.deployment(bench.release(NEW, 1, name="faces")), "wrong_profile")


# wrong software installation ------------------------------------------------------------------


def test_release_whose_declared_io_does_not_fit_the_application(live, bench):
    release = bench.release(VIBRATION.read_bytes(), 1, io=VIBRATION_IO)
    refused(live, bench.deployment(release), "io_signature_mismatch")


def test_model_whose_real_io_differs_from_what_the_release_declares(live, bench):
    release = bench.release(VIBRATION.read_bytes(), 1)  # declares the digits signature
    refused(live, bench.deployment(release), "io_signature_mismatch")


def test_a_file_that_is_not_a_model(live, bench):
    refused(live, bench.deployment(bench.release(b"TFL3 but not really" * 100, 1)), "invalid_model")


# probation -------------------------------------------------------------------------------------


def test_a_model_that_fails_probation_is_rolled_back(live, bench):
    """digits-bad answers "the next digit": every check passes until agreement is measured."""
    policy = ProbationPolicy(
        min_inferences=12, min_agreement_pct=80, max_latency_ratio_pct=100000, max_duration_s=60
    )
    release = bench.release(DIGITS_BAD.read_bytes(), 1, probation=policy)
    refused(live, bench.deployment(release), "probation_failed", phase="rolled_back")
    assert "agreement" in live.device.last_status().detail
    assert sha(DIGITS_BAD.read_bytes()) in {s for _, s in live.times}  # it did serve, briefly
