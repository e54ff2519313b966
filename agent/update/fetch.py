"""Fetchers: bytes from a URL into a partial file, resumable, never past a hard length.

One small interface, one method to implement (python-tuf's fetcher seam):

    Fetcher.fetch(url, dest, max_length, progress, transfer) -> None

`dest` may already hold a prefix from an earlier attempt; the fetcher continues from its size
(an HTTP `Range` request, a seek for files). It stops the moment the file would pass
`max_length` (`SizeExceeded`: endless data), and raises `FetchFailed` (an `Unavailable`) when
the transport fails, leaving the prefix for the next attempt. Whether the bytes are the right
ones is not the fetcher's business: the caller checks size and hash.

A `Transfer` bounds one download as a whole, not just each socket read (a mirror that drips a
byte every few seconds never trips a read timeout): past its deadline the fetch raises
`SlowRetrieval`, and another thread may `cancel` it (a newer deployment arrived), which shuts
the open socket so a stalled read returns at once and the fetch raises `Superseded`. A full
disk raises `DiskFull`. All three are `Unavailable`: the prefix stays for the next attempt.

S3 artifacts reach devices as presigned HTTPS URLs, so `http(s)://` covers them.
"""

from __future__ import annotations

import errno
import http.client
import logging
import os
import socket
import ssl
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

from agent.update.crash import crashpoint
from shared.errors import (
    DiskFull,
    FetchFailed,
    SizeExceeded,
    SlowRetrieval,
    Superseded,
    Unavailable,
)

__all__ = ["Fetcher", "FileFetcher", "HttpFetcher", "Transfer", "fetcher_for", "is_disk_full"]

log = logging.getLogger(__name__)

Progress = Callable[[int], None]  # called with the bytes in `dest` so far
_CHUNK = 64 * 1024
_MAX_REDIRECTS = 3
_DEADLINE_SLACK_S = 0.05  # a read timed to end at the deadline may wake a hair early


def is_disk_full(error: OSError) -> bool:
    return error.errno in (errno.ENOSPC, errno.EDQUOT)


class Transfer:
    """The limits of one deployment's downloads: a deadline per download and a cancel switch.

    The retriever sets the deadline before each download (`limit`); any thread may `cancel`.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._deadline: float | None = None
        self._limit_s = 0.0
        self._lock = threading.Lock()
        self._cancelled = ""
        self._error: type[Unavailable] = Superseded
        self._abort: Callable[[], None] | None = None

    def limit(self, seconds: float | None) -> None:
        """The download that starts now must end within `seconds` (None: no deadline)."""
        self._limit_s = seconds or 0.0
        self._deadline = None if seconds is None else self._clock() + seconds

    def cancel(self, why: str, error: type[Unavailable] = Superseded) -> None:
        """End the download: the fetch raises `error(why)` (from any thread)."""
        with self._lock:
            self._cancelled = why or "cancelled"
            self._error = error
            abort = self._abort
        if abort is not None:
            abort()

    @property
    def cancelled(self) -> bool:
        return bool(self._cancelled)

    def check(self) -> None:
        """Raise the cancel's error once cancelled, `SlowRetrieval` once past the deadline."""
        if self._cancelled:
            raise self._error(self._cancelled)
        if self._deadline is not None and self._clock() >= self._deadline - _DEADLINE_SLACK_S:
            raise SlowRetrieval(
                f"the download did not finish within its {self._limit_s:.0f} s "
                "deadline (size / minimum rate)"
            )

    def read_timeout(self, timeout_s: float) -> float:
        """How long the next read may block: the socket timeout, or less near the deadline."""
        if self._deadline is None:
            return timeout_s
        return max(0.01, min(timeout_s, self._deadline - self._clock()))

    def watch(self, sock: socket.socket | None) -> None:
        """Shut `sock` down when cancelled (None: forget it); at once if already cancelled."""

        def abort() -> None:
            if sock is None:
                return
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed

        with self._lock:
            self._abort = abort if sock is not None else None
            cancelled = bool(self._cancelled)
        if cancelled:
            abort()


class Fetcher(ABC):
    @abstractmethod
    def fetch(
        self,
        url: str,
        dest: Path,
        max_length: int,
        progress: Progress | None = None,
        transfer: Transfer | None = None,
    ) -> None:
        """Complete `dest` from `url`, resuming from its current size."""


def _offset(dest: Path, max_length: int) -> int:
    try:
        size = dest.stat().st_size
    except FileNotFoundError:
        return 0
    if size > max_length:
        dest.unlink()
        return 0
    return size


def _copy(
    read: Callable[[int], bytes],
    dest: Path,
    offset: int,
    max_length: int,
    progress: Progress | None,
    transfer: Transfer,
) -> int:
    """Append from `read` to `dest` until EOF; refuse the byte that passes `max_length`."""
    done = offset
    try:
        with dest.open("ab") as out:
            while True:
                transfer.check()
                chunk = read(_CHUNK)
                if not chunk:
                    break
                if done + len(chunk) > max_length:
                    out.write(chunk[: max_length - done])
                    raise SizeExceeded(f"more than the signed {max_length} bytes")
                out.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done)
                if done < max_length:
                    out.flush()
                    crashpoint("fetch.mid")
            transfer.check()  # a cancel shuts the socket: that EOF is not the end of the file
            out.flush()
            os.fsync(out.fileno())
    except OSError as e:
        if is_disk_full(e):
            raise DiskFull(f"no space left for {dest.name}: {e.strerror}") from e
        raise
    return done


