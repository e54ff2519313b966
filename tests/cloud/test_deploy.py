"""`litefleet deploy --out`: signed deployments and artifacts for the offline `apply` path."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

from cloud.cli import main
from shared.keys import Keyring
from shared.verify import verify_deployment
from tests.cloud.conftest import DIGITS, DIGITS_FT, CloudEnv


def test_offline_bundle(cloud_env: CloudEnv, tmp_path, capsys) -> None:
    cfg = ["--config", str(cloud_env.config)]
    for version, model in ((1, DIGITS), (2, DIGITS_FT)):
        assert (
            main(
                [
                    "release",
                    str(model),
                    "--name",
                    "digits",
                    "--version",
                    str(version),
                    "--profile",
                    "x86-gateway",
                    *cfg,
                ]
            )
            == 0
        )
    assert main(["groups", "add", "lobby", "cam-1", "cam-2", *cfg]) == 0
    capsys.readouterr()
    out = tmp_path / "bundle"
    assert main(["deploy", "digits@2", "--group", "lobby", "--out", str(out), "--json", *cfg]) == 0
    summary = json.loads(capsys.readouterr().out)
    keyring = Keyring((cloud_env.key.public,))
    for device in ("cam-1", "cam-2"):
        update = verify_deployment(
            (out / f"{device}.json").read_bytes(),
            keyring,
            device_id=device,
            profile="x86-gateway",
            model_name="digits",
            installed_version=1,
            installed_sha256=hashlib.sha256(DIGITS.read_bytes()).hexdigest(),
            now=datetime.now(UTC),
        )
        assert update.deployment.rollout_id == summary["id"]
    release = update.release
    full = out / f"{release.artifact.sha256}.zst"
    delta = out / f"{release.deltas[0].sha256}.delta"
    assert hashlib.sha256(full.read_bytes()).hexdigest() == release.artifact.sha256
    assert hashlib.sha256(delta.read_bytes()).hexdigest() == release.deltas[0].sha256
    assert main(["rollouts", "--json", *cfg]) == 0
    (view,) = json.loads(capsys.readouterr().out)
    assert view["pending"] == 2 and view["state"] == "running"


def test_deploy_refusals(cloud_env: CloudEnv, capsys) -> None:
    cfg = ["--config", str(cloud_env.config)]
    assert main(["deploy", "digits@9", "--device", "cam-1", *cfg]) == 2
    assert "no release digits@9" in capsys.readouterr().err
    assert main(["deploy", "digits", "--device", "cam-1", *cfg]) == 2
    assert (
        main(
            [
                "release",
                str(DIGITS),
                "--name",
                "digits",
                "--version",
                "1",
                "--profile",
                "x86-gateway",
                *cfg,
            ]
        )
        == 0
    )
    assert main(["deploy", "digits@1", "--group", "nobody", *cfg]) == 2
    assert "has no devices" in capsys.readouterr().err
    assert main(["deploy", "digits@1", "--device", "bad id!", *cfg]) == 3


def test_each_device_gets_the_build_for_its_profile(cloud_env: CloudEnv, tmp_path, capsys) -> None:
    cfg = ["--config", str(cloud_env.config)]
    for profile in ("x86-gateway", "rpi4"):
        assert (
            main(
                [
                    "release",
                    str(DIGITS),
                    "--name",
                    "digits",
                    "--version",
                    "1",
                    "--profile",
                    profile,
                    *cfg,
                ]
            )
            == 0
        )
    db = cloud_env_db(cloud_env)
    db.execute(
        "INSERT INTO devices (device_id, profile, model_name) VALUES "
        "('cam-x86', 'x86-gateway', 'digits'), ('cam-pi', 'rpi4', 'digits'), "
        "('cam-new', '', NULL)"
    )
    capsys.readouterr()
    out = tmp_path / "bundle"
    assert (
        main(
            [
                "deploy",
                "digits@1",
                "--device",
                "cam-x86",
                "cam-pi",
                "--out",
                str(out),
                "--json",
                *cfg,
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["profiles"] == ["rpi4", "x86-gateway"]
    keyring = Keyring((cloud_env.key.public,))
    for device, profile in (("cam-x86", "x86-gateway"), ("cam-pi", "rpi4")):
        update = verify_deployment(
            (out / f"{device}.json").read_bytes(),
            keyring,
            device_id=device,
            profile=profile,
            model_name="digits",
            installed_version=0,
            installed_sha256=None,
            now=datetime.now(UTC),
        )
        assert update.release.profile == profile
        assert (out / f"{update.release.artifact.sha256}.zst").exists()
    # a device that never reported its profile cannot be given one of two builds
    assert main(["deploy", "digits@1", "--device", "cam-new", *cfg]) == 2
    assert "has not reported its profile" in capsys.readouterr().err


def cloud_env_db(env: CloudEnv):  # the cloud store the commands above wrote
    from cloud.config import load_cloud_config
    from cloud.store import open_store

    return open_store(load_cloud_config(env.config).store.db)
