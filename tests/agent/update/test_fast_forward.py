"""Recovering from a fast-forward attack (TUF's term) once the stolen key is rotated out.

A thief holding release key k1 signs a release at version 2^63-1; the device installs it (k1
is trusted then) and from then on refuses every legitimate release as `version_not_newer`.
Once a root signed by the offline root key drops k1, the installed release is no longer
trusted: the device reports it (`untrusted_installed`), keeps serving it, and its version stops
holding releases back, so the operator's next release under the new key k2 installs even at
version 2. Only releases that verify under the current root install: k1's are refused.

Each test drives the update side of an agent (`Updater`, its trust store in the state dir) with
documents signed as the cloud signs them, and asserts the outcome, the reports in the outbox,
the model links and bytes on disk; each refusal has its positive control.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agent.cli import main as agent_main
from agent.update.modelstore import ACTIVE, PREVIOUS, ModelStore
from agent.update.trust import TrustStore
from shared.keys import SigningKey

from .conftest import DIGITS, DIGITS_FT, Bench, load, sha, write_config
from .test_trust_store import chain, make_root

INT64_MAX = 2**63 - 1
THIEF = DIGITS_FT.read_bytes()  # what the thief installs, at version 2^63-1
LEGIT = DIGITS.read_bytes()  # the operator's release after the rotation


class Fleet:
    """One device trusting k1 for releases and an offline root key, and the operator's keys."""

    def __init__(self, tmp: Path, device_factory: Any) -> None:
        self.k1, self.k2, self.offline = (SigningKey.generate() for _ in range(3))
        self.path = write_config(tmp, [self.k1])
        self.config = load(self.path)
        self.bench = Bench(tmp / "artifacts", [self.k1])
        self.factory = device_factory
        self.roots = [make_root(2, [self.k1], [self.offline], [self.k1, self.offline])]
        self.trust(self.roots[0])  # the root key moved offline (security.md, "First")
        self.device = device_factory(self.path)
        self.device.updater.recover()

    def trust(self, *envelopes: dict[str, Any]) -> None:
        TrustStore(self.config.trust, self.config.state_dir).offer(chain(*envelopes))

    def rotate(self, release_keys: list[SigningKey]) -> None:
        """The next root with these release keys, signed by the offline root key only."""
        version = len(self.roots) + 2
        self.roots.append(make_root(version, release_keys, [self.offline], [self.offline]))
        self.trust(*self.roots)

    def deploy(self, model: bytes, version: int, key: SigningKey, rollout: str) -> Any:
        release = self.bench.release(model, version, keys=[key])
        data = self.bench.deployment(release, keys=[key], rollout=rollout)
        return self.device.updater.handle_deployment(data)

    def links(self) -> tuple[str | None, str | None]:
        store = ModelStore(self.config.state_dir, "digits")
        return store.link(ACTIVE), store.link(PREVIOUS)

    def active_bytes(self) -> bytes:
        return (self.config.state_dir / "models" / "digits" / ACTIVE).read_bytes()

    def untrusted_reports(self) -> list[Any]:
        return [s for s in self.device.statuses() if s.reason == "untrusted_installed"]

    def install_thiefs_release(self) -> None:
        outcome = self.deploy(THIEF, INT64_MAX, self.k1, "stolen")
        assert (outcome.phase, outcome.version) == ("committed", INT64_MAX), outcome
        assert self.links()[0] == sha(THIEF)


