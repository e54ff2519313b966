"""The rotation procedure of docs/security.md, end to end, on two devices.

Real parts: mosquitto, two `litefleet-agent run` processes trusting the first release key (an
implicit root version 1), the `litefleet` commands an operator types, and artifacts served
over HTTP. Device B is offline during both rotations:

1. rotation 1 moves the root key offline (`keys rotate --add-root ... --remove-root ...`,
   signed by the old and the new root key), `trust publish`;
2. rotation 2 revokes the (stolen) release key and adds a new one (`keys rotate --add ...
   --remove ...`, signed by the offline root key), `trust publish`;
3. `litefleet release` still pointed at the revoked key refuses to sign (nothing stored); a
   thief who holds the key signs a release and deployments outside the cloud and publishes
   them: device A refuses at once; device B comes back, walks roots 2 and 3 from the retained
   chain, and refuses too, both with `bad_signature` naming the revoked key, both still
   serving their initial model;
4. with `[signing] key` pointed at the new key, the next release installs on both;
5. `litefleet audit` lists every step with the OS user and the signed documents' sha256.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cloud.cli import main
from cloud.config import load_cloud_config
from cloud.modelinfo import read_io_signature
from cloud.mqtt import CloudLink
from localio.cli import EXIT_INVALID
from localio.keyfiles import load_signing_key
from shared.builders import build_deployment, build_release, package_model
from shared.keys import PublicKey
from tests.agent.update.conftest import ArtifactServer

REPO = Path(__file__).resolve().parents[2]
DIGITS = REPO / "examples" / "models" / "digits.tflite"
DIGITS_FT = REPO / "examples" / "models" / "digits-ft.tflite"
INITIAL = hashlib.sha256(DIGITS.read_bytes()).hexdigest()
NEW = hashlib.sha256(DIGITS_FT.read_bytes()).hexdigest()
DEVICES = ("cam-a", "cam-b")

pytestmark = pytest.mark.slow


def cloud_config(root: Path, broker: Any, public_url: str, signing_key: str) -> Path:
    path = root / "cloud.toml"
    path.write_text(f"""
[mqtt]
host = "{broker.host}"
port = {broker.port}

[store]
db = "cloud.db"
artifacts = "file://artifacts"
public_url = "{public_url}"

