"""The real agent process talks sd_notify to a socket the test owns, as systemd would see it:
READY=1 once the model runs, WATCHDOG=1 at half of $WATCHDOG_USEC while the loop is healthy,
no more WATCHDOG=1 once the inference thread is stuck, STOPPING=1 on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "examples" / "models" / "digits.tflite"
WATCHDOG_USEC = 1_000_000  # the agent pings every 0.5 s
STALE_S = 10.0  # agent.daemon.HEARTBEAT_STALE_S: how old a heartbeat may get before pings stop


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    folder = Path(tempfile.mkdtemp(prefix="lfn-"))  # AF_UNIX paths must stay short
    path = folder / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    yield sock, str(path)
    sock.close()
    path.unlink(missing_ok=True)
    folder.rmdir()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_agent(tmp_path: Path, notify_path: str, stall_after: int | None) -> subprocess.Popen[str]:
    config = tmp_path / "agent.toml"
    # The broker is not the point here: nothing listens on the port and the agent keeps
    # retrying while it serves the model, as it does on a device whose link is down.
    config.write_text(f"""\
device_id = "cam-01"
profile = "x86-gateway"
state_dir = "{tmp_path / "state"}"
log_format = "json"
[mqtt]
port = {free_port()}
[model]
name = "digits"
initial = "{MODEL}"
[source]
uri = "synthetic:image?fps=20"
[trust]
keys = ["{"ab" * 32}"]
[telemetry]
heartbeat_s = 1
""")
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "INVOCATION_ID", "JOURNAL_STREAM")
    }
    env |= {"NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    if stall_after is not None:
        env["LITEFLEET_TEST_STALL_AFTER_FRAMES"] = str(stall_after)
    with (tmp_path / "agent.log").open("w") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
        )


class Received:
    """(monotonic time, message) for every datagram, read until a deadline."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.messages: list[tuple[float, str]] = []

    def until(self, done: object, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not (callable(done) and done()):
            self.sock.settimeout(max(0.05, min(0.5, deadline - time.monotonic())))
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def times(self, prefix: str) -> list[float]:
        return [t for t, m in self.messages if m.startswith(prefix)]


def wait_ready(proc: subprocess.Popen[str], received: Received, log: Path) -> float:
    received.until(lambda: bool(received.times("READY=1")) or proc.poll() is not None, 120)
    assert received.times("READY=1"), log.read_text()[-3000:]
    return received.times("READY=1")[0]


def stop(proc: subprocess.Popen[str], received: Received) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        received.until(lambda: bool(received.times("STOPPING=1")), 30)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def test_ready_then_regular_watchdog_then_stopping(
    tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    proc = start_agent(tmp_path, path, stall_after=None)
    received = Received(sock)
    try:
        ready = wait_ready(proc, received, tmp_path / "agent.log")

        # healthy for longer than the staleness window: the pings go on past it (a stuck
        # loop's stop within it: the next test), whatever the machine's load
        def pinged_after_staleness() -> bool:
            return any(t > ready + STALE_S + 1 for t in received.times("WATCHDOG=1"))

        received.until(pinged_after_staleness, STALE_S + 60)
        assert pinged_after_staleness(), "the pings stopped on a healthy loop"
        pings = [t for t in received.times("WATCHDOG=1") if t > ready]
        assert len(pings) >= 3  # a regular ping, not a single late one
        assert any(m.startswith("STATUS=model digits v0") for _, m in received.messages)
    finally:
        code = stop(proc, received)
    assert received.times("STOPPING=1"), "no STOPPING=1 on SIGTERM"
    assert code == 0


def test_stalled_loop_stops_the_watchdog(
    tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    proc = start_agent(tmp_path, path, stall_after=40)  # about 2 s of frames at 20 fps
    received = Received(sock)
    try:
        wait_ready(proc, received, tmp_path / "agent.log")

        def quiet_for(seconds: float) -> bool:
            pings = received.times("WATCHDOG=1")
            return bool(pings) and time.monotonic() - pings[-1] > seconds

        received.until(lambda: quiet_for(4.0), STALE_S + 30)
        assert received.times("WATCHDOG=1"), "the watchdog never pinged"
        assert quiet_for(4.0), "the watchdog kept pinging a stuck loop"
        assert proc.poll() is None  # the process lives on: systemd is the one to restart it
        log = (tmp_path / "agent.log").read_text()
        assert "the inference thread stalls now" in log
        assert "not pinging the watchdog" in log
    finally:
        stop(proc, received)
