"""sd_notify: tell systemd (a `Type=notify` unit) that the agent is ready, alive, or stopping.

The protocol is one AF_UNIX datagram of `KEY=value` lines sent to the socket named in
`$NOTIFY_SOCKET` (a path, or an abstract-namespace name when it starts with '@'). Without that
variable (a terminal, a test, a container without systemd) every method is a no-op. A failed
send is logged and never raised: the agent keeps serving whether or not systemd listens.

`watchdog_interval_s` is half of `$WATCHDOG_USEC` (systemd's advice) when the watchdog is on for
this process (`$WATCHDOG_PID` unset or equal to our pid); the daemon pings that often, and only
while the inference loop's heartbeat is fresh, so a stuck loop gets the service restarted.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping

__all__ = ["Notifier"]

log = logging.getLogger(__name__)

_STATUS_MAX_CHARS = 200  # systemctl status shows one line; keep datagrams small


class Notifier:
    """Sends sd_notify messages to `address`, or does nothing when `address` is None."""

    def __init__(self, address: str | None, watchdog_interval_s: float | None = None) -> None:
        self.address = address
        self.watchdog_interval_s = watchdog_interval_s if address else None
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        return cls(address, _watchdog_interval(env))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def ready(self) -> None:
        self._send("READY=1")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def status(self, text: str) -> None:
        line = " ".join(text.split())[:_STATUS_MAX_CHARS]
        self._send(f"STATUS={line}")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def _send(self, message: str) -> None:
        if self.address is None:
            return
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    self._sock.setblocking(False)
                self._sock.sendto(message.encode("utf-8"), target)
            except OSError as e:
                # Log once per failure streak: a missing listener must not flood the journal.
                if not self._warned:
                    log.warning("sd_notify to %s failed: %s", self.address, e)
                    self._warned = True
                return
            self._warned = False


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not an integer", usec)
        return None
    if value <= 0:
        return None
    return value / 2 / 1_000_000
