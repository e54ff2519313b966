"""Acceptance: a real agent serving the digits model on a camera (a looping video) measures
drift against the model's reference profile: inverted digits go over the threshold (telemetry
and one `drift` event) well within two minutes, plain digits stay under it."""

from __future__ import annotations

import json
from pathlib import Path

from shared.keys import SigningKey
from tests.agent.drift_helpers import digits_reference, digits_video, looping_agent

PREFIX = "litefleet/v1/devices"


def _drift(payload: bytes) -> dict | None:  # type: ignore[type-arg]
    body = json.loads(payload)
    return body.get("drift")


def test_inverted_digits_drift_over_threshold_plain_digits_stay_under(  # type: ignore[no-untyped-def]
    tmp_path: Path, mosquitto, mqtt_subscriber, agent_process
) -> None:
    reference = digits_reference(tmp_path / "compressed")
    key = SigningKey.generate().public.hex
    sub = mqtt_subscriber(mosquitto, [f"{PREFIX}/+/telemetry", f"{PREFIX}/+/events"])
    agents = {}
    for name, inverted in (("plain", False), ("inverted", True)):
        video = digits_video(tmp_path / f"{name}.avi", inverted=inverted)
        agents[name] = looping_agent(
            agent_process,
            mosquitto,
            [key],
            device_id=name,
            telemetry_s=1.0,
            source=f"file://{video}?fps=20",
            extra_toml=f'[drift]\nreference = "{reference}"\nsample_hz = 10\n',
        )

    def drift_of(device: str) -> list[dict]:  # type: ignore[type-arg]
        return [d for p in sub.payloads(f"/{device}/telemetry") if (d := _drift(p))]

    # the inverted camera reports drift over the release's threshold (the give-up bound is
    # the two minutes)
    assert sub.wait_for(
        lambda _: any(d["score"] > d["threshold"] for d in drift_of("inverted")), timeout=120
    ), agents["inverted"].log()[-3000:]
    # the plain camera is measured too (positive control: its window filled), and stays under
    assert sub.wait_for(
        lambda _: any(d["samples"] >= 200 for d in drift_of("plain")), timeout=120
    ), agents["plain"].log()[-3000:]
    plain = drift_of("plain")
    assert all(d["score"] < d["threshold"] for d in plain), plain
    worst = [d for d in drift_of("inverted") if d["score"] > d["threshold"]][-1]
    assert worst["feature"].startswith(("input.", "output."))
    # one drift event from the inverted camera, none from the plain one
    assert sub.wait_for(
        lambda _: any(json.loads(p)["kind"] == "drift" for p in sub.payloads("/inverted/events")),
        timeout=30,
    )
    events = [json.loads(p) for p in sub.payloads("/inverted/events")]
    assert sum(e["kind"] == "drift" for e in events) == 1
    assert not any(json.loads(p)["kind"] == "drift" for p in sub.payloads("/plain/events"))
