"""The artifact HTTP server over real sockets: Range, ETag, 200/206/304/404/416."""

from __future__ import annotations

import http.client
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.artifacts.files import FileStore
from cloud.artifacts.http import ArtifactServer, parse_range

KEY = "digits/3/digits-3.tflite.zst"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ArtifactServer, bytes]]:
    store = FileStore(tmp_path / "artifacts")
    data = os.urandom(300_000)
    store.put(KEY, data)
    (tmp_path / "secret.txt").write_text("not an artifact")
    server = ArtifactServer(tmp_path / "artifacts", "127.0.0.1", 0)
    server.start()
    yield server, data
    server.stop()


def get(
    server: ArtifactServer, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_whole_file_with_etag(served) -> None:
    server, data = served
    status, headers, body = get(server, f"/artifacts/{KEY}")
    assert status == 200 and body == data
    assert headers["content-length"] == str(len(data)) and headers["accept-ranges"] == "bytes"
    status, _, body = get(server, f"/artifacts/{KEY}", {"If-None-Match": headers["etag"]})
    assert status == 304 and body == b""
    status, headers2, body = get(server, f"/artifacts/{KEY}", method="HEAD")
    assert status == 200 and body == b"" and headers2["etag"] == headers["etag"]


def test_ranges_resume_a_download(served) -> None:
    server, data = served
    status, headers, body = get(server, f"/artifacts/{KEY}", {"Range": "bytes=1000-"})
    assert status == 206 and body == data[1000:]
    assert headers["content-range"] == f"bytes 1000-{len(data) - 1}/{len(data)}"
    status, headers, body = get(server, f"/artifacts/{KEY}", {"Range": "bytes=10-19"})
    assert status == 206 and body == data[10:20] and headers["content-length"] == "10"
    status, _, body = get(server, f"/artifacts/{KEY}", {"Range": "bytes=-100"})
    assert status == 206 and body == data[-100:]
    status, _, body = get(server, f"/artifacts/{KEY}", {"Range": f"bytes=5-{10 * len(data)}"})
    assert status == 206 and body == data[5:]


def test_unsatisfiable_range_is_416(served) -> None:
    server, data = served
    status, headers, body = get(server, f"/artifacts/{KEY}", {"Range": f"bytes={len(data)}-"})
    assert status == 416 and headers["content-range"] == f"bytes */{len(data)}" and body == b""


def test_if_range_with_a_stale_etag_sends_the_whole_file(served) -> None:
    server, data = served
    status, _, body = get(
        server, f"/artifacts/{KEY}", {"Range": "bytes=1000-", "If-Range": '"stale"'}
    )
    assert status == 200 and body == data


@pytest.mark.parametrize(
    "path",
    [
        "/artifacts/digits/3/missing.zst",
        "/artifacts/../secret.txt",
        "/artifacts/%2e%2e/secret.txt",
        "/secret.txt",
        "/artifacts/digits",
        "/artifacts/",
    ],
)
def test_missing_or_outside_paths_are_404(served, path: str) -> None:
    server, _ = served
    status, _, body = get(server, path)
    assert status == 404 and b"not an artifact" not in body


def test_parse_range() -> None:
    assert parse_range("bytes=0-0", 10) == (0, 0)
    assert parse_range("bytes=-3", 10) == (7, 9)
    assert parse_range("bytes=10-", 10) is False
    assert parse_range("bytes=0-1,4-5", 10) is None
    assert parse_range("items=0-1", 10) is None
    assert parse_range("bytes=5-2", 10) is None
