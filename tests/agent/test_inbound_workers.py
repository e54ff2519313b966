"""The inbound workers: commands never wait behind a deployment, nothing is dropped silently.

A real `CommandGate` (device store, replay guard) and real signed commands; the deployment
handler and one command handler block on purpose, standing in for a slow download and a slow
command.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.link.commands import CommandGate
from agent.link.inbound import COMMAND_EVENT, Inbound
from agent.store import open_store
from shared.errors import Rejected
from shared.keys import Keyring, SigningKey
from shared.topics import Channel
from tests.agent.test_daemon_inbound import DEVICE, signed_command


def wait(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


class Harness:
    def __init__(self, tmp_path: Path, queue_size: int = 4) -> None:
        self.key = SigningKey.generate()
        (tmp_path / "state").mkdir()
        self.gate = CommandGate(open_store(tmp_path / "state"), Keyring((self.key.public,)), DEVICE)
        self.release_deployment = threading.Event()
        self.release_command = threading.Event()
        self.deployments: list[bytes] = []
        self.ran: list[str] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.superseded: list[bytes] = []
        self.refused: list[Rejected] = []

        self.current: bytes | None = None
        self.hold = False  # a supersede is recorded, the running deployment released by the test

        def deployment(data: bytes) -> str:
            self.deployments.append(data)
            self.current = data
            self.release_deployment.wait(30)
            self.current = None
            return "done"

        def slow() -> None:
            self.ran.append("rollback")
            self.release_command.wait(30)

        self.inbound = Inbound(
            self.gate,
            deployment,
            {
                "report-now": lambda: self.ran.append("report-now"),
                "rollback": slow,
                "restart-source": lambda: self.ran.append("restart-source"),
            },
            queue_size=queue_size,
            supersede=self._supersede,
            report=lambda kind, detail: self.events.append((kind, detail)),
            on_refused=self.refused.append,
        )
        self.inbound.start()

    def _supersede(self, data: bytes) -> bool:
        """Like the updater's: a running deployment other than `data` gives way."""
        if self.current is None or self.current == data:
            return False
        self.superseded.append(data)
        if not self.hold:
            self.release_deployment.set()  # what cancelling the download does for the worker
        return True

    def outcomes(self, outcome: str) -> list[dict[str, Any]]:
        return [d for k, d in self.events if k == COMMAND_EVENT and d["outcome"] == outcome]

    def close(self) -> None:
        self.release_deployment.set()
        self.release_command.set()
        self.inbound.stop()
        self.gate.close()


def test_a_command_runs_while_a_deployment_is_being_handled(tmp_path) -> None:
    h = Harness(tmp_path)
    try:
        h.inbound.offer(Channel.DESIRED, b"deployment-1")
        assert wait(lambda: h.deployments == [b"deployment-1"])
        h.inbound.offer(Channel.CMD, signed_command(h.key, "report-now"))
        assert wait(lambda: "report-now" in h.ran)  # the deployment still runs
        assert not h.release_deployment.is_set()
        assert wait(lambda: len(h.outcomes("done")) == 1)
        assert h.outcomes("done")[0]["command"] == "report-now"
    finally:
        h.close()


def test_desired_keeps_the_newest_and_a_newer_one_asks_to_supersede(tmp_path) -> None:
    h = Harness(tmp_path)
    try:
        h.hold = True
        h.inbound.offer(Channel.DESIRED, b"deployment-1")
        assert wait(lambda: len(h.deployments) == 1)
        for n in (2, 3, 4):
            h.inbound.offer(Channel.DESIRED, f"deployment-{n}".encode())
        # the running one was asked to give way to a newer one ...
        assert wait(lambda: len(h.superseded) >= 1)
        assert set(h.superseded) <= {b"deployment-2", b"deployment-3", b"deployment-4"}
        h.release_deployment.set()
        # ... and only the newest runs next
        assert wait(lambda: h.deployments == [b"deployment-1", b"deployment-4"])
        assert h.inbound.replaced == 2  # deployment-2 and -3 were replaced, and counted
    finally:
        h.close()


