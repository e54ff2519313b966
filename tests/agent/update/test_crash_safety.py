"""kill -9 at every named point of an update; the next start serves a complete, known model.

Each case runs an update in a subprocess with `LITEFLEET_CRASH_AT=<point>`, which SIGKILLs the
process exactly there. Then this (fresh) process recovers the state dir like a restarting
agent: the model it would serve must hash to the old or the new target, load and invoke in
LiteRT, the active link must agree, and the journal must be in a terminal phase. Offline cases
then run the same deployment again, which must complete (resuming what was left).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent.loop import build_loop
from agent.runtime import load_model
from agent.update.crash import CRASH_ENV
from agent.update.modelstore import ACTIVE, ModelStore, file_sha256
from shared.documents import ProbationPolicy
from shared.messages import UpdatePhase

from .conftest import DIGITS, DIGITS_BAD, DIGITS_FT, REPO, Bench, sha, write_config

DRIVER = Path(__file__).with_name("crash_driver.py")
OLD, GOOD, BAD = DIGITS.read_bytes(), DIGITS_FT.read_bytes(), DIGITS_BAD.read_bytes()
PASS = ProbationPolicy(min_inferences=5, max_latency_ratio_pct=100000, max_duration_s=60)
FAIL = ProbationPolicy(
    min_inferences=20, min_agreement_pct=80, max_latency_ratio_pct=100000, max_duration_s=60
)

# (crash point, scenario): offline = no loop (`apply`), delta = offline through a delta,
# live = loop + probation that passes, fail = loop + probation that fails and rolls back
CASES = [
    ("journal.downloading", "offline"),
    ("fetch.mid", "offline"),
    ("download.progress", "offline"),
    ("retrieval.full_downloaded", "offline"),
    ("journal.verifying", "offline"),
    ("retrieval.done", "offline"),
    ("store.before_rename", "offline"),
    ("store.after_rename", "offline"),
    ("journal.staged", "offline"),
    ("journal.activating", "offline"),
    ("links.before_replace", "offline"),
    ("links.between_swaps", "offline"),
    ("links.after_swaps", "offline"),
    ("journal.committed", "offline"),
    ("retrieval.delta_downloaded", "delta"),
    ("journal.verifying", "delta"),
    ("store.before_rename", "delta"),
    ("links.between_swaps", "live"),
    ("loop.swapped", "live"),
    ("journal.probation", "live"),
    ("probation.verdict", "live"),
    ("journal.committed", "live"),
    ("probation.verdict", "fail"),
    ("rollback.swapped", "fail"),
    ("links.restore_between", "fail"),
    ("journal.rolled_back", "fail"),
]


def run_probation(device, served: Path) -> None:
    """What the restarted daemon does: run the loop, attach (resuming probation), tick."""
    stop = threading.Event()
    loop = build_loop(device.config, load_model(served), stop)
    loop.start()
    try:
        device.updater.attach(loop)
        deadline = time.monotonic() + 60
        while device.updater.probation_active():
            assert time.monotonic() < deadline, "the resumed probation did not settle"
            device.updater.tick()
            time.sleep(0.02)
    finally:
        loop.stop()
        loop.model.close()


def crash(config: Path, deployment: Path, mode: str, point: str) -> None:
    env = {**os.environ, CRASH_ENV: point, "PYTHONPATH": str(REPO)}
    run = subprocess.run(
        [sys.executable, str(DRIVER), str(config), str(deployment), mode],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == -signal.SIGKILL, f"never reached {point}: {run.stdout}{run.stderr}"


@pytest.mark.parametrize(("point", "scenario"), CASES, ids=[f"{p}-{s}" for p, s in CASES])
def test_crash_at_point_recovers_to_a_complete_model(
    point, scenario, tmp_path, keys, device_factory
):
    source = "synthetic:image" if scenario in ("live", "fail") else "synthetic:image?fps=25"
    config = write_config(tmp_path, keys, source=source)
    bench = Bench(tmp_path / "artifacts", keys)
    new = BAD if scenario == "fail" else GOOD
    release = bench.release(
        new,
        1,
        bases=[OLD] if scenario == "delta" else None,
        probation=FAIL if scenario == "fail" else PASS,
    )
    deployment = tmp_path / "deployment.json"
    deployment.write_bytes(bench.deployment(release))
    mode = "live" if scenario in ("live", "fail") else "offline"
    crash(config, deployment, mode, point)

    device = device_factory(config)
    served = device.updater.recover()
    served_sha = file_sha256(served)
    assert served_sha in (sha(OLD), sha(new))
    assert served.read_bytes() in (OLD, new)
    model = load_model(served)
    model.invoke(model.sample_input())
    model.close()
    assert ModelStore(device.config.state_dir, "digits").link(ACTIVE) == served_sha
    assert device.updater.active().sha256 == served_sha
    if device.updater.phase() == UpdatePhase.PROBATION:  # interrupted once: resumed
        assert point in ("journal.probation", "probation.verdict") and served_sha == sha(new)
        assert device.last_status().detail == "probation interrupted, resumed"
        run_probation(device, served)
        served_sha = ModelStore(device.config.state_dir, "digits").link(ACTIVE)
        if scenario == "live":  # a model that passes its probation is kept
            assert served_sha == sha(new)
            assert device.updater.phase() == UpdatePhase.COMMITTED
    assert device.updater.phase() in UpdatePhase.TERMINAL
    if scenario == "fail":
        assert served_sha == sha(OLD)
    if scenario in ("offline", "delta"):
        outcome = device.updater.handle_deployment(deployment.read_bytes())
        assert outcome.active, outcome
        assert file_sha256(ModelStore(device.config.state_dir, "digits").dir / ACTIVE) == sha(new)


def _probation_crash(tmp_path: Path, keys, policy: ProbationPolicy) -> tuple[Path, Path]:
    """A live update killed while its model is on probation: the first interruption."""
    config = write_config(tmp_path, keys, source="synthetic:image")
    bench = Bench(tmp_path / "artifacts", keys)
    deployment = tmp_path / "deployment.json"
    deployment.write_bytes(bench.deployment(bench.release(GOOD, 1, probation=policy)))
    crash(config, deployment, "live", "journal.probation")
    return config, deployment


def test_one_interrupted_probation_resumes_with_the_same_model_and_commits(
    tmp_path, keys, device_factory
):
    config, _ = _probation_crash(tmp_path, keys, PASS)
    device = device_factory(config)
    served = device.updater.recover()
    assert file_sha256(served) == sha(GOOD)  # the model on probation serves again
    assert device.updater.phase() == UpdatePhase.PROBATION
    resumed = device.last_status()
    assert (resumed.phase, resumed.detail, resumed.rollout_id) == (
        "probation",
        "probation interrupted, resumed",
        "r1",
    )
    run_probation(device, served)
    assert device.updater.phase() == UpdatePhase.COMMITTED
    assert device.last_status().phase == "committed"
    assert ModelStore(device.config.state_dir, "digits").link(ACTIVE) == sha(GOOD)


def test_a_second_interruption_of_the_same_probation_rolls_back_as_crashed(
    tmp_path, keys, device_factory
):
    config, deployment = _probation_crash(tmp_path, keys, PASS)
    crash(config, deployment, "resume", "probation.resumed")  # killed again, on probation
    device = device_factory(config)
    served = device.updater.recover()
    assert file_sha256(served) == sha(OLD)
    assert ModelStore(device.config.state_dir, "digits").link(ACTIVE) == sha(OLD)
    assert device.updater.phase() == UpdatePhase.ROLLED_BACK
    statuses = device.statuses()
    assert [s.detail for s in statuses].count("probation interrupted, resumed") == 1
    last = statuses[-1]
    assert (last.phase, last.reason, last.rollout_id) == ("rolled_back", "crashed", "r1")
    # condemned: the same bytes at that version are not tried again
    again = device.updater.handle_deployment(deployment.read_bytes())
    assert (again.phase, again.reason) == (UpdatePhase.REJECTED, "crashed")
