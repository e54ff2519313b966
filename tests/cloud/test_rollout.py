"""Staged rollouts end to end: `litefleet deploy` + `serve`'s controller + devices on a real broker.

The devices are MQTT clients that do what the agent does with a deployment: verify it with
`shared.verify` against their own id, profile and installed version, then report the outcome
(committed, or rolled_back with reason probation_failed) on their update topic.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud.cli import main
from cloud.config import load_cloud_config
from cloud.rollout import parse_waves, wave_sizes
from cloud.service import CloudService
from shared.errors import Rejected
from shared.keys import Keyring, SigningKey
from shared.messages import DeviceState, ModelIdentity, UpdateStatus, encode_message
from shared.topics import Channel, topic
from shared.verify import verify_deployment
from tests.cloud.conftest import DIGITS, DIGITS_FT, CloudEnv, write_config
from tests.cloud.test_ingest import wait_for

PROFILE = "x86-gateway"


class SimulatedDevice:
    def __init__(
        self, device_id: str, port: int, keyring: Keyring, fails: bool, silent: bool = False
    ) -> None:
        self.device_id, self.keyring, self.fails = device_id, keyring, fails
        self.silent = silent  # receives deployments, never reports (powered off mid-rollout)
        self.model = ModelIdentity("digits", 1, "00" * 32)
        self.received: list[bytes] = []
        self.seq = 0
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=device_id,
            protocol=mqtt.MQTTv5,
        )
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.will_set(
            topic(device_id, Channel.STATE),
            encode_message(DeviceState(device_id, False, time.time())),
            qos=1,
            retain=True,
        )
        self._work: list[bytes] = []
        self._cv = threading.Condition()
        self._stop = False
        self._worker = threading.Thread(target=self._run, daemon=True)
        self._worker.start()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        client.subscribe(topic(self.device_id, Channel.DESIRED), qos=1)
        self._publish_state()

    def _on_message(self, client, userdata, message) -> None:
        if message.payload:
            with self._cv:
                self._work.append(bytes(message.payload))
                self._cv.notify()

    def _publish_state(self) -> None:
        state = DeviceState(self.device_id, True, time.time(), "0.1.0", PROFILE, self.model, "idle")
        self.client.publish(
            topic(self.device_id, Channel.STATE), encode_message(state), qos=1, retain=True
        )

    def _report(self, rollout_id: str, phase: str, version: int, reason: str = "") -> None:
        self.seq += 1
        status = UpdateStatus(
            self.device_id,
            self.seq,
            time.time(),
            rollout_id,
            phase,
            "digits",
            version,
            reason=reason,
        )
        self.client.publish(topic(self.device_id, Channel.UPDATE), encode_message(status), qos=1)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._work and not self._stop:
                    self._cv.wait(0.5)
                if self._stop:
                    return
                data = self._work.pop(0)
            self.received.append(data)
            if self.silent:
                continue
            try:
                update = verify_deployment(
                    data,
                    self.keyring,
                    device_id=self.device_id,
                    profile=PROFILE,
                    model_name="digits",
                    installed_version=self.model.version,
                    installed_sha256=self.model.sha256,
                    now=datetime.now(UTC),
                )
            except Rejected as e:
                self._report(json.loads(data)["signed"]["rollout_id"], "rejected", 0, e.reason)
                continue
            rid, release = update.deployment.rollout_id, update.release
            self._report(rid, "downloading", release.version)
            if self.fails:
                self._report(rid, "rolled_back", release.version, "probation_failed")
            else:
                self.model = ModelIdentity("digits", release.version, release.target.sha256)
                self._report(rid, "committed", release.version)
                self._publish_state()

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def rollout_extra() -> str:
    """More `[rollout]` settings for the fleet's config (tests override it by parametrizing)."""
    return ""


@pytest.fixture
def fleet(cloud_env: CloudEnv, mosquitto, capsys, rollout_extra: str):
    write_config(
        cloud_env.root, mqtt_port=mosquitto.port, extra="[rollout]\ntick_s = 0.2\n" + rollout_extra
    )
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
                    PROFILE,
                    "--config",
                    str(cloud_env.config),
                ]
            )
            == 0
        )
    service = CloudService(load_cloud_config(cloud_env.config))
    service.start()
    devices: list[SimulatedDevice] = []

    def make(
        n: int, failing: set[int], silent: frozenset[int] = frozenset()
    ) -> list[SimulatedDevice]:
        keyring = Keyring((cloud_env.key.public,))
        devices.extend(
            SimulatedDevice(f"dev-{i:02d}", mosquitto.port, keyring, i in failing, i in silent)
            for i in range(n)
        )
        wait_for(
            lambda: json_out(capsys, ["devices"], cloud_env).__len__() == n,
            30,
            "every device known from its state",
        )
        return devices

    yield make
    for d in devices:
        d.close()
    service.stop()


def json_out(capsys, argv: list[str], env: CloudEnv):
    capsys.readouterr()
    assert main([*argv, "--json", "--config", str(env.config)]) == 0
    return json.loads(capsys.readouterr().out)


