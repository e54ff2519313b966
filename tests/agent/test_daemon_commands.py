"""Every command in the contract, through a real broker to a real agent process.

`report-now` and `rollback` have their own tests (test_daemon_inbound, test_daemon_update);
here `restart-source` closes and reopens the source (the source reports `restarting`, then
`up` again) while the loop keeps inferring, and each command's outcome is reported as a
`command` event.
"""

from __future__ import annotations

import json

from agent.link.commands import COMMANDS
from shared.keys import SigningKey
from tests.agent.test_daemon_inbound import PREFIX, publish, signed_command, telemetry


def test_restart_source_reopens_the_source_and_the_loop_keeps_inferring(  # type: ignore[no-untyped-def]
    mosquitto, mqtt_subscriber, agent_process
) -> None:
    assert set(COMMANDS) == {"report-now", "rollback", "restart-source", "capture", "upload"}
    key = SigningKey.generate()
    sub = mqtt_subscriber(mosquitto, [f"{PREFIX}/+"])
    agent = agent_process(mosquitto, [key.public.hex], telemetry_s=3600)
    assert sub.wait_for(
        lambda ms: any(m.topic.endswith("/state") and json.loads(m.payload)["online"] for m in ms),
        30,
    ), agent.log()[-3000:]

    def events() -> list[dict]:  # type: ignore[type-arg]
        return [json.loads(p) for p in sub.payloads("/events")]

    def statuses() -> list[str]:
        return [e["detail"]["status"] for e in events() if e["kind"] == "source"]

    publish(mosquitto, f"{PREFIX}/cmd", signed_command(key, "report-now"))
    assert sub.wait_for(lambda ms: len(telemetry(sub)) >= 1, 20), agent.log()[-3000:]
    before = telemetry(sub)[0]

    publish(mosquitto, f"{PREFIX}/cmd", signed_command(key, "restart-source"))
    assert sub.wait_for(lambda ms: "restarting" in statuses(), 20), (events(), agent.log()[-3000:])
    assert sub.wait_for(
        lambda ms: statuses()[statuses().index("restarting") :][1:2] == ["up"], 20
    ), statuses()
    assert sub.wait_for(
        lambda ms: any(
            e["kind"] == "command"
            and e["detail"]
            == {"outcome": "done", "command": "restart-source", "nonce": e["detail"].get("nonce")}
            for e in events()
        ),
        20,
    ), events()
    assert "not supported" not in agent.log()

    publish(mosquitto, f"{PREFIX}/cmd", signed_command(key, "report-now"))
    assert sub.wait_for(lambda ms: len(telemetry(sub)) >= 2, 20)
    after = telemetry(sub)[1]
    assert after["inferences"] > before["inferences"] > 0  # the loop went on inferring
    assert after["source_status"] == "up"
    assert agent.alive()
    assert agent.terminate() == 0
