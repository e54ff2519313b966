"""Fetchers: bytes from a URL into a partial file, resumable, never past a hard length.

One small interface, one method to implement (python-tuf's fetcher seam):

    Fetcher.fetch(url, dest, max_length, progress) -> None

`dest` may already hold a prefix from an earlier attempt; the fetcher continues from its size
(an HTTP `Range` request, a seek for files). It stops the moment the file would pass
`max_length` (`SizeExceeded`: endless data), and raises `FetchFailed` (an `Unavailable`) when
the transport fails, leaving the prefix for the next attempt. Whether the bytes are the right
ones is not the fetcher's business: the caller checks size and hash.

S3 artifacts reach devices as presigned HTTPS URLs, so `http(s)://` covers them.
"""

from __future__ import annotations

import http.client
import logging
import os
import ssl
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

from agent.update.crash import crashpoint
from shared.errors import FetchFailed, SizeExceeded

__all__ = ["Fetcher", "FileFetcher", "HttpFetcher", "fetcher_for"]

log = logging.getLogger(__name__)

Progress = Callable[[int], None]  # called with the bytes in `dest` so far
_CHUNK = 64 * 1024
_MAX_REDIRECTS = 3


class Fetcher(ABC):
    @abstractmethod
    def fetch(self, url: str, dest: Path, max_length: int, progress: Progress | None = None) -> None:
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


def _copy(read: Callable[[int], bytes], dest: Path, offset: int, max_length: int,
          progress: Progress | None) -> int:
    """Append from `read` to `dest` until EOF; refuse the byte that passes `max_length`."""
    done = offset
    with dest.open("ab") as out:
        while True:
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
        out.flush()
        os.fsync(out.fileno())
    return done


class FileFetcher(Fetcher):
    """`file:///path`: a local folder or a mounted medium."""

    def fetch(self, url: str, dest: Path, max_length: int, progress: Progress | None = None) -> None:
        path = Path(unquote(urlsplit(url).path))
        offset = _offset(dest, max_length)
        try:
            with path.open("rb") as src:
                src.seek(offset)
                _copy(src.read, dest, offset, max_length, progress)
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
        return http.client.HTTPConnection(parts.hostname, parts.port, timeout=self.timeout_s), target

    def fetch(self, url: str, dest: Path, max_length: int, progress: Progress | None = None) -> None:
        for _ in range(_MAX_REDIRECTS + 1):
            location = self._fetch_once(url, dest, max_length, progress)
            if location is None:
                return
            url = urljoin(url, location)
        raise FetchFailed(f"more than {_MAX_REDIRECTS} redirects")

    def _fetch_once(self, url: str, dest: Path, max_length: int,
                    progress: Progress | None) -> str | None:
        offset = _offset(dest, max_length)
        conn, target = self._connect(url)
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            conn.request("GET", target, headers=headers)
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
            done = _copy(response.read1, dest, offset, max_length, progress)
            if declared is not None and declared.isdigit() and done != offset + int(declared):
                raise FetchFailed(f"connection closed after {done} bytes")
            return None
        except (OSError, http.client.HTTPException) as e:
            raise FetchFailed(f"{_redact(url)}: {e}") from e
        finally:
            conn.close()


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
