"""Operator actions through the API on a real broker: a signed command arrives, a deployment to
a group becomes a rollout that pauses, resumes and aborts, each in the audit trail by name."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from agent.link.commands import verify_command
from cloud.audit import entries
from cloud.cli import main
from cloud.store import open_store
from shared.keys import Keyring
from shared.topics import Channel, topic
from tests.cloud.conftest import DIGITS, CloudEnv, write_config
from tests.cloud.web.conftest import start_dashboard


def test_command_deploy_pause_resume_abort_through_the_api(  # type: ignore[no-untyped-def]
    cloud_env: CloudEnv, mosquitto, mqtt_subscriber, capsys
) -> None:
    config = write_config(cloud_env.root, mqtt_port=mosquitto.port)
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
                "--config",
                str(config),
            ]
        )
        == 0
    )
    assert main(["groups", "add", "lab", "cam-1", "cam-2", "--config", str(config)]) == 0
    sub = mqtt_subscriber(mosquitto, [topic("cam-1", Channel.CMD), topic("cam-1", Channel.DESIRED)])
    board = start_dashboard(config)
    try:
        with board.client(board.tokens["operator"]) as api:
            r = api.post("/api/v1/devices/cam-1/commands/report-now")
            assert r.status_code == 200 and r.json() == {"result": "sent report-now to cam-1"}
            assert sub.wait_for(lambda ms: any(m.topic.endswith("/cmd") for m in ms))
            payload = next(m.payload for m in sub.snapshot() if m.topic.endswith("/cmd"))
            command = verify_command(
                payload, Keyring((cloud_env.key.public,)), "cam-1", datetime.now(UTC)
            )
            assert command.command == "report-now"

            r = api.post(
                "/api/v1/deployments",
                json={"name": "digits", "version": 1, "group": "lab", "waves": "1,100%"},
            )
            assert r.status_code == 200, r.text
            rid = r.json()["rollout_id"]
            rollout = api.get(f"/api/v1/rollouts/{rid}").json()
            assert (rollout["state"], rollout["devices"], rollout["waiting"]) == ("running", 2, 2)
            assert [w["total"] for w in rollout["wave_progress"]] == [1, 1]
            assert [w["cumulative"] for w in rollout["wave_progress"]] == [1, 2]
            listed = api.get("/api/v1/rollouts").json()
            assert [(r["id"], r["wave_count"]) for r in listed] == [(rid, 2)]
            refused = api.post(
                "/api/v1/deployments", json={"name": "digits", "version": 9, "group": "lab"}
            )
            assert refused.status_code == 404 and "no release digits@9" in refused.text

            assert (
                api.post(f"/api/v1/rollouts/{rid}/pause").json()["result"]
                == f"rollout {rid}: paused"
            )
            again = api.post(f"/api/v1/rollouts/{rid}/pause")
            assert again.status_code == 409 and "is paused, not running" in again.text
            assert api.post(f"/api/v1/rollouts/{rid}/resume").status_code == 200
            # a deployment already out is cleared (retained, empty) by the abort
            db = open_store(board.config.store.db)
            try:
                deployment = db.execute(
                    "SELECT deployment FROM rollout_devices WHERE rollout_id = ? AND device_id "
                    "= 'cam-1'",
                    [rid],
                ).fetchone()[0]
                db.execute(
                    "UPDATE rollout_devices SET status = 'pending' WHERE "
                    "rollout_id = ? AND device_id = 'cam-1'",
                    [rid],
                )
            finally:
                db.close()
            assert json.loads(deployment)["signed"]["device_id"] == "cam-1"
            assert api.post(f"/api/v1/rollouts/{rid}/abort").status_code == 200
            assert sub.wait_for(
                lambda ms: any(m.topic.endswith("/desired") and m.payload == b"" for m in ms)
            )
            assert api.get(f"/api/v1/rollouts/{rid}").json()["state"] == "aborted"
    finally:
        board.server.stop()
    db = open_store(board.config.store.db)
    try:
        trail = [(e.actor, e.action, e.target) for e in entries(db) if e.actor == "op-bot"]
    finally:
        db.close()
    assert trail == [
        ("op-bot", "command", "cam-1"),
        ("op-bot", "deploy", f"{rid}/cam-1"),
        ("op-bot", "deploy", f"{rid}/cam-2"),
        ("op-bot", "rollout.pause", rid),
        ("op-bot", "rollout.resume", rid),
        ("op-bot", "rollout.abort", rid),
    ]
