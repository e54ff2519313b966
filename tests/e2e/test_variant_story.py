"""Acceptance: a two-variant release (the release's own model made deliberately slower, and a
fast variant with the same I/O) deployed through `litefleet serve` to a real agent: the device
measures both on its own inputs, activates the faster one, and the cloud records which variant
the device runs and why (`litefleet devices --json`)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from cloud.cli import main
from cloud.config import load_cloud_config
from cloud.fleet import device_views
from cloud.service import CloudService
from cloud.store import open_store
from tests.agent.slow_variant import slow_variant
from tests.cloud.conftest import DIGITS_FT, CloudEnv, cloud_env  # noqa: F401  (fixture)
from tests.conftest import free_port
from tests.e2e.test_capture_story import _cloud_config


def _view(db_path: Path, device: str) -> dict | None:  # type: ignore[type-arg]
    db = open_store(db_path)
    try:
        return next((v for v in device_views(db, 3600.0) if v["device_id"] == device), None)
    finally:
        db.close()


def test_the_device_activates_the_variant_it_measures_fastest_and_says_why(  # type: ignore[no-untyped-def]
    request, tmp_path: Path, mosquitto, agent_process, capsys
) -> None:
    env: CloudEnv = request.getfixturevalue("cloud_env")
    config = _cloud_config(env, mosquitto.port, free_port(), "file://artifacts")
    slow = tmp_path / "slow.tflite"
    slow.write_bytes(slow_variant(DIGITS_FT.read_bytes(), 30))
    fast_sha = hashlib.sha256(DIGITS_FT.read_bytes()).hexdigest()
    service = CloudService(load_cloud_config(config), web=False)  # no dashboard on 8080
    service.start()
    try:
        agent = agent_process(
            mosquitto,
            [env.key.public.hex],
            device_id="dev-v",
            telemetry_s=2.0,
            source="synthetic:image?fps=20",
        )
        assert (
            main(
                [
                    "release",
                    str(slow),
                    "--name",
                    "digits",
                    "--version",
                    "1",
                    "--profile",
                    "x86-gateway",
                    "--quality",
                    "99",
                    "--variant",
                    f"fast={DIGITS_FT}@99",
                    "--min-quality",
                    "98",
                    "--bench-budget",
                    "6",
                    "--min-inferences",
                    "20",
                    "--json",
                    "--config",
                    str(config),
                ]
            )
            == 0
        )
        signed = json.loads(capsys.readouterr().out)
        assert [c["name"] for c in signed["variants"]["candidates"]] == ["release", "fast"]
        assert signed["target"]["sha256"] != fast_sha  # older agents would take the slow one
        assert main(["deploy", "digits@1", "--device", "dev-v", "--config", str(config)]) == 0

        def settled() -> bool:
            view = _view(env.db, "dev-v")
            return bool(
                view
                and view["variant"]
                and view["model"]
                and view["model"]["sha256"] == fast_sha
                and view["update_phase"] == "committed"
            )

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not settled():
            time.sleep(0.5)
        assert settled(), (_view(env.db, "dev-v"), agent.log()[-4000:])
        capsys.readouterr()
        assert main(["devices", "--json", "--config", str(config)]) == 0
        view = next(v for v in json.loads(capsys.readouterr().out) if v["device_id"] == "dev-v")
        variant = view["variant"]
        assert variant["chosen"] == "fast" and variant["sha256"] == fast_sha
        figures = variant["figures"]
        assert figures["fast"]["p50_ms"] < figures["release"]["p50_ms"]
        assert "fastest" in variant["reason"] and "fast" in variant["reason"]
    finally:
        service.stop()