[signing]
key = "{signing_key}"
""")
    return path


def run(capsys: Any, *argv: str) -> str:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, (argv, out, err)
    return out


def test_rotate_publish_revoke_on_two_devices_one_offline(  # type: ignore[no-untyped-def]
    tmp_path: Path, mosquitto, mqtt_subscriber, agent_process, capsys
) -> None:
    cloud = tmp_path / "cloud"
    (cloud / "artifacts").mkdir(parents=True)
    server = ArtifactServer(cloud / "artifacts")
    try:
        config = cloud_config(cloud, mosquitto, server.url, "keys/release.key")
        cfg = ["--config", str(config)]
        run(capsys, "keys", "generate", "--dir", str(cloud / "keys"))
        old_pub = (cloud / "keys" / "release.pub").read_text().strip()
        sub = mqtt_subscriber(mosquitto, ["litefleet/v1/devices/+/+"])
        agents = {
            d: agent_process(
                mosquitto, [old_pub], device_id=d, telemetry_s=3600, source="synthetic:image?fps=10"
            )
            for d in DEVICES
        }

        def messages(device: str, channel: str) -> list[dict[str, Any]]:
            return [json.loads(p) for p in sub.payloads(f"/{device}/{channel}")]

        def wait_update(device: str, phase: str, version: int) -> dict[str, Any]:
            def found() -> bool:
                return any(
                    u["phase"] == phase and u["version"] == version
                    for u in messages(device, "update")
                )

            assert sub.wait_for(lambda ms: found(), 90), (
                messages(device, "update"),
                agents[device].log()[-3000:],
            )
            return next(
                u
                for u in messages(device, "update")
                if u["phase"] == phase and u["version"] == version
            )

        def refused(device: str) -> dict[str, Any]:
            assert sub.wait_for(
                lambda ms: any(u["phase"] == "rejected" for u in messages(device, "update")), 90
            ), (messages(device, "update"), agents[device].log()[-3000:])
            return next(u for u in messages(device, "update") if u["phase"] == "rejected")

        def trusted(device: str) -> int:
            path = agents[device].state_dir / "trust.json"
            return json.loads(path.read_text())["root"]["signed"]["version"] if path.exists() else 1

        for device in DEVICES:
            assert sub.wait_for(
                lambda ms, d=device: any(s["online"] for s in messages(d, "state")), 60
            ), agents[device].log()
        assert agents["cam-b"].terminate() == 0  # B is offline for both rotations

        # rotation 1: the root key moves offline (signed by the old and the new root key)
        run(capsys, "keys", "generate", "--dir", str(cloud / "offline"))
        run(
            capsys,
            "keys",
            "rotate",
            "--add-root",
            str(cloud / "offline" / "release.pub"),
            "--remove-root",
            str(cloud / "keys" / "release.pub"),
            "--sign",
            str(cloud / "keys" / "release.key"),
            str(cloud / "offline" / "release.key"),
            *cfg,
        )
        run(capsys, "trust", "publish", *cfg)
        # rotation 2: the release key is revoked and replaced (signed by the offline root key)
        run(capsys, "keys", "generate", "--dir", str(cloud / "keys2"))
        out = run(
            capsys,
            "keys",
            "rotate",
            "--add",
            str(cloud / "keys2" / "release.pub"),
            "--remove",
            str(cloud / "keys" / "release.pub"),
            "--sign",
            str(cloud / "offline" / "release.key"),
            *cfg,
        )
        assert "root v3" in out
        run(capsys, "trust", "publish", *cfg)
        deadline = time.monotonic() + 30
        while trusted("cam-a") != 3:
            assert time.monotonic() < deadline, agents["cam-a"].log()[-3000:]
            time.sleep(0.05)

        # the cloud, still pointed at the revoked key, refuses to sign with it
        revoked = PublicKey.from_hex(old_pub).keyid[:16]
        argv = ["release", str(DIGITS_FT), "--name", "digits", "--version", "1"]
        assert main([*argv, "--profile", "x86-gateway", *cfg]) == EXIT_INVALID
        assert f"{revoked}: this key was removed from the root at version 3" in (
            capsys.readouterr().err
        )
        # whoever holds the revoked key signs outside the cloud: refused by A now, by B once back
        thief = load_signing_key(cloud / "keys" / "release.key")
        now = datetime.now(UTC)
        packaged = package_model(DIGITS_FT.read_bytes())
        forged = build_release(
            name="digits",
            version=1,
            profile="x86-gateway",
            target=packaged.target,
            artifact=packaged.artifact(f"{server.url}/forged.zst"),
            io=read_io_signature(DIGITS_FT),
            keys=[thief],
            now=now,
        )
        link = CloudLink(load_cloud_config(config).mqtt, "thief")
        link.start(timeout=10.0)
        try:
            for device in DEVICES:
                deployment = build_deployment(
                    release=forged, device_id=device, rollout_id="forged", keys=[thief], now=now
                )
                link.publish(
                    f"litefleet/v1/devices/{device}/desired",
                    json.dumps(deployment).encode(),
                    retain=True,
                )
        finally:
            link.stop()
        agents["cam-b"].start()
        for device in DEVICES:
            update = refused(device)
            assert update["reason"] == "bad_signature", update
            assert f"revoked key {revoked} (revoked by root version 3)" in update["detail"]
            assert messages(device, "state")[-1]["model"]["sha256"] == INITIAL
        assert trusted("cam-b") == 3

        # the operator signs with the new key from now on: the next release installs on both
        config = cloud_config(cloud, mosquitto, server.url, "keys2/release.key")
        run(
            capsys,
            "release",
            str(DIGITS_FT),
            "--name",
            "digits",
            "--version",
            "2",
            "--profile",
            "x86-gateway",
            *cfg,
        )
        run(capsys, "deploy", "digits@2", "--device", *DEVICES, "--waves", "100%", *cfg)
        for device in DEVICES:
            assert wait_update(device, "probation", 2)["sha256"] == NEW
            wait_update(device, "committed", 2)

        rows = json.loads(run(capsys, "audit", "--json", *cfg))
        actions = [r["action"] for r in rows]
        assert actions == [
            "keys.rotate",
            "trust.publish",
            "keys.rotate",
            "trust.publish",
            "release",
            "deploy",
            "deploy",
        ]
        assert {r["actor"] for r in rows} == {getpass.getuser()}
        assert all(len(r["sha256"]) == 64 for r in rows)
        assert [r["target"] for r in rows[:4]] == ["root v2", "root v2", "root v3", "root v3"]
    finally:
        server.close()