def test_once_the_stolen_key_is_rotated_out_a_lower_legitimate_version_installs(
    tmp_path, device_factory
):
    fleet = Fleet(tmp_path, device_factory)
    fleet.install_thiefs_release()
    fleet.rotate([fleet.k2])  # root 3: k1 out, k2 in
    outcome = fleet.deploy(LEGIT, 2, fleet.k2, "recovery")
    assert (outcome.phase, outcome.reason, outcome.version) == ("committed", "", 2), outcome
    assert fleet.links() == (sha(LEGIT), sha(THIEF))
    assert fleet.active_bytes() == LEGIT
    assert fleet.device.updater.active().version == 2
    (report,) = fleet.untrusted_reports()  # said once, before the recovery release
    assert (report.phase, report.version, report.sha256, report.rollout_id) == (
        "rejected",
        INT64_MAX,
        sha(THIEF),
        "",
    )
    assert f"signed by {fleet.k1.keyid[:16]}, revoked by root version 3" in report.detail
    assert "keeps serving" in report.detail
    # the thief's key stays revoked, whatever version it signs
    for version in (3, INT64_MAX):
        refused = fleet.deploy(THIEF, version, fleet.k1, f"again-{version}")
        assert (refused.phase, refused.reason) == ("rejected", "bad_signature"), refused
        assert f"revoked key {fleet.k1.keyid[:16]}" in refused.detail
    assert fleet.links()[0] == sha(LEGIT)
    # the trusted version 2 is the floor again: rollback protection is back, across a restart
    fleet.device.close()
    fleet.device = fleet.factory(fleet.path)
    assert fleet.device.updater.recover().read_bytes() == LEGIT
    older = fleet.deploy(THIEF, 1, fleet.k2, "older")
    assert (older.phase, older.reason) == ("rejected", "version_not_newer"), older
    newer = fleet.deploy(THIEF, 3, fleet.k2, "newer")  # positive control
    assert (newer.phase, newer.version) == ("committed", 3), newer


def test_while_the_thiefs_key_is_trusted_the_same_release_is_refused_as_not_newer(
    tmp_path, device_factory
):
    fleet = Fleet(tmp_path, device_factory)
    fleet.install_thiefs_release()
    fleet.rotate([fleet.k1, fleet.k2])  # root 3 adds k2 but keeps k1: nothing is revoked
    release = fleet.bench.release(LEGIT, 2, keys=[fleet.k2])
    data = fleet.bench.deployment(release, keys=[fleet.k2], rollout="recovery")
    refused = fleet.device.updater.handle_deployment(data)
    assert (refused.phase, refused.reason) == ("rejected", "version_not_newer"), refused
    assert f"not newer than installed {INT64_MAX}" in refused.detail
    assert fleet.untrusted_reports() == []
    assert fleet.links()[0] == sha(THIEF)
    fleet.rotate([fleet.k2])  # positive control: root 4 drops k1, the very same document
    installed = fleet.device.updater.handle_deployment(data)
    assert (installed.phase, installed.version) == ("committed", 2), installed
    assert fleet.active_bytes() == LEGIT


def status_of(fleet: Fleet, capsys: Any) -> tuple[str, dict[str, Any]]:
    """`litefleet-agent status` of the fleet's device: its text and its JSON."""
    assert agent_main(["status", "--config", str(fleet.path)]) == 0
    text = capsys.readouterr().out
    assert agent_main(["status", "--config", str(fleet.path), "--json"]) == 0
    return text, json.loads(capsys.readouterr().out)


def test_the_untrusted_release_keeps_serving_and_is_reported_once(tmp_path, device_factory, capsys):
    fleet = Fleet(tmp_path, device_factory)
    fleet.install_thiefs_release()
    fleet.device.updater.tick()
    assert fleet.untrusted_reports() == []  # control: k1 is still trusted
    text, report_json = status_of(fleet, capsys)
    assert "no longer trusted" not in text and "root v2:" in text
    assert report_json["trust"]["installed_distrusted"] is False
    fleet.rotate([fleet.k2])  # written by another process (`apply`): the tick notices
    fleet.device.updater.tick()
    (report,) = fleet.untrusted_reports()
    assert (report.sha256, report.version) == (sha(THIEF), INT64_MAX)
    text, report_json = status_of(fleet, capsys)
    waiting = [line.strip() for line in text.splitlines() if "no longer trusted" in line]
    assert waiting == [
        f"installed release digits@{INT64_MAX} is no longer trusted by root v3: "
        "waiting for a trusted release"
    ]
    assert report_json["trust"]["installed_distrusted"] is True
    assert report_json["trust"]["root_version"] == 3
    fleet.device.close()
    fleet.device = fleet.factory(fleet.path)  # a restart: nothing rolled back, not re-reported
    assert fleet.device.updater.recover().read_bytes() == THIEF
    fleet.device.updater.tick()
    assert fleet.device.updater.active().version == INT64_MAX
    assert fleet.untrusted_reports() == [report]  # the outbox holds the first report only
    assert fleet.links()[0] == sha(THIEF)


