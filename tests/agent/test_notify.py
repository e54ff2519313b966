"""sd_notify datagrams reach a socket the test owns, in order; without $NOTIFY_SOCKET nothing is sent."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.notify import Notifier


@pytest.fixture
def listener() -> Iterator[tuple[socket.socket, str]]:
    # AF_UNIX paths are limited to ~108 bytes: use a short temporary folder, not tmp_path.
    folder = Path(tempfile.mkdtemp(prefix="lfn-"))
    path = folder / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    yield sock, str(path)
    sock.close()
    path.unlink(missing_ok=True)
    folder.rmdir()


def _recv(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def test_messages_arrive_in_order(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    n = Notifier.from_env({"NOTIFY_SOCKET": path})
    assert n.enabled
    n.ready()
    n.status("model digits v3 (ab12cd34), 29.8 fps")
    n.watchdog()
    n.stopping()
    got = [_recv(sock) for _ in range(4)]
    assert got == [
        "READY=1",
        "STATUS=model digits v3 (ab12cd34), 29.8 fps",
        "WATCHDOG=1",
        "STOPPING=1",
    ]
    n.close()


def test_status_is_one_bounded_line(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    n = Notifier(path)
    n.status("line one\nline two\n" + "x" * 1000)
    got = _recv(sock)
    assert got.startswith("STATUS=line one line two x")
    assert "\n" not in got
    assert len(got) == len("STATUS=") + 200


def test_abstract_namespace_socket() -> None:
    name = f"litefleet-test-{os.getpid()}-{id(object())}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        Notifier.from_env({"NOTIFY_SOCKET": "@" + name}).ready()
        assert _recv(sock) == "READY=1"
    finally:
        sock.close()


def test_without_notify_socket_everything_is_a_noop() -> None:
    n = Notifier.from_env({"WATCHDOG_USEC": "10000000"})
    assert not n.enabled
    assert n.watchdog_interval_s is None
    n.ready()
    n.watchdog()
    n.status("x")
    n.stopping()  # no socket, no error


def test_missing_listener_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    n = Notifier(str(tmp_path / "gone.sock"))
    n.ready()
    n.watchdog()
    warnings = [r for r in caplog.records if "sd_notify" in r.getMessage()]
    assert len(warnings) == 1  # one warning per failure streak, not one per ping


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "10000000"}, 5.0),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}, 1.5),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": "/run/x.sock", **env})
    assert n.watchdog_interval_s == expected