def deploy(capsys, env: CloudEnv) -> str:
    out = json_out(
        capsys,
        [
            "deploy",
            "digits@2",
            "--profile",
            PROFILE,
            "--waves",
            "1,25%,100%",
            "--max-failures",
            "5%",
        ],
        env,
    )
    assert out["wave_sizes"] == [1, 5, 20] and out["first_wave"] == ["dev-00"]
    return str(out["id"])


def test_rollout_of_20_devices_completes_in_3_waves(fleet, cloud_env, capsys) -> None:
    devices = fleet(20, set())
    rollout_id = deploy(capsys, cloud_env)

    def state() -> dict:
        return json_out(capsys, ["rollouts", rollout_id], cloud_env)[0]

    wait_for(lambda: state()["state"] == "completed", 60, "the rollout to complete")
    view = state()
    assert view["release"] == "digits@2" and view["committed"] == 20 and view["failed"] == 0
    assert view["waves"] == ["1", "25%", "100%"]
    assert all(len(d.received) == 1 for d in devices)
    listed = json_out(capsys, ["devices"], cloud_env)
    assert {d["model"]["version"] for d in listed} == {2}
    assert all(d["online"] for d in listed)


def test_rollout_pauses_when_probation_fails_and_shows_reasons(fleet, cloud_env, capsys):
    failing = {2, 3, 7, 11, 15, 19}  # 30 %: two of them in wave 2
    devices = fleet(20, failing)
    rollout_id = deploy(capsys, cloud_env)

    def state() -> dict:
        return json_out(capsys, ["rollouts"], cloud_env)[0]

    wait_for(lambda: state()["state"] == "paused", 60, "the rollout to pause")
    time.sleep(1.0)  # a few more ticks: nothing else goes out
    view = state()
    assert view["id"] == rollout_id and view["current_wave"] == 2
    assert view["committed"] == 3 and view["failed"] == 2 and view["waiting"] == 15
    assert view["failure_reasons"] == {"probation_failed": 2}
    assert {f["device_id"] for f in view["failures"]} == {"dev-02", "dev-03"}
    assert "probation_failed: 2" in view["reason"]
    assert sum(1 for d in devices if d.received) == 5  # wave 3 never got a deployment
    capsys.readouterr()
    assert main(["rollouts", "--config", str(cloud_env.config)]) == 0
    table = capsys.readouterr().out
    assert "paused" in table and "probation_failed" in table

    # the operator accepts these failures and resumes: the next wave fails too, and it pauses
    assert main(["rollout", "resume", rollout_id, "--config", str(cloud_env.config)]) == 0
    wait_for(
        lambda: state()["state"] == "paused" and state()["failed"] == 6,
        60,
        "the third wave's failures to pause it again",
    )
    assert state()["failure_reasons"] == {"probation_failed": 6}


def retained(port: int, device_id: str, wait_s: float = 1.0) -> bytes | None:
    """The retained `desired` message of a device on the broker, as a new subscriber sees it."""
    got: list[bytes] = []
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"probe-{device_id}",
        protocol=mqtt.MQTTv5,
    )
    client.on_message = lambda c, u, m: got.append(bytes(m.payload)) if m.retain else None
    client.connect("127.0.0.1", port)
    client.subscribe(topic(device_id, Channel.DESIRED), qos=1)
    client.loop_start()
    time.sleep(wait_s)
    client.disconnect()
    client.loop_stop()
    return got[0] if got else None


def test_abort_clears_the_deployment_of_a_device_that_never_started(
    fleet, cloud_env, capsys, mosquitto
) -> None:
    devices = fleet(4, set(), silent=frozenset({3}))
    rollout_id = str(
        json_out(
            capsys, ["deploy", "digits@2", "--profile", PROFILE, "--waves", "100%"], cloud_env
        )["id"]
    )

    def state() -> dict:
        return json_out(capsys, ["rollouts", rollout_id], cloud_env)[0]

    wait_for(lambda: state()["committed"] == 3, 60, "three devices to commit")
    assert state()["state"] == "running" and len(devices[3].received) == 1
    assert retained(mosquitto.port, "dev-03") is not None  # waiting for the silent device

    capsys.readouterr()
    config = str(cloud_env.config)
    assert main(["rollout", "abort", rollout_id, "--config", config]) == 0
    assert f"rollout {rollout_id}: aborted" in capsys.readouterr().out
    assert state()["state"] == "aborted" and state()["committed"] == 3
    assert retained(mosquitto.port, "dev-03") is None  # it will not start when it wakes up
    assert retained(mosquitto.port, "dev-00") is not None  # committed devices keep theirs
    time.sleep(0.6)  # ticks go by: an aborted rollout sends nothing more
    assert [len(d.received) for d in devices] == [1, 1, 1, 1]

    assert main(["rollout", "abort", rollout_id, "--config", config]) == 2
    assert "already aborted" in capsys.readouterr().err


