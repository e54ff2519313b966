"""Who is asking: session cookies, API tokens, CSRF tokens and the login rate limit.

A browser logs in with a password and gets a session cookie: signed (itsdangerous, with a
secret kept beside the store), HttpOnly, SameSite=Strict, valid `session_max_age_s`. The
cookie carries the user name and a per-session CSRF token; every state-changing form posts the
token back (`csrf` field, or the `X-CSRF-Token` header for htmx and scripts). The API takes
`Authorization: Bearer <token>` instead, which no browser sends on its own, so it needs no
CSRF token. The user's role is read from the store at each request: a removed user or a
changed role takes effect at once.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from itsdangerous import BadSignature, URLSafeTimedSerializer

from cloud.web.accounts import User

__all__ = ["LoginLimiter", "Principal", "Sessions", "load_secret"]

log = logging.getLogger(__name__)

COOKIE = "litefleet_session"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True)
class Principal:
    user: User
    csrf: str  # "" for a token: nothing to protect, no cookie involved
    via_cookie: bool

    def csrf_ok(self, presented: str | None) -> bool:
        if not self.via_cookie:
            return True
        return bool(presented) and hmac.compare_digest(self.csrf, presented or "")


def load_secret(path: Path) -> bytes:
    """The cookie-signing secret at `path`, created (0600) on first use."""
    try:
        data = path.read_bytes().strip()
        if len(data) >= 32:
            return data
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(32).encode()
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secret + b"\n")
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)  # a second process racing us keeps the first secret
    except FileExistsError:
        return path.read_bytes().strip()
    finally:
        tmp.unlink()
    log.info("created the session secret %s", path)
    return secret


class Sessions:
    """Issues and reads the signed session cookie."""

    def __init__(self, secret: bytes, max_age_s: int) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="litefleet-session")
        self.max_age_s = max_age_s

    def issue(self, name: str) -> str:
        return self._serializer.dumps({"u": name, "c": secrets.token_urlsafe(24)})

    def note(self, text: str) -> str:
        """`text` signed, for the page a form redirects to (nobody else can put words there)."""
        return self._serializer.dumps({"n": text}, salt="litefleet-note")

    def read_note(self, token: str) -> str:
        if not token or len(token) > 2048:
            return ""
        try:
            data = self._serializer.loads(token, max_age=300, salt="litefleet-note")
        except BadSignature:
            return ""
        note = data.get("n") if isinstance(data, dict) else None
        return note if isinstance(note, str) else ""

    def read(self, cookie: str) -> tuple[str, str] | None:
        """(user name, CSRF token), or None for a cookie that is forged, expired or malformed."""
        if not cookie or len(cookie) > 4096:
            return None
        try:
            data = self._serializer.loads(cookie, max_age=self.max_age_s)
        except BadSignature:
            return None
        if not isinstance(data, dict):
            return None
        name, csrf = data.get("u"), data.get("c")
        if not isinstance(name, str) or not isinstance(csrf, str):
            return None
        return name, csrf


class LoginLimiter:
    """At most `max_failures` failed logins per (client, user name) within `window_s`."""

    MAX_KEYS = 10_000  # beyond this the oldest keys are forgotten

    def __init__(self, max_failures: int, window_s: float) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()  # uvicorn's worker threads share one limiter

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        q = self._failures.get(key, deque())
        while q and q[0] <= now - self.window_s:
            q.popleft()
        return q

    def retry_after(self, key: tuple[str, str], now: float | None = None) -> float:
        """Seconds until `key` may try again; 0 when it may now."""
        now = time.monotonic() if now is None else now
        with self._lock:
            q = self._recent(key, now)
            if len(q) < self.max_failures:
                return 0.0
            return max(0.0, q[0] + self.window_s - now)

    def failed(self, key: tuple[str, str], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            q = self._recent(key, now)
            q.append(now)
            self._failures[key] = q
            if len(self._failures) > self.MAX_KEYS:
                del self._failures[next(iter(self._failures))]

    def succeeded(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._failures.pop(key, None)