def test_a_full_command_queue_drops_are_counted_logged_and_reported(tmp_path, caplog) -> None:
    h = Harness(tmp_path, queue_size=2)
    try:
        h.inbound.offer(Channel.CMD, signed_command(h.key, "rollback"))  # blocks the worker
        assert wait(lambda: h.ran == ["rollback"])
        for _ in range(5):
            h.inbound.offer(Channel.CMD, signed_command(h.key, "report-now"))
        assert h.inbound.dropped == 3  # two fit in the queue
        assert caplog.text.count("dropped a cmd message: the command queue is full") == 3
        assert [d["reason"] for d in h.outcomes("refused")] == ["queue_full"] * 3
        h.release_command.set()
        assert wait(lambda: h.ran.count("report-now") == 2)  # the queued ones still run
    finally:
        h.close()


def test_refused_commands_are_reported_with_their_reason(tmp_path) -> None:
    h = Harness(tmp_path)
    try:
        nonce = "n" * 16
        h.inbound.offer(Channel.CMD, b"\xff not json")
        h.inbound.offer(Channel.CMD, signed_command(SigningKey.generate()))
        h.inbound.offer(Channel.CMD, signed_command(h.key, nonce=nonce))
        h.inbound.offer(Channel.CMD, signed_command(h.key, nonce=nonce))
        assert wait(lambda: len(h.outcomes("refused")) == 3)
        assert [d["reason"] for d in h.outcomes("refused")] == [
            "malformed",
            "bad_signature",
            "replayed",
        ]
        assert len(h.outcomes("done")) == 1
    finally:
        h.close()


# -- properties (hypothesis' settings profile; `make fuzz` may pick a larger one) ---------------


@pytest.fixture
def harness(tmp_path) -> Iterator[Harness]:
    h = Harness(tmp_path, queue_size=64)
    yield h
    h.close()


def _mutate(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for position, value in edits:
        out[position % len(out)] = value
    return bytes(out)


def _offer_and_wait(h: Harness, payload: bytes) -> dict[str, Any]:
    before = len(h.events)
    h.inbound.offer(Channel.CMD, payload)  # raises nothing into paho's thread
    assert wait(lambda: len(h.events) > before), "every command gets a reported outcome"
    kind, detail = h.events[before]
    assert kind == COMMAND_EVENT
    return detail


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    payload=st.one_of(
        st.binary(max_size=4096),
        st.sampled_from(
            [
                b"[" * 50_000,
                b'{"signed": ' + b"7" * 5000 + b"}",
                b'{"signed": {"schema": "litefleet.cmd/1", "nonce": "\\udc80"}}',
            ]
        ),
    )
)
def test_random_cmd_payloads_are_refused_and_reported(harness, payload) -> None:
    try:
        harness.gate.admit(payload, datetime.now(UTC))
        admitted = True
    except Rejected:  # the only error type that may leave the verify step
        admitted = False
    if admitted:
        return
    detail = _offer_and_wait(harness, payload)
    assert detail["outcome"] == "refused" and detail["reason"], detail
    assert harness.inbound.dropped >= 1


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    edits=st.lists(st.tuples(st.integers(0, 2**12), st.integers(0, 255)), min_size=1, max_size=6)
)
def test_mutated_signed_commands_are_refused_or_run_and_always_reported(harness, edits) -> None:
    signed = signed_command(harness.key, "report-now")
    detail = _offer_and_wait(harness, _mutate(signed, edits))
    assert detail["outcome"] in ("refused", "done"), detail
    if detail["outcome"] == "refused":
        assert detail["reason"] != "internal_error", detail
    # the worker still serves: a fresh valid command runs
    ran = harness.ran.count("report-now")
    assert _offer_and_wait(harness, signed_command(harness.key, "report-now"))["outcome"] == "done"
    assert harness.ran.count("report-now") == ran + 1


def test_an_oversized_desired_message_is_refused_through_the_updater(tmp_path) -> None:
    h = Harness(tmp_path)
    try:
        h.inbound.offer(Channel.DESIRED, b"{" + b" " * (2 * 1024 * 1024) + b"}")
        assert wait(lambda: len(h.refused) == 1)
        assert h.refused[0].reason == "payload_too_large"
        assert h.deployments == [] and h.inbound.dropped == 1
    finally:
        h.close()
