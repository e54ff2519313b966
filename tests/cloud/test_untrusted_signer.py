"""What the cloud signs is checked against the current root first (`cloud.signers`).

After `keys rotate` drops the `[signing] key` (or asks for more signatures than the cloud
makes), `release`, `deploy`, `command`, `capture` and the dashboard refuse with one line naming
the key, write nothing to the store and publish nothing; `serve`'s controller pauses a rollout
whose next wave was signed by the dropped key, and its upload grants stop. Each refusal has its
positive control: the same step with a key the root lists goes through.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cloud.artifacts.files import FileStore
from cloud.cli import main
from cloud.config import load_cloud_config
from cloud.release import load_releases
from cloud.rollout import create_rollout, tick_rollouts
from cloud.roots import current_root
from cloud.samples.grants import SampleGrants
from cloud.store import counter, open_store
from cloud.web.actions import ActionRefused, deploy, send_command
from localio.cli import EXIT_INVALID
from localio.keyfiles import save_signing_key
from shared.keys import Keyring, SigningKey
from shared.messages import CaptureRequest, encode_message
from shared.verify import verify_deployment
from tests.cloud.conftest import DIGITS, DIGITS_FT, CloudEnv, write_config
from tests.cloud.test_cli import run_cli
from tests.cloud.test_trust_cli import new_key


def cfg(env: CloudEnv) -> list[str]:
    return ["--config", str(env.config)]


def broker_env(tmp_path: Path, mqtt_port: int) -> CloudEnv:
    """`cloud_env`, its config naming this broker."""
    root = tmp_path / "cloud"
    (root / "keys").mkdir(parents=True)
    key = SigningKey.generate()
    save_signing_key(key, root / "keys" / "release.key")
    return CloudEnv(root, write_config(root, mqtt_port=mqtt_port), key)


def release(env: CloudEnv, version: int, model: Path = DIGITS) -> int:
    return main(
        [
            "release",
            str(model),
            "--name",
            "digits",
            "--version",
            str(version),
            "--profile",
            "x86-gateway",
            *cfg(env),
        ]
    )


def rotate(env: CloudEnv, *args: str) -> None:
    """`keys rotate` signed by the first key (root v1's, kept as the root key throughout)."""
    signer = env.root / "keys" / "release.key"
    assert main(["keys", "rotate", *args, "--sign", str(signer), *cfg(env)]) == 0


def old_pub(env: CloudEnv) -> str:
    path = env.root / "keys" / "release.pub"
    path.write_text(env.key.public.hex + "\n")
    return str(path)


def sign_with(env: CloudEnv, folder: str) -> None:
    """Point `[signing] key` at FOLDER/release.key."""
    text = env.config.read_text()
    start = text.index('key = "') + len('key = "')
    end = text.index('"', start)
    env.config.write_text(text[:start] + f"{folder}/release.key" + text[end:])


def count(env: CloudEnv, table: str, where: str = "") -> int:
    with sqlite3.connect(env.db) as db:
        return int(db.execute(f"SELECT count(*) FROM {table} {where}").fetchone()[0])


def test_release_refused_once_the_root_drops_the_key(cloud_env: CloudEnv, capsys) -> None:
    assert release(cloud_env, 1) == 0  # signed by root v1's key: stored
    new, _, new_pub = new_key(cloud_env.root / "k2")
    rotate(cloud_env, "--add", str(new_pub), "--remove", old_pub(cloud_env))
    capsys.readouterr()
    artifacts = sorted(p.name for p in cloud_env.artifacts.rglob("*"))

    done = run_cli(
        "release",
        str(DIGITS_FT),
        "--name",
        "digits",
        "--version",
        "2",
        "--profile",
        "x86-gateway",
        *cfg(cloud_env),
    )
    assert done.returncode == EXIT_INVALID
    assert done.stderr == (
        f"error: [signing] key {cloud_env.key.keyid[:16]}: this key was removed from the root "
        "at version 2 by `litefleet keys rotate`; configure a [signing] key the root lists: "
        f"{new.keyid[:16]}\n"
    )
    assert count(cloud_env, "releases") == 1
    assert count(cloud_env, "audit", "WHERE action = 'release'") == 1
    assert sorted(p.name for p in cloud_env.artifacts.rglob("*")) == artifacts

    # commands are refused before any broker is asked (none runs here: that would exit 4)
    for argv in (["command", "cam-1", "report-now"], ["capture", "cam-1", "--count", "5"]):
        assert main([*argv, *cfg(cloud_env)]) == EXIT_INVALID
        err = capsys.readouterr().err
        assert f"[signing] key {cloud_env.key.keyid[:16]}: this key was removed" in err
        assert err.count("\n") == 1
    assert count(cloud_env, "audit", "WHERE action = 'command'") == 0

    sign_with(cloud_env, "k2")  # a key the root lists: released
    assert release(cloud_env, 2, DIGITS_FT) == 0
    assert count(cloud_env, "releases") == 2


def test_a_threshold_the_cloud_cannot_sign_alone_is_refused(cloud_env: CloudEnv, capsys) -> None:
    _, _, second = new_key(cloud_env.root / "k2")
    rotate(cloud_env, "--add", str(second), "--threshold", "2")
    capsys.readouterr()
    assert release(cloud_env, 1) == EXIT_INVALID
    err = capsys.readouterr().err
    assert err == (
        "error: root version 2 needs 2 signatures of its release keys; this cloud signs with "
        f"1 ({cloud_env.key.keyid[:16]}), so devices would refuse what it signs\n"
    )
    assert count(cloud_env, "releases") == 0
    rotate(cloud_env, "--threshold", "1")  # one signature of a listed key again: released
    assert release(cloud_env, 1) == 0
    assert count(cloud_env, "releases") == 1


def test_deploy_refused_and_nothing_retained(  # type: ignore[no-untyped-def]
    tmp_path: Path, mosquitto, mqtt_subscriber, capsys
) -> None:
    env = broker_env(tmp_path, mosquitto.port)
    root, key = env.root, env.key
    assert release(env, 1) == 0
    new, _, new_pub = new_key(root / "k2")
    rotate(env, "--add", str(new_pub), "--remove", old_pub(env))
    capsys.readouterr()
    # publishing the root is a step of the rotation: done, with a warning about the key
    assert main(["trust", "publish", *cfg(env)]) == 0
    assert capsys.readouterr().err == (
        f"warning: [signing] key {key.keyid[:16]}: this key was removed from the root at "
        f"version 2 by `litefleet keys rotate`; configure a [signing] key the root lists: "
        f"{new.keyid[:16]}\n"
    )

    # the dropped key would sign the deployment
    assert main(["deploy", "digits@1", "--device", "cam-1", *cfg(env)]) == EXIT_INVALID
    err = capsys.readouterr().err
    assert f"[signing] key {key.keyid[:16]}: this key was removed from the root at version 2" in (
        err
    )
    assert err.count("\n") == 1
    # a listed key would sign the deployment, but the release inside is the dropped key's
    sign_with(env, "k2")
    assert main(["trust", "publish", *cfg(env)]) == 0
    assert capsys.readouterr().err == ""  # the key is listed now: no warning
    assert main(["deploy", "digits@1", "--device", "cam-1", *cfg(env)]) == EXIT_INVALID
    err = capsys.readouterr().err
    assert err == (
        f"error: release digits@1 for profile x86-gateway is signed by {key.keyid[:16]}; root "
        f"version 2 needs 1 signature(s) of its release keys ({new.keyid[:16]}) and it has 0, "
        "so devices would refuse it: release the model again under a new version\n"
    )
    assert count(env, "rollouts") == 0 and count(env, "rollout_devices") == 0
    assert count(env, "audit", "WHERE action = 'deploy'") == 0

    # positive control: released and deployed with the listed key, to another device
    assert release(env, 2, DIGITS_FT) == 0
    assert main(["deploy", "digits@2", "--device", "cam-2", "--waves", "100%", *cfg(env)]) == 0
    sub = mqtt_subscriber(mosquitto, ["litefleet/v1/devices/+/desired"])  # retained only
    assert sub.wait_for(lambda ms: any("/cam-2/" in m.topic for m in ms), 30)
    assert [m.topic for m in sub.snapshot()] == ["litefleet/v1/devices/cam-2/desired"]
    update = verify_deployment(
        sub.snapshot()[0].payload,
        Keyring((new.public,)),
        device_id="cam-2",
        profile="x86-gateway",
        model_name="digits",
        installed_version=0,
        installed_sha256=None,
        now=datetime.now(UTC),
    )
    assert update.release.version == 2


def test_the_controller_pauses_a_wave_signed_by_a_dropped_key(cloud_env: CloudEnv) -> None:
    assert release(cloud_env, 1) == 0
    db = open_store(load_cloud_config(cloud_env.config).store)
    try:
        build = load_releases(db, "digits", 1)["x86-gateway"]
        plan = create_rollout(
            db,
            {"x86-gateway": (build.release, build.envelope)},
            {"cam-1": "x86-gateway", "cam-2": "x86-gateway"},
            ["1", "100%"],
            cloud_env.key,
            datetime.now(UTC),
            lifetime_s=3600,
            success_threshold_pct=0,  # the next tick starts wave 2 whatever wave 1 did
        )
        published: list[str] = []
        # positive control: root v1 lists the key, wave 1 goes out
        tick_rollouts(
            db, lambda d, p: published.append(d), root=current_root(db, cloud_env.key).root
        )
        assert published == ["cam-1"]
        _, _, new_pub = new_key(cloud_env.root / "k2")
        rotate(cloud_env, "--add", str(new_pub), "--remove", old_pub(cloud_env))
        tick_rollouts(db, lambda d, p: published.append(d), root=current_root(db, None).root)
        assert published == ["cam-1"]
        state, reason = (
            sqlite3.connect(cloud_env.db)
            .execute("SELECT state, reason FROM rollouts WHERE id = ?", (plan.rollout_id,))
            .fetchone()
        )
        assert state == "paused"
        assert reason.startswith(
            f"each deployment of wave 2 is signed by {cloud_env.key.keyid[:16]}; root version 2"
        )
        assert reason.endswith("abort this rollout and deploy again")
    finally:
        db.close()


def test_the_dashboard_refuses_to_sign_with_a_dropped_key(cloud_env: CloudEnv) -> None:
    assert release(cloud_env, 1) == 0
    assert main(["groups", "add", "lobby", "cam-1", *cfg(cloud_env)]) == 0
    config = load_cloud_config(cloud_env.config)
    _, _, new_pub = new_key(cloud_env.root / "k2")
    rotate(cloud_env, "--add", str(new_pub), "--remove", old_pub(cloud_env))
    db = open_store(config.store)
    try:
        with pytest.raises(ActionRefused, match="this key was removed from the root at version 2"):
            deploy(db, config, "digits", 1, "lobby", "100%", "alice")
        with pytest.raises(ActionRefused, match="this key was removed") as refused:
            send_command(db, config, "cam-1", "report-now", "alice")
        assert refused.value.status == 409
    finally:
        db.close()
    assert count(cloud_env, "rollouts") == 0
    assert count(cloud_env, "audit", "WHERE action IN ('deploy', 'command')") == 0
    # positive control: the same deploy with root v1's key listed again
    rotate(cloud_env, "--add", old_pub(cloud_env))
    db = open_store(config.store)
    try:
        assert deploy(db, config, "digits", 1, "lobby", "100%", "alice")
    finally:
        db.close()
    assert count(cloud_env, "rollouts") == 1


def test_upload_grants_stop_while_the_root_drops_the_key(  # type: ignore[no-untyped-def]
    tmp_path: Path, mosquitto, mqtt_subscriber, caplog
) -> None:
    env = broker_env(tmp_path, mosquitto.port)
    root, key = env.root, env.key
    config = load_cloud_config(env.config)
    store = FileStore(root / "artifacts", "http://fleet.example/artifacts", root / "upload.key")
    grants = SampleGrants(config, store, key)
    sub = mqtt_subscriber(mosquitto, ["litefleet/v1/devices/cam-01/cmd"])
    files = {"20260101T000000-0123abcd.jpg": 900}
    request = encode_message(CaptureRequest("cam-01", 1.0, files))
    name = "litefleet/v1/devices/cam-01/capture"

    def upload_commands() -> list[dict[str, Any]]:
        return [json.loads(p) for p in sub.payloads("/cmd")]

    grants.start()
    try:
        assert grants.answer(name, request)  # root v1: granted
        assert sub.wait_for(lambda ms: len(ms) == 1, 30)
        _, _, new_pub = new_key(root / "k2")
        rotate(env, "--add", str(new_pub), "--remove", old_pub(env))
        for _ in range(2):
            assert not grants.answer(name, request)
        assert grants.untrusted == 2 and grants.granted == 1
        with open_store(config.store) as db:  # what /metrics reports
            assert (counter(db, "grants.untrusted"), counter(db, "grants.granted")) == (2, 1)
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len([w for w in warnings if "no upload grants" in w]) == 1
        assert any("this key was removed from the root at version 2" in w for w in warnings)
        rotate(env, "--add", old_pub(env))  # listed again: granted again
        assert grants.answer(name, request)
        assert sub.wait_for(lambda ms: len(ms) == 2, 30)
        assert len(upload_commands()) == 2
        assert all(c["signed"]["command"] == "upload" for c in upload_commands())
    finally:
        grants.stop()
