"""Probation's time limit through the updater, on the injected clock: no waiting on wall time."""

from __future__ import annotations

from agent.update.modelstore import ACTIVE, ModelStore
from shared.documents import ProbationPolicy
from shared.phases import UpdatePhase

from .conftest import DIGITS, DIGITS_FT, FRAME_FPS, Bench, SteppedClock, sha, write_config


def test_a_probation_that_never_decides_rolls_back_when_its_time_is_up(
    tmp_path, keys, live_factory
):
    clock = SteppedClock()
    live = live_factory(
        write_config(tmp_path, keys, source=f"synthetic:image?fps={FRAME_FPS}"), clock=clock
    )
    bench = Bench(tmp_path / "artifacts", keys)
    never = ProbationPolicy(min_inferences=10**6, max_duration_s=600)  # never enough frames
    outcome = live.updater.handle_deployment(
        bench.deployment(bench.release(DIGITS_FT.read_bytes(), 1, probation=never))
    )
    assert outcome.phase == UpdatePhase.PROBATION, outcome
    live.wait_inferences(3)
    clock.advance(599)
    live.updater.tick()
    assert live.updater.probation_active()  # not yet: 599 s on its clock
    assert live.serving() == sha(DIGITS_FT.read_bytes())
    clock.advance(2)
    live.updater.tick()
    assert not live.updater.probation_active()
    assert live.updater.phase() == UpdatePhase.ROLLED_BACK
    status = live.device.last_status()
    assert (status.phase, status.reason) == ("rolled_back", "probation_failed")
    assert "undecided after 600 s" in status.detail
    assert live.serving() == sha(DIGITS.read_bytes())
    store = ModelStore(live.device.config.state_dir, "digits")
    assert store.link(ACTIVE) == sha(DIGITS.read_bytes())
