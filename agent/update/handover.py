"""Who runs updates on this device: the update lock and the spool.

Whoever runs an `Updater` (the daemon, or `litefleet-agent apply` when no daemon runs) holds
`state_dir/update.lock` (an `flock`, released by the kernel when the process dies, so a crash
never leaves it stale). `apply` tries the lock: if it gets it, it runs the pipeline itself; if
the daemon holds it, `apply` hands the deployment over through the spool and waits:

    spool/<id>.json           {"deployment": "<document text>", "artifact_dirs": ["/dir", ...]}
    spool/<id>.result.json    the `UpdateOutcome` as JSON, written by the daemon

Both files are written atomically (temp file, fsync, rename). The daemon's `Updater.tick()`
takes requests oldest first.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from localio.atomic import write_atomic

__all__ = [
    "MAX_SPOOL_BYTES",
    "SpoolRequest",
    "UpdateLock",
    "submit",
    "take_requests",
    "wait_result",
    "write_result",
]

LOCK_NAME = "update.lock"
SPOOL_DIR = "spool"
MAX_SPOOL_BYTES = 1024 * 1024  # a request bigger than this is not a deployment
MAX_REQUESTS = 16  # requests taken per tick


class UpdateLock:
    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, timeout: float = 0.0) -> bool:
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(0.05)
                continue
            self._fd = fd
            return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


@dataclass(frozen=True)
class SpoolRequest:
    id: str
    deployment: bytes
    artifact_dirs: tuple[Path, ...]


def submit(state_dir: Path, deployment: bytes, artifact_dirs: list[Path]) -> str:
    spool = state_dir / SPOOL_DIR
    spool.mkdir(parents=True, exist_ok=True)
    request_id = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
    body = {
        "deployment": deployment.decode("utf-8"),
        "artifact_dirs": [str(d.resolve()) for d in artifact_dirs],
    }
    write_atomic(spool / f"{request_id}.json", json.dumps(body).encode())
    return request_id


def take_requests(state_dir: Path) -> list[SpoolRequest]:
    """Pending requests, oldest first; unreadable ones are answered and dropped."""
    spool = state_dir / SPOOL_DIR
    if not spool.is_dir():
        return []
    requests = []
    names = sorted(p for p in spool.glob("*.json") if not p.name.endswith(".result.json"))
    for path in names[:MAX_REQUESTS]:
        request_id = path.name.removesuffix(".json")
        try:
            if path.stat().st_size > MAX_SPOOL_BYTES:
                raise ValueError("request too large")
            body = json.loads(path.read_bytes())
            requests.append(
                SpoolRequest(
                    request_id,
                    str(body["deployment"]).encode("utf-8"),
                    tuple(Path(d) for d in body.get("artifact_dirs", [])),
                )
            )
        except (OSError, ValueError, KeyError, TypeError) as e:
            write_result(
                state_dir,
                request_id,
                {
                    "phase": "rejected",
                    "reason": "malformed",
                    "detail": f"unreadable spool request: {e}",
                },
            )
        path.unlink(missing_ok=True)
    return requests


def write_result(state_dir: Path, request_id: str, outcome: Mapping[str, object]) -> None:
    write_atomic(state_dir / SPOOL_DIR / f"{request_id}.result.json", json.dumps(outcome).encode())


def wait_result(state_dir: Path, request_id: str, timeout: float) -> dict[str, object] | None:
    path = state_dir / SPOOL_DIR / f"{request_id}.result.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            result: dict[str, object] = json.loads(path.read_bytes())
            path.unlink(missing_ok=True)
            return result
        time.sleep(0.1)
    return None
