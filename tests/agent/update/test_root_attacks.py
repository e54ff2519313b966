"""The attacks TUF lists around roots, against a real agent through a real broker.

Each test runs `litefleet-agent run` (trusting one key, as an implicit root version 1) with
mosquitto, publishes root chains retained on `litefleet/v1/trust/root` and signed deployments
on the device's `desired` topic, and asserts outcomes: the version in the device's persisted
`trust.json`, the refusal reason in the agent's log, and the update statuses on the broker (a
release refused with `bad_signature` while the initial model keeps serving, or installed).
Every refusal is followed by a positive control in the same test: a root that should be
accepted is, so the refusal is not a root that never arrived.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.documents import ProbationPolicy, format_time
from shared.envelope import sign_envelope
from shared.keys import SigningKey
from shared.root import Root, build_chain

from .conftest import DEVICE, DIGITS, DIGITS_FT, Bench, sha

ROOT_TOPIC = "litefleet/v1/trust/root"
DESIRED = f"litefleet/v1/devices/{DEVICE}/desired"
INITIAL = sha(DIGITS.read_bytes())
NEW = sha(DIGITS_FT.read_bytes())
QUICK = ProbationPolicy(min_inferences=10, max_duration_s=600)


def make_root(
    version: int,
    release: list[SigningKey],
    roots: list[SigningKey],
    signers: list[SigningKey],
    expires: timedelta = timedelta(days=365),
) -> dict[str, Any]:
    now = datetime.now(UTC)
    root = Root(
        version,
        format_time(now),
        format_time(now + expires),
        tuple(k.public for k in release),
        1,
        tuple(k.public for k in roots),
        1,
    )
    return sign_envelope(root.to_signed(), signers)


class Rig:
    """One real agent, its broker, an HTTP artifact server and the operator's keys."""

    def __init__(
        self,
        mosquitto: Any,
        mqtt_subscriber: Any,
        agent_process: Any,
        artifact_server: Any,
        start: bool = True,
    ) -> None:
        from tests.agent.test_daemon_inbound import publish

        self._publish = publish
        self.broker = mosquitto
        self.k1 = SigningKey.generate()
        self.bench = Bench(artifact_server.root, [self.k1], artifact_server.url)
        self.sub = mqtt_subscriber(mosquitto, [f"litefleet/v1/devices/{DEVICE}/+"])
        self.agent = agent_process(
            mosquitto,
            [self.k1.public.hex],
            device_id=DEVICE,
            telemetry_s=3600,
            source="synthetic:image?fps=10",
            start=start,
        )
        if start:
            self.wait_online()

    def wait_online(self) -> None:
        assert self.sub.wait_for(
            lambda ms: any(json.loads(p)["online"] for p in self.sub.payloads("/state")), 60
        ), self.log()

    def log(self) -> str:
        return str(self.agent.log()[-4000:])

    # roots ------------------------------------------------------------------------------

    def publish_roots(self, *envelopes: dict[str, Any]) -> None:
        self._publish(
            self.broker, ROOT_TOPIC, json.dumps(build_chain(list(envelopes))).encode(), retain=True
        )

    def trusted_version(self) -> int:
        path: Path = self.agent.state_dir / "trust.json"
        if not path.exists():
            return 1
        return int(json.loads(path.read_text())["root"]["signed"]["version"])

    def wait_trusted(self, version: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.trusted_version() != version:
            assert time.monotonic() < deadline, (self.trusted_version(), self.log())
            time.sleep(0.05)

    def refusals(self) -> list[str]:
        return [line for line in self.agent.log().splitlines() if "root refused:" in line]

    def wait_refused(self, reason: str, seen: int, timeout: float = 30.0) -> str:
        """The next root refusal after the first `seen`; asserts its reason."""
        deadline = time.monotonic() + timeout
        while len(self.refusals()) <= seen:
            assert time.monotonic() < deadline, self.log()
            time.sleep(0.05)
        line = self.refusals()[seen]
        assert f"root refused: {reason}:" in line, line
        return line

    # deployments ------------------------------------------------------------------------

    def deploy(self, version: int, keys: list[SigningKey], model: Path = DIGITS_FT) -> None:
        release = self.bench.release(model.read_bytes(), version, keys=keys, probation=QUICK)
        self._publish(
            self.broker,
            DESIRED,
            self.bench.deployment(release, keys=keys, rollout=f"r{version}"),
            retain=True,
        )

    def updates(self) -> list[dict[str, Any]]:
        return [json.loads(p) for p in self.sub.payloads("/update")]

    def wait_update(self, phase: str, timeout: float = 60.0) -> dict[str, Any]:
        assert self.sub.wait_for(
            lambda ms: any(u["phase"] == phase for u in self.updates()), timeout
        ), (self.updates(), self.log())
        return next(u for u in self.updates() if u["phase"] == phase)

    def serving(self) -> str:
        states = [json.loads(p) for p in self.sub.payloads("/state")]
        return str(states[-1]["model"]["sha256"])


@pytest.fixture
def rig(mosquitto, mqtt_subscriber, agent_process, artifact_server) -> Rig:  # type: ignore[no-untyped-def]
    return Rig(mosquitto, mqtt_subscriber, agent_process, artifact_server)


def test_root_signed_only_by_new_keys_is_refused(rig: Rig) -> None:
    k2 = SigningKey.generate()
    rig.publish_roots(make_root(2, [k2], [k2], [k2]))
    line = rig.wait_refused("bad_signature", 0)
    assert "root version 1's root keys" in line
    assert rig.trusted_version() == 1
    rig.deploy(1, [k2])  # what the attacker wanted: a release under their key
    refused = rig.wait_update("rejected")
    assert refused["reason"] == "bad_signature" and rig.serving() == INITIAL
    rig.publish_roots(make_root(2, [k2], [k2], [rig.k1, k2]))  # positive control
    rig.wait_trusted(2)


def test_root_signed_only_by_old_keys_is_refused(rig: Rig) -> None:
    k2 = SigningKey.generate()
    rig.publish_roots(make_root(2, [k2], [k2], [rig.k1]))
    assert "its own root keys" in rig.wait_refused("bad_signature", 0)
    assert rig.trusted_version() == 1
    rig.publish_roots(make_root(2, [k2], [k2], [rig.k1, k2]))  # positive control
    rig.wait_trusted(2)


def test_rollback_to_an_older_root_is_refused(rig: Rig) -> None:
    k1 = rig.k1
    v2, v3 = make_root(2, [k1], [k1], [k1]), make_root(3, [k1], [k1], [k1])
    rig.publish_roots(v2, v3)
    rig.wait_trusted(3)
    rig.publish_roots(v2)
    assert "rollback" in rig.wait_refused("version_not_newer", 0)
    assert rig.trusted_version() == 3
    rig.publish_roots(v2, v3, make_root(4, [k1], [k1], [k1]))  # positive control
    rig.wait_trusted(4)


def test_freeze_an_expired_root_is_refused_but_walked_through(rig: Rig) -> None:
    k1 = rig.k1
    stale = make_root(2, [k1], [k1], [k1], expires=-timedelta(hours=1))
    rig.publish_roots(stale)
    assert "root version 2 expired" in rig.wait_refused("expired", 0)
    assert rig.trusted_version() == 1
    rig.publish_roots(stale, make_root(3, [k1], [k1], [k1]))  # through the expired one to v3
    rig.wait_trusted(3)


def test_fork_two_different_roots_of_the_same_version(rig: Rig) -> None:
    k1, k2 = rig.k1, SigningKey.generate()
    ours = make_root(2, [k1], [k1], [k1])
    rig.publish_roots(ours)
    rig.wait_trusted(2)
    theirs = make_root(2, [k2], [k1], [k1])  # as validly signed, but not the root we trust
    rig.publish_roots(theirs)
    assert "fork" in rig.wait_refused("version_not_newer", 0)
    trusted = json.loads((rig.agent.state_dir / "trust.json").read_text())["root"]
    assert trusted["signed"]["release_keys"]["keys"] == [k1.public.hex]
    rig.publish_roots(ours, make_root(3, [k1], [k1], [k1]))  # positive control
    rig.wait_trusted(3)


def test_five_rotations_walked_in_order_after_being_offline_for_all(  # type: ignore[no-untyped-def]
    mosquitto, mqtt_subscriber, agent_process, artifact_server
) -> None:
    # offline throughout, with no broker session either (a new device, or one whose session
    # expired): only the retained chain can bring it from version 1 to version 6
    rig = Rig(mosquitto, mqtt_subscriber, agent_process, artifact_server, start=False)
    keys = [rig.k1] + [SigningKey.generate() for _ in range(5)]
    chain: list[dict[str, Any]] = []
    for n in range(2, 7):  # each rotation replaces the release and root key with a new one
        chain.append(make_root(n, [keys[n - 1]], [keys[n - 1]], [keys[n - 2], keys[n - 1]]))
        rig.publish_roots(*chain)  # the retained message holds the whole chain so far
    rig.deploy(1, [keys[5]])
    rig.agent.start()
    rig.wait_online()
    rig.wait_trusted(6)
    deadline = time.monotonic() + 10  # trust.json is written before the line is logged
    while "walked v2, v3, v4, v5, v6" not in rig.agent.log():
        assert time.monotonic() < deadline, rig.agent.log()
        time.sleep(0.05)
    installed = rig.wait_update("probation")
    assert installed["sha256"] == NEW and installed["version"] == 1


def test_release_signed_by_a_revoked_key_is_refused_and_one_by_the_new_key_installs(
    rig: Rig,
) -> None:
    k1, k2 = rig.k1, SigningKey.generate()
    rig.publish_roots(make_root(2, [k2], [k1], [k1]))  # k1 stays a root key, stops signing releases
    rig.wait_trusted(2)
    rig.deploy(1, [k1])
    refused = rig.wait_update("rejected")
    assert refused["reason"] == "bad_signature"
    assert f"revoked key {k1.keyid[:16]} (revoked by root version 2)" in refused["detail"]
    assert rig.serving() == INITIAL
    rig.deploy(2, [k2])
    installed = rig.wait_update("probation")
    assert installed["sha256"] == NEW and installed["version"] == 2
    assert rig.wait_update("committed")["version"] == 2


def test_a_deployment_refused_under_the_old_root_installs_once_the_new_root_arrives(
    rig: Rig,
) -> None:
    k2 = SigningKey.generate()
    rig.deploy(1, [k2])  # signed by a key that only the next root will list
    assert rig.wait_update("rejected")["reason"] == "bad_signature"
    rig.publish_roots(make_root(2, [k2], [rig.k1], [rig.k1]))  # the deployment is not resent
    rig.wait_trusted(2)
    installed = rig.wait_update("probation")
    assert installed["sha256"] == NEW and installed["version"] == 1


def test_commands_follow_the_root_a_revoked_key_is_refused_the_new_key_obeyed(rig: Rig) -> None:
    from tests.agent.test_daemon_inbound import signed_command

    k1, k2 = rig.k1, SigningKey.generate()
    cmd_topic = f"litefleet/v1/devices/{DEVICE}/cmd"
    rig.publish_roots(make_root(2, [k2], [k1], [k1]))
    rig.wait_trusted(2)
    rig._publish(rig.broker, cmd_topic, signed_command(k1, "report-now", device_id=DEVICE))
    deadline = time.monotonic() + 30
    while "dropped a cmd message: bad_signature" not in rig.agent.log():
        assert time.monotonic() < deadline, rig.log()
        time.sleep(0.05)
    assert "running operator command" not in rig.agent.log()
    rig._publish(rig.broker, cmd_topic, signed_command(k2, "report-now", device_id=DEVICE))
    while "running operator command 'report-now'" not in rig.agent.log():
        assert time.monotonic() < deadline, rig.log()
        time.sleep(0.05)


def test_fast_forward_a_release_at_the_int64_limit_stops_counting_once_its_key_is_revoked(
    rig: Rig,
) -> None:
    k1, k2, offline = rig.k1, SigningKey.generate(), SigningKey.generate()
    v2 = make_root(2, [k1], [offline], [k1, offline])  # the root key moved offline first
    rig.publish_roots(v2)
    rig.wait_trusted(2)
    rig.deploy(2**63 - 1, [k1])  # the thief, with the stolen k1 (still trusted)
    assert rig.wait_update("committed")["version"] == 2**63 - 1
    rig.deploy(2, [k1], model=DIGITS)  # control: while k1 is trusted, nothing lower installs
    assert rig.wait_update("rejected")["reason"] == "version_not_newer"
    rig.publish_roots(v2, make_root(3, [k2], [offline], [offline]))  # k1 rotated out
    rig.wait_trusted(3)
    assert rig.sub.wait_for(
        lambda ms: any(u["reason"] == "untrusted_installed" for u in rig.updates()), 60
    ), (rig.updates(), rig.log())
    report = next(u for u in rig.updates() if u["reason"] == "untrusted_installed")
    assert (report["sha256"], report["version"]) == (NEW, 2**63 - 1)
    assert rig.serving() == NEW  # the distrusted release keeps serving meanwhile
    rig.deploy(2, [k2], model=DIGITS)  # the operator's next release, under the new key
    deadline = time.monotonic() + 60
    while not any(u["phase"] == "committed" and u["version"] == 2 for u in rig.updates()):
        assert time.monotonic() < deadline, (rig.updates(), rig.log())
        time.sleep(0.05)
    link = rig.agent.state_dir / "models" / "digits" / "active"
    assert link.read_bytes() == DIGITS.read_bytes()
