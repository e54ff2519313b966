"""One resumable HTTP download into memory, never past the signed length.

The simulated device's fetcher: `GET` with `Range: bytes=<have>-` when it already holds a
prefix, a socket timeout, and a hard cap (`SizeExceeded` the moment the body would pass the
signed size). Transport failures raise `FetchFailed` (an `Unavailable`) and leave the prefix
for the next attempt. S3 artifacts reach devices as presigned URLs, so plain `GET` covers both
stores. Whether the bytes are the right ones is the caller's check (size and sha256).

Runs on a worker thread (blocking I/O); `progress(done)` is called from that thread.
"""

from __future__ import annotations

import http.client
from collections.abc import Callable
from urllib.parse import urljoin, urlsplit

from shared.errors import FetchFailed, SizeExceeded

__all__ = ["fetch_into"]

CHUNK = 64 * 1024
_MAX_REDIRECTS = 3


def _redact(url: str) -> str:
    parts = urlsplit(url)  # presigned query strings carry credentials: never log them
    return f"{parts.scheme}://{parts.netloc}{parts.path}" + ("?..." if parts.query else "")


def fetch_into(
    buf: bytearray,
    url: str,
    max_length: int,
    *,
    timeout_s: float = 30.0,
    stop_at: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Complete `buf` from `url`, resuming from `len(buf)`.

    `stop_at` ends the transfer early once `buf` holds at least that many bytes (a device that
    loses its link mid-download); the prefix stays in `buf`.
    """
    if len(buf) > max_length:
        del buf[:]
    for _ in range(_MAX_REDIRECTS + 1):
        location = _fetch_once(buf, url, max_length, timeout_s, stop_at, progress)
        if location is None:
            return
        url = urljoin(url, location)
    raise FetchFailed(f"more than {_MAX_REDIRECTS} redirects")


def _fetch_once(  # noqa: C901 — one ranged GET: each status code the simulator meets is its own branch
    buf: bytearray,
    url: str,
    max_length: int,
    timeout_s: float,
    stop_at: int | None,
    progress: Callable[[int], None] | None,
) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchFailed(f"not an http(s) URL: {_redact(url)}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout_s)
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
    offset = len(buf)
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        conn.request("GET", target, headers=headers)
        response = conn.getresponse()
        if response.status in (301, 302, 303, 307, 308):
            return response.getheader("Location") or ""
        if response.status == 416 and offset:
            return None  # nothing after our prefix: the caller's size check decides
        if response.status == 200 and offset:
            del buf[:]  # the server ignored the Range request: start over
        elif response.status not in (200, 206):
            raise FetchFailed(f"HTTP {response.status} {response.reason} for {_redact(url)}")
        while stop_at is None or len(buf) < stop_at:
            chunk = response.read1(CHUNK)
            if not chunk:
                break
            if len(buf) + len(chunk) > max_length:
                raise SizeExceeded(f"more than the signed {max_length} bytes")
            buf += chunk
            if progress is not None:
                progress(len(buf))
        return None
    except (OSError, http.client.HTTPException) as e:
        raise FetchFailed(f"{_redact(url)}: {e}") from e
    finally:
        conn.close()