class FileFetcher(Fetcher):
    """`file:///path`: a local folder or a mounted medium."""

    def fetch(
        self,
        url: str,
        dest: Path,
        max_length: int,
        progress: Progress | None = None,
        transfer: Transfer | None = None,
    ) -> None:
        path = Path(unquote(urlsplit(url).path))
        offset = _offset(dest, max_length)
        try:
            with path.open("rb") as src:
                src.seek(offset)
                _copy(src.read, dest, offset, max_length, progress, transfer or Transfer())
        except OSError as e:
            raise FetchFailed(f"{path}: {e.strerror or e}") from e


class HttpFetcher(Fetcher):
    """`http://` and `https://` with `Range` resume, a socket timeout and a length cap."""

    def __init__(self, timeout_s: float = 30.0, ssl_context: ssl.SSLContext | None = None) -> None:
        self.timeout_s = timeout_s
        self.ssl_context = ssl_context or ssl.create_default_context()

    def _connect(self, url: str) -> tuple[http.client.HTTPConnection, str]:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchFailed(f"not an http(s) URL: {url!r}")
        target = parts.path or "/"
        if parts.query:
            target += f"?{parts.query}"
        if parts.scheme == "https":
            return http.client.HTTPSConnection(
                parts.hostname, parts.port, timeout=self.timeout_s, context=self.ssl_context
            ), target
        return http.client.HTTPConnection(
            parts.hostname, parts.port, timeout=self.timeout_s
        ), target

    def fetch(
        self,
        url: str,
        dest: Path,
        max_length: int,
        progress: Progress | None = None,
        transfer: Transfer | None = None,
    ) -> None:
        transfer = transfer or Transfer()
        for _ in range(_MAX_REDIRECTS + 1):
            location = self._fetch_once(url, dest, max_length, progress, transfer)
            if location is None:
                return
            url = urljoin(url, location)
        raise FetchFailed(f"more than {_MAX_REDIRECTS} redirects")

    def _fetch_once(
        self, url: str, dest: Path, max_length: int, progress: Progress | None, transfer: Transfer
    ) -> str | None:
        transfer.check()
        offset = _offset(dest, max_length)
        conn, target = self._connect(url)
        conn.timeout = transfer.read_timeout(self.timeout_s)
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        response: http.client.HTTPResponse | None = None
        try:
            conn.request("GET", target, headers=headers)
            sock = conn.sock  # the response keeps reading it after `conn` lets go of it
            transfer.watch(sock)
            response = conn.getresponse()
            status = response.status
            if status in (301, 302, 303, 307, 308):
                return response.getheader("Location") or ""
            if status == 416 and offset:
                return None  # nothing after our prefix: the caller's size check decides
            if status == 200 and offset:
                log.info("server ignored the Range request: downloading %s from the start", url)
                dest.unlink()
                offset = 0
            elif status not in (200, 206):
                raise FetchFailed(f"HTTP {status} {response.reason} for {_redact(url)}")
            declared = response.getheader("Content-Length")
            if declared is not None and declared.isdigit() and offset + int(declared) > max_length:
                raise SizeExceeded(
                    f"server announces {offset + int(declared)} bytes, over the signed {max_length}"
                )
            done = _copy(
                _bounded(response, sock, transfer, self.timeout_s),
                dest,
                offset,
                max_length,
                progress,
                transfer,
            )
            if declared is not None and declared.isdigit() and done != offset + int(declared):
                raise FetchFailed(f"connection closed after {done} bytes")
            return None
        except (OSError, http.client.HTTPException) as e:
            transfer.check()  # a cancel or the deadline explains the failure better
            raise FetchFailed(f"{_redact(url)}: {e}") from e
        finally:
            transfer.watch(None)
            if response is not None:
                response.close()
            conn.close()


def _bounded(
    response: http.client.HTTPResponse,
    sock: socket.socket | None,
    transfer: Transfer,
    timeout_s: float,
) -> Callable[[int], bytes]:
    """`response.read1`, each read waiting no longer than the socket timeout or the deadline."""

    def read(n: int) -> bytes:
        if sock is not None:
            sock.settimeout(transfer.read_timeout(timeout_s))
        return response.read1(n)

    return read


def _redact(url: str) -> str:
    """A URL fit for logs: presigned query strings carry credentials."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}" + ("?..." if parts.query else "")


def fetcher_for(url: str, timeout_s: float = 30.0) -> Fetcher:
    scheme = urlsplit(url).scheme
    if scheme == "file":
        return FileFetcher()
    if scheme in ("http", "https"):
        return HttpFetcher(timeout_s)
    raise FetchFailed(f"no fetcher for URL scheme {scheme!r}")
