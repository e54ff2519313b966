"""The inbound workers: commands never wait behind a deployment, nothing is dropped silently.

A real `CommandGate` (device store, replay guard) and real signed commands; the deployment
handler and one command handler block on purpose, standing in for a slow download and a slow
command.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from agent.link.commands import CommandGate
from agent.link.inbound import COMMAND_EVENT, Inbound
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
        self.gate = CommandGate(tmp_path / "state", Keyring((self.key.public,)), DEVICE)
        self.release_deployment = threading.Event()
        self.release_command = threading.Event()
        self.deployments: list[bytes] = []
        self.ran: list[str] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.superseded: list[bytes] = []

        def deployment(data: bytes) -> str:
            self.deployments.append(data)
            self.release_deployment.wait(30)
            return "done"

        def slow() -> None:
            self.ran.append("rollback")
            self.release_command.wait(30)

        self.inbound = Inbound(
            self.gate, deployment,
            {"report-now": lambda: self.ran.append("report-now"), "rollback": slow,
             "restart-source": lambda: self.ran.append("restart-source")},
            queue_size=queue_size, supersede=self._supersede,
            report=lambda kind, detail: self.events.append((kind, detail)),
        )
        self.inbound.start()

    def _supersede(self, data: bytes) -> bool:
        self.superseded.append(data)
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
        h.inbound.offer(Channel.DESIRED, b"deployment-1")
        assert wait(lambda: len(h.deployments) == 1)
        for n in (2, 3, 4):
            h.inbound.offer(Channel.DESIRED, f"deployment-{n}".encode())
        # the running one was asked to give way to a newer one; only the newest runs next
        assert wait(lambda: h.deployments == [b"deployment-1", b"deployment-4"])
        assert h.superseded and h.superseded[-1] in (b"deployment-2", b"deployment-3",
                                                     b"deployment-4")
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
            "malformed", "bad_signature", "replayed"]
        assert len(h.outcomes("done")) == 1
    finally:
        h.close()

