"""Every phase is a journal row that recovery reads; moves outside the table are refused."""

from __future__ import annotations

import pytest

from agent.update.attempts import Attempts
from agent.update.journal import UpdateJournal
from agent.update.modelstore import ACTIVE, ModelStore
from agent.update.outcome import StatusReporter
from shared.phases import UpdatePhase

from .conftest import DIGITS, DIGITS_FT, Bench, sha, write_config
from .test_crash_safety import crash


def test_validating_is_a_reported_phase_between_verifying_and_staged(
    tmp_path, keys, device_factory
):
    device = device_factory(write_config(tmp_path, keys))
    device.updater.recover()
    bench = Bench(tmp_path / "artifacts", keys)
    outcome = device.updater.handle_deployment(
        bench.deployment(bench.release(DIGITS_FT.read_bytes(), 1))
    )
    assert outcome.phase == UpdatePhase.COMMITTED, outcome
    phases = [s.phase for s in device.statuses()]
    assert phases.index("verifying") < phases.index("validating") < phases.index("staged")


def test_a_crash_while_validating_is_read_from_the_phase_and_rejects_the_model(
    tmp_path, keys, device_factory
):
    config = write_config(tmp_path, keys)
    bench = Bench(tmp_path / "artifacts", keys)
    deployment = tmp_path / "deployment.json"
    deployment.write_bytes(bench.deployment(bench.release(DIGITS_FT.read_bytes(), 1)))
    crash(config, deployment, "offline", "journal.validating")

    device = device_factory(config)
    journal = UpdateJournal(device.db)
    assert journal.in_progress().phase == UpdatePhase.VALIDATING  # what the crash left
    served = device.updater.recover()
    assert served.read_bytes() == DIGITS.read_bytes()
    assert ModelStore(device.config.state_dir, "digits").link(ACTIVE) == sha(DIGITS.read_bytes())
    last = device.last_status()
    assert (last.phase, last.reason) == ("rejected", "invalid_model")
    assert device.updater.phase() == UpdatePhase.REJECTED
    journal.close()


def test_advance_refuses_a_move_the_table_forbids_and_writes_nothing(
    tmp_path, keys, device_factory
):
    device = device_factory(write_config(tmp_path, keys))
    journal = UpdateJournal(device.db)
    notified: list[int] = []
    steps = Attempts(journal, StatusReporter("cam-01", device.outbox), lambda: notified.append(1))
    entry = steps.begin(
        UpdatePhase.DOWNLOADING, rollout_id="r1", model="digits", version=1, sha256="ab" * 32
    )
    reports = len(device.statuses())
    with pytest.raises(RuntimeError, match="may not go from downloading to probation"):
        steps.advance(entry, UpdatePhase.PROBATION)
    with pytest.raises(RuntimeError):
        steps.note(entry, phase=UpdatePhase.COMMITTED)
    assert journal.get(entry.id).phase == UpdatePhase.DOWNLOADING
    assert len(device.statuses()) == reports and notified == [1]
    entry = steps.advance(entry, UpdatePhase.IDLE, "superseded", "a newer rollout")  # positive
    assert (journal.get(entry.id).phase, device.last_status().reason) == ("idle", "superseded")
    assert notified == [1, 1]
    journal.close()