@pytest.mark.parametrize("rollout_extra", ["device_timeout_s = 1.0\n"])
def test_a_device_silent_past_the_timeout_counts_as_failed(fleet, cloud_env, capsys) -> None:
    fleet(4, set(), silent=frozenset({3}))
    rollout_id = str(
        json_out(
            capsys,
            [
                "deploy",
                "digits@2",
                "--profile",
                PROFILE,
                "--waves",
                "100%",
                "--max-failures",
                "10%",
            ],
            cloud_env,
        )["id"]
    )

    def state() -> dict:
        return json_out(capsys, ["rollouts", rollout_id], cloud_env)[0]

    wait_for(lambda: state()["state"] == "paused", 60, "the timeout to pause the rollout")
    view = state()
    assert view["committed"] == 3 and view["failed"] == 1
    assert view["failure_reasons"] == {"timeout": 1}
    assert [f["device_id"] for f in view["failures"]] == ["dev-03"]


def test_wave_sizes() -> None:
    assert wave_sizes(parse_waves("1,25%,100%"), 20) == [1, 5, 20]
    assert wave_sizes(parse_waves("1,10%,50%,100%"), 3) == [1, 2, 3]
    assert wave_sizes(parse_waves("5"), 20) == [5, 20]
    with pytest.raises(ValueError):
        parse_waves("0,abc")


def test_a_deployment_a_real_agent_refuses_counts_as_failed_with_its_sentence(
    cloud_env, mosquitto, agent_process, capsys
) -> None:
    """A refusal before any download is reported with the rollout id the deployment claims,
    so the rollout counts it at once (not `pending` until the timeout) and shows why. Here the
    agent trusts another key than the one the cloud signs with: `bad_signature`."""
    refusal = "bad_signature"
    write_config(cloud_env.root, mqtt_port=mosquitto.port, extra="[rollout]\ntick_s = 0.2\n")
    assert (
        main(
            [
                "release",
                str(DIGITS_FT),
                "--name",
                "digits",
                "--version",
                "1",
                "--profile",
                PROFILE,
                "--config",
                str(cloud_env.config),
            ]
        )
        == 0
    )
    service = CloudService(load_cloud_config(cloud_env.config))
    service.start()
    try:
        agent = agent_process(mosquitto, [SigningKey.generate().public.hex], telemetry_s=3600)
        wait_for(
            lambda: [d["device_id"] for d in json_out(capsys, ["devices"], cloud_env)] == ["dev-1"],
            30,
            "the agent known from its state",
        )
        rollout_id = str(
            json_out(
                capsys, ["deploy", "digits@1", "--device", "dev-1", "--waves", "100%"], cloud_env
            )["id"]
        )

        def state() -> dict:
            return json_out(capsys, ["rollouts", rollout_id], cloud_env)[0]

        wait_for(lambda: state()["failed"] == 1, 30, f"the {refusal} to count")
        view = state()
        assert view["pending"] == 0 and view["failure_reasons"] == {refusal: 1}
        [failure] = view["failures"]
        assert failure["device_id"] == "dev-1" and failure["reason"] == refusal
        assert failure["detail"], failure  # the device's own sentence
        wait_for(lambda: state()["state"] == "paused", 30, "the failure share to pause it")

        capsys.readouterr()
        assert main(["rollouts", rollout_id, "--config", str(cloud_env.config)]) == 0
        table = " ".join(capsys.readouterr().out.split())
        assert f"dev-1: {refusal}: {' '.join(failure['detail'].split())}" in table, table
        assert agent.alive()
    finally:
        service.stop()


def test_a_device_that_took_a_newer_deployment_no_longer_counts(
    fleet, cloud_env, capsys, mosquitto
) -> None:
    """`idle`/`superseded` from a device: its row leaves the count, the rollout completes."""
    fleet(2, set(), silent=frozenset({1}))
    rollout_id = str(
        json_out(
            capsys, ["deploy", "digits@2", "--profile", PROFILE, "--waves", "100%"], cloud_env
        )["id"]
    )

    def state() -> dict:
        return json_out(capsys, ["rollouts", rollout_id], cloud_env)[0]

    wait_for(lambda: state()["committed"] == 1, 60, "dev-00 to commit")
    time.sleep(0.6)  # ticks go by: dev-01 keeps the rollout running (the positive control)
    assert state()["state"] == "running" and state()["pending"] == 1
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id="dev-01-report",
        protocol=mqtt.MQTTv5,
    )
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    status = UpdateStatus(
        "dev-01",
        1000,
        time.time(),
        rollout_id,
        "idle",
        "digits",
        2,
        reason="superseded",
        detail="superseded by rollout other-1",
    )
    client.publish(topic("dev-01", Channel.UPDATE), encode_message(status), qos=1).wait_for_publish(
        10
    )
    client.disconnect()
    client.loop_stop()
    wait_for(lambda: state()["state"] == "completed", 30, "the rollout to complete without it")
    view = state()
    assert view["committed"] == 1 and view["failed"] == 0 and view["pending"] == 0