def test_a_trusted_previous_release_is_the_floor_when_the_active_one_is_distrusted(
    tmp_path, device_factory
):
    operators, thiefs = DIGITS_FT.read_bytes(), DIGITS.read_bytes()
    fleet = Fleet(tmp_path, device_factory)
    fleet.rotate([fleet.k1, fleet.k2])
    installed = fleet.deploy(operators, 5, fleet.k2, "legit-5")
    assert installed.phase == "committed", installed
    stolen = fleet.deploy(thiefs, INT64_MAX, fleet.k1, "stolen")
    assert stolen.phase == "committed", stolen
    assert fleet.links() == (sha(thiefs), sha(operators))
    fleet.rotate([fleet.k2])
    fleet.device.updater.tick()
    (report,) = fleet.untrusted_reports()  # only the active one: the previous is trusted
    assert report.sha256 == sha(thiefs)
    below = fleet.deploy(operators, 4, fleet.k2, "legit-4")
    assert (below.phase, below.reason) == ("rejected", "version_not_newer"), below
    assert "not newer than installed 5" in below.detail
    above = fleet.deploy(operators, 6, fleet.k2, "legit-6")  # positive control
    assert (above.phase, above.version) == ("committed", 6), above
    assert fleet.active_bytes() == operators


def test_a_model_installed_before_signers_were_recorded_is_judged_by_its_journal(
    tmp_path, device_factory
):
    fleet = Fleet(tmp_path, device_factory)
    fleet.install_thiefs_release()
    db = fleet.device.db
    with db.conn:  # as an agent from before the signers column left it
        db.execute("UPDATE update_models SET signers = NULL")
    fleet.rotate([fleet.k2])
    outcome = fleet.deploy(LEGIT, 2, fleet.k2, "recovery")
    assert (outcome.phase, outcome.version) == ("committed", 2), outcome
    (report,) = fleet.untrusted_reports()
    assert "revoked" not in report.detail and "not signed by 1" in report.detail


def test_with_neither_signers_nor_journal_on_record_the_floor_stays(tmp_path, device_factory):
    fleet = Fleet(tmp_path, device_factory)
    fleet.install_thiefs_release()
    db = fleet.device.db
    with db.conn:  # the installing attempt trimmed from the journal, no signers kept
        db.execute("UPDATE update_models SET signers = NULL")
        db.execute("UPDATE update_journal SET deployment = ''")
    fleet.rotate([fleet.k2])
    refused = fleet.deploy(LEGIT, 2, fleet.k2, "recovery")
    assert (refused.phase, refused.reason) == ("rejected", "version_not_newer"), refused
    assert fleet.untrusted_reports() == []
    with db.conn:  # positive control: with the signers on record, the same document installs
        db.execute(
            "UPDATE update_models SET signers = ? WHERE sha256 = ?",
            [f'["{fleet.k1.keyid}"]', sha(THIEF)],
        )
    fleet.device.close()
    fleet.device = fleet.factory(fleet.path)
    fleet.device.updater.recover()
    installed = fleet.deploy(LEGIT, 2, fleet.k2, "recovery")
    assert (installed.phase, installed.version) == ("committed", 2), installed
