"""The artifact HTTP server: GET and HEAD for a file store, with Range and ETag.

    200  the whole file (or a Range the server ignores: If-Range that no longer matches)
    206  one satisfiable byte range: `bytes=a-b`, `bytes=a-`, `bytes=-n`
    304  If-None-Match matches the ETag
    404  no such artifact (or a path outside the store)
    416  a range that starts past the end; `Content-Range: bytes */size`

Only single ranges are served; a multi-range request gets the whole file (RFC 9110 allows it).
Artifacts are write-once, so the ETag is derived from size and modification time.

PUT accepts a sample upload under `<prefix>samples/` when the server holds the upload secret
(`cloud.artifacts.upload`): `?expires=..&sig=..` must grant that key, the body is at most
`MAX_UPLOAD_BYTES` (Content-Length required), and the file is replaced atomically (a retried
upload writes the same key again). 201 when stored, 403 for a missing, wrong or expired grant,
411/413 for a missing or too large body. Samples are never served back: GET under `samples/`
is 404 (operators read them with `litefleet samples`).

Other exact paths (`/healthz`, `/metrics`: see cloud.health) are served by `routes`. A client
that resets or closes its connection mid-request is logged at debug, never as a traceback.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlparse

from cloud.artifacts import StoreError
from cloud.artifacts.files import safe_path
from cloud.artifacts.upload import UPLOAD_PREFIX, UploadSigner
from localio.atomic import write_atomic

if TYPE_CHECKING:
    from cloud.health import Response

__all__ = ["ArtifactServer", "parse_range"]

log = logging.getLogger(__name__)
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_CHUNK = 1 << 16
MAX_UPLOAD_BYTES = 16 * 1024 * 1024


def parse_range(header: str, size: int) -> tuple[int, int] | bool | None:
    """(first, last) inclusive for a satisfiable single range, None to serve the whole file,
    False when the range cannot be satisfied (416)."""
    m = _RANGE.match(header.strip())
    if m is None:
        return None  # multi-range or another unit: ignore the header
    start, end = m.groups()
    if not start and not end:
        return None
    if not start:
        n = int(end)
        if n == 0:
            return False
        return (max(0, size - n), size - 1) if size else False
    first = int(start)
    if first >= size:
        return False
    last = min(int(end), size - 1) if end else size - 1
    if last < first:
        return None  # syntactically invalid: ignore
    return first, last


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_PUT(self) -> None:
        url = urlparse(self.path)
        path, prefix, signer = unquote(url.path), self.server.prefix, self.server.uploads
        key = path[len(prefix) :]
        query = parse_qs(url.query)
        if (
            self.server.root is None
            or signer is None
            or not path.startswith(prefix)
            or not key.startswith(UPLOAD_PREFIX)
        ):
            self.close_connection = True
            self._error(HTTPStatus.NOT_FOUND)
            return
        expires, sig = query.get("expires", [""])[0], query.get("sig", [""])[0]
        if not signer.check(key, expires, sig, time.time()):
            log.warning("refused an upload to %s: no valid grant", key)
            self.close_connection = True
            self._error(HTTPStatus.FORBIDDEN)
            return
        length = self.headers.get("Content-Length", "")
        if not length.isdigit():
            self.close_connection = True
            self._error(HTTPStatus.LENGTH_REQUIRED)
            return
        if int(length) > MAX_UPLOAD_BYTES:
            self.close_connection = True
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
            return
        try:
            file = safe_path(self.server.root, key)
            data = self.rfile.read(int(length))
            if len(data) != int(length):
                self.close_connection = True
                self._error(HTTPStatus.BAD_REQUEST)
                return
            file.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(file, data, 0o640)
        except (StoreError, OSError) as e:
            log.warning("upload to %s failed: %s", key, e)
            self.close_connection = True
            self._error(HTTPStatus.BAD_REQUEST)
            return
        log.info("stored upload %s (%s bytes)", key, len(data))
        self._error(HTTPStatus.CREATED)

    def _error(self, status: HTTPStatus, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _route(self, path: str, body: bool) -> bool:
        route = self.server.routes.get(path)
        if route is None:
            return False
        response = route()
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if body:
            self.wfile.write(response.body)
        return True

    def _serve(self, body: bool) -> None:  # noqa: C901 — one HTTP GET/HEAD with ranges: the status-code branches read best in one place
        path = unquote(urlparse(self.path).path)
        if self._route(path, body):
            return
        prefix = self.server.prefix
        if (
            self.server.root is None
            or not path.startswith(prefix)
            or path[len(prefix) :].startswith(UPLOAD_PREFIX)
        ):
            self._error(HTTPStatus.NOT_FOUND)
            return
        try:
            file = safe_path(self.server.root, path[len(prefix) :])
            stat = file.stat()
        except (StoreError, OSError):
            self._error(HTTPStatus.NOT_FOUND)
            return
        if not file.is_file():
            self._error(HTTPStatus.NOT_FOUND)
            return
        size = stat.st_size
        etag = f'"{size:x}-{stat.st_mtime_ns:x}"'
        common = {"ETag": etag, "Accept-Ranges": "bytes"}
        if self.headers.get("If-None-Match") in (etag, "*"):
            self._error(HTTPStatus.NOT_MODIFIED, common)
            return
        wanted: tuple[int, int] | bool | None = None
        range_header = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if range_header and (if_range is None or if_range == etag):
            wanted = parse_range(range_header, size)
        if wanted is False:
            self._error(
                HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
                {**common, "Content-Range": f"bytes */{size}"},
            )
            return
        if isinstance(wanted, tuple):
            first, last = wanted
            self.send_response(HTTPStatus.PARTIAL_CONTENT)
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        else:
            first, last = 0, size - 1
            self.send_response(HTTPStatus.OK)
        for k, v in common.items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(last - first + 1))
        self.end_headers()
        if not body:
            return
        try:
            with file.open("rb") as f:
                f.seek(first)
                remaining = last - first + 1
                while remaining > 0:
                    chunk = f.read(min(_CHUNK, remaining))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    remaining -= len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            log.debug("client went away during %s", path)


_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # the listen backlog: socketserver's default of 5 drops connection attempts when a wave of
    # devices starts downloading at once, and each dropped client waits a second to retry
    request_queue_size = 128
    root: Path | None
    prefix: str
    routes: dict[str, Callable[[], Response]]
    uploads: UploadSigner | None

    def handle_error(self, request: object, client_address: object) -> None:
        """Instead of socketserver's traceback on stderr: a client gone is routine (debug);
        anything else is logged once, with its traceback, through logging."""
        error = sys.exc_info()[1]
        if isinstance(error, _GONE):
            log.debug("HTTP client %s went away: %s", client_address, error)
        else:
            log.error(
                "HTTP request from %s failed", client_address, exc_info=sys.exc_info()
            )  # called inside socketserver's except block


class ArtifactServer:
    """Serves `root` under `/<prefix>/` on (host, port); port 0 picks a free one. Without a
    root (artifacts in S3) only `routes` are served."""

    def __init__(
        self,
        root: Path | None,
        host: str = "127.0.0.1",
        port: int = 0,
        prefix: str = "/artifacts/",
        routes: dict[str, Callable[[], Response]] | None = None,
        uploads: UploadSigner | None = None,
    ) -> None:
        self._server = _Server((host, port), _Handler)
        self._server.uploads = uploads  # accept sample uploads granted with this secret
        self._server.root = root
        self._server.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self._server.routes = dict(routes or {})
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}{self._server.prefix.rstrip('/')}"

    @property
    def serving(self) -> bool:
        """Whether the server thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            name="artifact-http",
            kwargs={"poll_interval": 0.2},
            daemon=True,
        )
        self._thread.start()
        if self._server.root is not None:
            log.info("serving artifacts from %s at %s", self._server.root, self.base_url)
        for route in self._server.routes:
            log.info("serving %s at http://%s:%s%s", route.lstrip("/"), self.host, self.port, route)

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()
