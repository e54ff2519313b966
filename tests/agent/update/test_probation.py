"""Probation verdicts, and a good model committed after a hot swap with no gap."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from agent.update.modelstore import ACTIVE, PREVIOUS, ModelStore
from agent.update.probation import Probation
from shared.documents import ProbationPolicy

from .conftest import DIGITS, DIGITS_FT, FRAME_FPS, Bench, sha, write_config


@dataclass
class Result:
    model_sha256: str
    ok: bool = True
    latency_ms: float = 1.0
    top1: int | None = 0
    inputs: list[np.ndarray] = field(default_factory=list)


def feed(probation: Probation, n: int, **kw) -> None:
    for _ in range(n):
        probation.observe(Result("new", **kw))


def test_latency_over_the_ratio_fails_with_a_readable_detail():
    p = Probation("new", ProbationPolicy(min_inferences=10, max_latency_ratio_pct=200), 9.8, None)
    feed(p, 10, latency_ms=31.2)
    verdict = p.decide()
    assert verdict is not None and not verdict.passed
    assert verdict.detail == "p95 31.2 ms > 200% of 9.8 ms"


def test_error_rate_over_the_limit_fails():
    p = Probation("new", ProbationPolicy(min_inferences=10, max_error_rate_pct=5), None, None)
    feed(p, 9)
    feed(p, 1, ok=False)
    verdict = p.decide()
    assert verdict is not None and not verdict.passed and "error rate 10.0%" in verdict.detail


def test_a_slowdown_within_scheduling_noise_does_not_fail_a_model():
    p = Probation("new", ProbationPolicy(min_inferences=10, max_latency_ratio_pct=200), 0.9, None)
    feed(p, 10, latency_ms=2.5)  # nearly 3x, but 1.6 ms: jitter on a busy device
    verdict = p.decide()
    assert verdict is not None and verdict.passed
    p = Probation("new", ProbationPolicy(min_inferences=10, max_latency_ratio_pct=200), 0.9, None)
    feed(p, 10, latency_ms=3.3)
    verdict = p.decide()
    assert verdict is not None and not verdict.passed and verdict.detail.startswith("p95 3.3 ms")


def test_undecided_until_enough_inferences_then_pass():
    p = Probation("new", ProbationPolicy(min_inferences=10), 5.0, None)
    feed(p, 9, latency_ms=6.0)
    probation_other = Result("old")
    p.observe(probation_other)  # another model's results do not count
    assert p.decide() is None
    feed(p, 1, latency_ms=6.0)
    verdict = p.decide()
    assert verdict is not None and verdict.passed


def test_timeout_fails():
    now = [0.0]
    p = Probation(
        "new",
        ProbationPolicy(min_inferences=10, max_duration_s=5),
        None,
        None,
        clock=lambda: now[0],
    )
    feed(p, 3)
    now[0] = 6.0
    verdict = p.decide()
    assert verdict is not None and not verdict.passed and "undecided after 5 s" in verdict.detail


class Echo:
    """A stand-in previous model whose top-1 is the first input value."""

    def invoke(self, inputs):
        return [np.eye(10)[int(inputs[0].reshape(-1)[0])]]


def shadow_run(answer_same: bool) -> Probation:
    p = Probation(
        "new",
        ProbationPolicy(min_inferences=10, min_agreement_pct=90),
        None,
        Echo(),
        shadow_every=1,
    )
    for i in range(40):
        top1 = i % 10 if answer_same else (i + 1) % 10
        p.observe(Result("new", top1=top1, inputs=[np.full((1, 4), i % 10, np.float32)]))
        time.sleep(0.002)
    deadline = time.monotonic() + 10
    while p.decide() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return p


def test_shadow_agreement_with_the_previous_model_decides():
    agreeing, disagreeing = shadow_run(True), shadow_run(False)
    good, bad = agreeing.decide(), disagreeing.decide()
    agreeing.stop()
    disagreeing.stop()
    assert good is not None and good.passed and "agreement" in good.detail
    assert bad is not None and not bad.passed and bad.detail.startswith("agreement 0.0% < 90%")


def test_good_model_is_hot_swapped_and_committed_without_a_gap(tmp_path, keys, live_factory):
    live = live_factory(write_config(tmp_path, keys, source=f"synthetic:image?fps={FRAME_FPS}"))
    bench = Bench(tmp_path / "artifacts", keys)
    new = DIGITS_FT.read_bytes()
    # synthetic frames are not digits: agreement on them means nothing, so it is off here
    policy = ProbationPolicy(min_inferences=10, max_latency_ratio_pct=1000)
    started = time.monotonic()
    outcome = live.updater.handle_deployment(
        bench.deployment(bench.release(new, 1, bases=[DIGITS.read_bytes()], probation=policy))
    )
    assert outcome.phase == "probation" and outcome.via == "delta"
    swapped = time.monotonic()
    assert live.serving() == sha(new)
    assert live.updater.active().version == 1
    assert live.settle() == "committed"
    live.wait_inferences(3)
    # swapped between two frames: the old model up to one frame, the new one from the next,
    # and the loop answered frames on both sides (the gap itself: benchmarks/ota_update.py)
    served = [s for _, s in live.times]
    switch = served.index(sha(new))
    assert switch > 0 and set(served[:switch]) == {sha(DIGITS.read_bytes())}
    assert set(served[switch:]) == {sha(new)}
    assert any(t <= started for t, _ in live.times) and any(t >= swapped for t, _ in live.times)
    status = live.device.last_status()
    assert (status.phase, status.version, status.sha256) == ("committed", 1, sha(new))
    store = ModelStore(live.device.config.state_dir, "digits")
    assert (store.link(ACTIVE), store.link(PREVIOUS)) == (sha(new), sha(DIGITS.read_bytes()))
    assert live.times[-1][1] == sha(new)


def test_operator_rollback_ends_probation_and_restores_the_old_model(tmp_path, keys, live_factory):
    live = live_factory(write_config(tmp_path, keys, source=f"synthetic:image?fps={FRAME_FPS}"))
    assert live.updater.rollback() is False  # nothing on probation
    bench = Bench(tmp_path / "artifacts", keys)
    policy = ProbationPolicy(min_inferences=10**6, max_duration_s=3600)
    outcome = live.updater.handle_deployment(
        bench.deployment(bench.release(DIGITS_FT.read_bytes(), 1, probation=policy))
    )
    assert outcome.phase == "probation" and live.serving() == sha(DIGITS_FT.read_bytes())
    assert live.updater.rollback() is True
    old = sha(DIGITS.read_bytes())
    assert live.serving() == old
    assert ModelStore(live.device.config.state_dir, "digits").link(ACTIVE) == old
    status = live.device.last_status()
    assert (status.phase, status.reason) == ("rolled_back", "probation_failed")
    assert "operator" in status.detail
