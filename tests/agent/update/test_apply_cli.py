"""`litefleet-agent apply`: offline install, typed refusals, and handover to a running daemon."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from agent.cli import main
from agent.update.modelstore import ACTIVE, ModelStore
from agent.update.state import read_update_state
from localio.cli import EXIT_REJECTED
from shared.documents import ProbationPolicy

from .conftest import DIGITS, DIGITS_FT, REPO, Bench, load, sha, write_config


def test_apply_without_a_daemon_installs_from_the_deployment_folder(tmp_path, keys, capsys):
    config = write_config(tmp_path, keys)
    bundle = tmp_path / "bundle"
    bench = Bench(bundle, keys, base_url="http://127.0.0.1:9/nowhere")  # only local files work
    release = bench.release(DIGITS_FT.read_bytes(), 3)
    full = bundle / release["signed"]["artifact"]["sha256"]
    full.rename(full.with_name(full.name + ".zst"))  # the documented alternative name
    (bundle / "deployment.json").write_bytes(bench.deployment(release))
    code = main(["apply", "--config", str(config), str(bundle / "deployment.json"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    assert out["active"] and out["via"] == "local" and out["version"] == 3
    identity, phase = read_update_state(load(config))
    assert (identity.version, identity.sha256, phase) == (
        3,
        sha(DIGITS_FT.read_bytes()),
        "committed",
    )


def test_apply_refusal_exits_rejected_with_the_reason(tmp_path, keys, capsys):
    config = write_config(tmp_path, keys)
    bench = Bench(tmp_path / "bundle", keys)
    (tmp_path / "d.json").write_bytes(
        bench.deployment(bench.release(DIGITS_FT.read_bytes(), 1), device="someone-else")
    )
    code = main(["apply", "--config", str(config), str(tmp_path / "d.json")])
    err = capsys.readouterr().err
    assert code == EXIT_REJECTED
    assert "wrong_device" in err
    identity, phase = read_update_state(load(config))
    assert (identity.version, phase) == (0, "rejected")
    assert identity.sha256 == sha(DIGITS.read_bytes())


def test_apply_hands_over_to_a_running_daemon(tmp_path, keys, live_factory):
    config = write_config(tmp_path, keys, source="synthetic:image?fps=50")
    live = live_factory(config)  # holds the update lock, like the daemon
    bench = Bench(tmp_path / "bundle", keys)
    policy = ProbationPolicy(min_inferences=5, max_latency_ratio_pct=100000)
    (tmp_path / "d.json").write_bytes(
        bench.deployment(bench.release(DIGITS_FT.read_bytes(), 1, probation=policy))
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent.cli",
            "apply",
            "--config",
            str(config),
            str(tmp_path / "d.json"),
            "--json",
            "--timeout",
            "120",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while proc.poll() is None:
        assert time.monotonic() < deadline
        live.updater.tick()  # the daemon's periodic job
        time.sleep(0.05)
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    outcome = json.loads(out)
    assert outcome["phase"] == "probation" and outcome["active"]
    assert live.serving() == sha(DIGITS_FT.read_bytes())  # the daemon swapped it in
    assert live.settle() == "committed"
    assert ModelStore(live.device.config.state_dir, "digits").link(ACTIVE) == sha(
        DIGITS_FT.read_bytes()
    )
