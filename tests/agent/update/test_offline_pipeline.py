"""The update pipeline with no inference loop running (the offline `apply` path)."""

from __future__ import annotations

import os

from agent.update.modelstore import ACTIVE, PREVIOUS, ModelStore
from shared.messages import UpdatePhase

from .conftest import DIGITS, DIGITS_BAD, DIGITS_FT, VIBRATION, Bench, sha, write_config


def test_recover_serves_the_initial_model_as_version_0(tmp_path, keys, device_factory):
    device = device_factory(write_config(tmp_path, keys))
    path = device.updater.recover()
    assert path.read_bytes() == DIGITS.read_bytes()
    assert path.name == f"{sha(DIGITS.read_bytes())}.tflite"
    assert not os.access(path, os.W_OK) or os.geteuid() == 0
    assert oct(path.stat().st_mode & 0o777) == oct(0o444)
    active = device.updater.active()
    assert (active.name, active.version, active.sha256) == ("digits", 0, sha(DIGITS.read_bytes()))
    assert device.updater.phase() == UpdatePhase.IDLE


def test_full_update_installs_commits_and_reports_every_phase(tmp_path, keys, device_factory):
    device = device_factory(write_config(tmp_path, keys))
    device.updater.recover()
    bench = Bench(tmp_path / "artifacts", keys)
    new = DIGITS_FT.read_bytes()
    outcome = device.updater.handle_deployment(bench.deployment(bench.release(new, 1)))
    assert outcome.phase == UpdatePhase.COMMITTED and outcome.via == "full", outcome
    store = ModelStore(device.config.state_dir, "digits")
    assert store.link(ACTIVE) == sha(new)
    assert store.link(PREVIOUS) == sha(DIGITS.read_bytes())
    assert (store.dir / ACTIVE).read_bytes() == new
    assert device.updater.active().version == 1
    phases = [s.phase for s in device.statuses()]
    for phase in ("downloading", "verifying", "staged", "activating", "committed"):
        assert phase in phases
    assert phases[-1] == "committed"
    assert all(s.rollout_id == "r1" and s.version == 1 for s in device.statuses())
    assert not list((device.config.state_dir / "downloads").glob("*.part"))


def test_delta_is_used_when_the_release_has_one_for_the_active_model(
    tmp_path, keys, device_factory
):
    device = device_factory(write_config(tmp_path, keys))
    device.updater.recover()
    bench = Bench(tmp_path / "artifacts", keys)
    base, new = DIGITS.read_bytes(), DIGITS_FT.read_bytes()
    release = bench.release(new, 1, bases=[base])
    outcome = device.updater.handle_deployment(bench.deployment(release))
    assert outcome.phase == UpdatePhase.COMMITTED and outcome.via == "delta"
    assert device.updater.active().sha256 == sha(new)


def test_broken_delta_falls_back_to_the_full_artifact(tmp_path, keys, device_factory):
    device = device_factory(write_config(tmp_path, keys))
    device.updater.recover()
    bench = Bench(tmp_path / "artifacts", keys)
    base, new = DIGITS.read_bytes(), DIGITS_FT.read_bytes()
    release = bench.release(new, 1, bases=[base])
    delta_sha = release["signed"]["deltas"][0]["sha256"]
    (bench.root / delta_sha).write_bytes(b"garbage" * 10)  # a mirror serving bad delta bytes
    outcome = device.updater.handle_deployment(bench.deployment(release))
    assert outcome.phase == UpdatePhase.COMMITTED and outcome.via == "full"
    staged = next(s for s in device.statuses() if s.phase == "staged")
    assert "delta failed (corrupt_artifact" in staged.detail


def test_same_version_again_is_a_reported_no_op(tmp_path, keys, device_factory):
    device = device_factory(write_config(tmp_path, keys))
    device.updater.recover()
    bench = Bench(tmp_path / "artifacts", keys)
    data = bench.deployment(bench.release(DIGITS_FT.read_bytes(), 1))
    assert device.updater.handle_deployment(data).phase == UpdatePhase.COMMITTED
    before = len(device.statuses())
    outcome = device.updater.handle_deployment(data)
    assert outcome.no_op and outcome.active
    assert len(device.statuses()) == before + 1
    assert device.last_status().detail == "already active"


def test_local_artifacts_next_to_the_deployment_are_used_before_urls(
    tmp_path, keys, device_factory
):
    device = device_factory(write_config(tmp_path, keys))
    device.updater.recover()
    bench = Bench(tmp_path / "artifacts", keys, base_url="http://127.0.0.1:9/unreachable")
    outcome = device.updater.handle_deployment(
        bench.deployment(bench.release(DIGITS_FT.read_bytes(), 1)), artifact_dirs=[bench.root]
    )
    assert outcome.phase == UpdatePhase.COMMITTED and outcome.via == "local"


def test_unreachable_artifact_is_unavailable_not_rejected(tmp_path, keys, device_factory):
    device = device_factory(write_config(tmp_path, keys))
    device.updater.recover()
    bench = Bench(tmp_path / "artifacts", keys, base_url="http://127.0.0.1:9/unreachable")
    outcome = device.updater.handle_deployment(
        bench.deployment(bench.release(DIGITS_FT.read_bytes(), 1))
    )
    assert (outcome.phase, outcome.reason) == (UpdatePhase.IDLE, "fetch_failed")
    assert device.last_status().reason == "fetch_failed"
    assert device.updater.active().version == 0


def test_model_reason_rejections_are_not_retried(tmp_path, keys, device_factory):
    device = device_factory(write_config(tmp_path, keys))
    device.updater.recover()
    bench = Bench(tmp_path / "artifacts", keys)
    # the vibration model under a release that claims the digits signature
    data = bench.deployment(bench.release(VIBRATION.read_bytes(), 1))
    first = device.updater.handle_deployment(data)
    assert (first.phase, first.reason) == ("rejected", "io_signature_mismatch")
    assert not ModelStore(device.config.state_dir, "digits").has(sha(VIBRATION.read_bytes()))
    before = len(device.statuses())
    again = device.updater.handle_deployment(data)
    assert (again.phase, again.reason) == ("rejected", "io_signature_mismatch")
    assert "refused earlier" in again.detail
    assert [s.phase for s in device.statuses()[before:]] == ["rejected"]  # nothing fetched


def test_housekeeping_keeps_active_previous_and_recent(tmp_path, keys, device_factory):
    device = device_factory(write_config(tmp_path, keys, extra="[update]\nkeep_models = 2\n"))
    device.updater.recover()
    bench = Bench(tmp_path / "artifacts", keys)
    models = [DIGITS_FT.read_bytes(), DIGITS_BAD.read_bytes(), DIGITS.read_bytes()]
    for version, model in enumerate(models, start=1):
        data = bench.deployment(bench.release(model, version), rollout=f"r{version}")
        assert device.updater.handle_deployment(data).active
    store = ModelStore(device.config.state_dir, "digits")
    assert sorted(store.models()) == sorted({sha(models[2]), sha(models[1])})
    assert store.link(ACTIVE) == sha(models[2]) and store.link(PREVIOUS) == sha(models[1])
    downloads = device.config.state_dir / "downloads"
    stale, fresh = downloads / ("0" * 64 + ".part"), downloads / ("1" * 64 + ".part")
    stale.write_bytes(b"x")
    fresh.write_bytes(b"y")
    os.utime(stale, (1, 1))
    device.updater.recover()
    assert not stale.exists() and fresh.exists()
