"""The daemon wires `desired` to the updater and `cmd rollback` to it, over a real broker.

A signed deployment published (retained) on `desired` is installed and hot-swapped into the
running agent, which reports `probation` and republishes its retained state; a signed
`rollback` command then ends the probation: the update reports `rolled_back` and the state goes
back to the initial model (version 0).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

from shared.builders import build_deployment, build_release, package_model
from shared.documents import ProbationPolicy
from shared.keys import SigningKey
from tests.agent.test_daemon_inbound import DEVICE, DIGITS_IO, PREFIX, publish, signed_command

REPO = Path(__file__).resolve().parents[2]
DIGITS = REPO / "examples" / "models" / "digits.tflite"
DIGITS_FT = REPO / "examples" / "models" / "digits-ft.tflite"


def deployment(tmp_path: Path, key: SigningKey) -> bytes:
    package = package_model(DIGITS_FT.read_bytes(), level=3)
    folder = tmp_path / "artifacts"
    folder.mkdir()
    (folder / package.full_sha256).write_bytes(package.full)
    now = datetime.now(UTC).replace(microsecond=0)
    release = build_release(
        name="digits",
        version=1,
        profile="x86-gateway",
        target=package.target,
        artifact=package.artifact(f"file://{folder}/{package.full_sha256}"),
        io=DIGITS_IO,
        keys=[key],
        now=now,
        probation=ProbationPolicy(min_inferences=1_000_000, max_duration_s=600),
    )
    return json.dumps(
        build_deployment(release=release, device_id=DEVICE, rollout_id="r-7", keys=[key], now=now)
    ).encode()


def test_deployment_over_desired_then_rollback_over_cmd(  # type: ignore[no-untyped-def]
    tmp_path: Path, mosquitto, mqtt_subscriber, agent_process
) -> None:
    key = SigningKey.generate()
    sub = mqtt_subscriber(mosquitto, [f"{PREFIX}/+"])
    agent = agent_process(mosquitto, [key.public.hex], telemetry_s=3600)

    def states() -> list[dict]:  # type: ignore[type-arg]
        return [json.loads(p) for p in sub.payloads("/state")]

    def phases() -> list[str]:
        return [json.loads(p)["phase"] for p in sub.payloads("/update")]

    assert sub.wait_for(lambda ms: any(s["online"] for s in states()), 30), agent.log()[-3000:]
    initial_sha = hashlib.sha256(DIGITS.read_bytes()).hexdigest()
    assert states()[-1]["model"] == {"name": "digits", "version": 0, "sha256": initial_sha}

    publish(mosquitto, f"{PREFIX}/desired", deployment(tmp_path, key), retain=True)
    assert sub.wait_for(lambda ms: "probation" in phases(), 60), (phases(), agent.log()[-3000:])
    ft_sha = hashlib.sha256(DIGITS_FT.read_bytes()).hexdigest()
    assert sub.wait_for(lambda ms: states()[-1]["model"]["sha256"] == ft_sha, 20)
    assert states()[-1]["update_phase"] == "probation" and states()[-1]["model"]["version"] == 1

    publish(mosquitto, f"{PREFIX}/cmd", signed_command(key, "rollback"))
    assert sub.wait_for(lambda ms: "rolled_back" in phases(), 30), (phases(), agent.log()[-3000:])
    rolled = [json.loads(p) for p in sub.payloads("/update")][-1]
    assert rolled["phase"] == "rolled_back" and rolled["reason"] == "probation_failed"
    assert sub.wait_for(lambda ms: states()[-1]["model"]["sha256"] == initial_sha, 20)
    assert states()[-1]["update_phase"] == "rolled_back"
    assert agent.alive()
    assert "running operator command 'rollback'" in agent.log()
    assert agent.terminate() == 0
