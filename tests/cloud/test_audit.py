"""The audit trail: each state-changing command appends one row; rows cannot be changed."""

from __future__ import annotations

import getpass
import json
import sqlite3

import pytest

from cloud.cli import main
from shared.canonical import canonical_json
from tests.cloud.conftest import DIGITS, CloudEnv, write_config


def test_every_operator_action_is_recorded_with_who_and_what_was_signed(  # type: ignore[no-untyped-def]
    cloud_env: CloudEnv, mosquitto, tmp_path, capsys
) -> None:
    import hashlib

    config = write_config(cloud_env.root, mqtt_port=mosquitto.port)
    cfg = ["--config", str(config)]
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
                "--json",
                *cfg,
            ]
        )
        == 0
    )
    release = json.loads(capsys.readouterr().out)["envelope"]
    assert main(["groups", "add", "lobby", "cam-1", "cam-2", *cfg]) == 0
    assert (
        main(["deploy", "digits@1", "--group", "lobby", "--waves", "1,100%", "--json", *cfg]) == 0
    )
    rollout = json.loads(capsys.readouterr().out.splitlines()[-1])["id"]
    for action in ("pause", "resume", "abort"):
        assert main(["rollout", action, rollout, *cfg]) == 0
    assert main(["command", "cam-1", "report-now", *cfg]) == 0
    assert main(["groups", "remove", "lobby", "cam-2", *cfg]) == 0
    capsys.readouterr()

    assert main(["audit", "--json", *cfg]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["action"], r["target"]) for r in rows] == [
        ("release", "digits@1/x86-gateway"),
        ("group.add", "lobby"),
        ("deploy", f"{rollout}/cam-1"),
        ("deploy", f"{rollout}/cam-2"),
        ("rollout.pause", rollout),
        ("rollout.resume", rollout),
        ("rollout.abort", rollout),
        ("command", "cam-1"),
        ("group.remove", "lobby"),
    ]
    assert {r["actor"] for r in rows} == {getpass.getuser()}
    assert rows[0]["sha256"] == hashlib.sha256(canonical_json(release["signed"])).hexdigest()
    with sqlite3.connect(cloud_env.db) as db:
        stored = dict(db.execute("SELECT device_id, deployment FROM rollout_devices"))
    deployment = json.loads(stored["cam-2"])
    assert rows[3]["sha256"] == hashlib.sha256(canonical_json(deployment["signed"])).hexdigest()
    assert len(rows[7]["sha256"]) == 64 and rows[7]["detail"] == "report-now"
    assert rows[1]["detail"] == "cam-1 cam-2"

    assert main(["audit", *cfg]) == 0
    table = capsys.readouterr().out
    assert table.count("\n") == len(rows) and "rollout.abort" in table


def test_audit_rows_cannot_be_changed_or_deleted(cloud_env: CloudEnv, capsys) -> None:
    cfg = ["--config", str(cloud_env.config)]
    assert main(["groups", "add", "lobby", "cam-1", *cfg]) == 0
    with sqlite3.connect(cloud_env.db) as db:
        assert db.execute("SELECT action, target, detail FROM audit").fetchall() == [
            ("group.add", "lobby", "cam-1")
        ]
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("UPDATE audit SET actor = 'someone-else'")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("DELETE FROM audit")
        assert db.execute("SELECT count(*) FROM audit").fetchone()[0] == 1


def test_audit_since_and_bad_input(cloud_env: CloudEnv, capsys) -> None:
    cfg = ["--config", str(cloud_env.config)]
    assert main(["audit", *cfg]) == 0
    assert capsys.readouterr().out == "no audit entries\n"
    assert main(["groups", "add", "lobby", "cam-1", *cfg]) == 0
    assert main(["audit", "--since", "2999-01-01T00:00:00Z", "--json", *cfg]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == []
    assert main(["audit", "--since", "1h", "--json", *cfg]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1
    for bad in (["--since", "yesterday"], ["--limit", "0"]):
        assert main(["audit", *bad, *cfg]) == 2
        assert capsys.readouterr().err.count("\n") == 1
