"""Fetchers against a real loopback HTTP server and real files: resume, caps, failures."""

from __future__ import annotations

import os

import pytest

from agent.update.fetch import FileFetcher, HttpFetcher, fetcher_for
from agent.update.retry import RetryPolicy
from shared.errors import FetchFailed, SizeExceeded
from shared.messages import UpdatePhase

from .conftest import DIGITS_FT, Bench, SteppedClock, sha, write_config

BLOB = os.urandom(300_000)


def test_dropped_connection_resumes_with_a_range_request(tmp_path, artifact_server):
    (artifact_server.root / "blob").write_bytes(BLOB)
    dest = tmp_path / "blob.part"
    fetcher = HttpFetcher(timeout_s=10)
    artifact_server.drop_after = len(BLOB) // 2
    with pytest.raises(FetchFailed):
        fetcher.fetch(f"{artifact_server.url}/blob", dest, len(BLOB))
    assert 0 < dest.stat().st_size <= len(BLOB) // 2
    offset = dest.stat().st_size
    fetcher.fetch(f"{artifact_server.url}/blob", dest, len(BLOB))
    assert dest.read_bytes() == BLOB
    assert artifact_server.requests[-1] == ("/blob", f"bytes={offset}-")
    assert artifact_server.sent <= 1.1 * len(BLOB)


def test_update_resumes_after_a_dropped_download(tmp_path, keys, device_factory, artifact_server):
    device = device_factory(write_config(tmp_path, keys))
    device.updater.recover()
    bench = Bench(artifact_server.root, keys, base_url=artifact_server.url)
    release = bench.release(DIGITS_FT.read_bytes(), 1)
    size = release["signed"]["artifact"]["size"]
    data = bench.deployment(release)
    artifact_server.drop_after = size // 2
    first = device.updater.handle_deployment(data)
    assert (first.phase, first.reason) == (UpdatePhase.IDLE, "fetch_failed")
    second = device.updater.handle_deployment(data)
    assert second.phase == UpdatePhase.COMMITTED, second
    assert artifact_server.requests[-1][1] == f"bytes={size // 2}-"
    assert artifact_server.sent <= 1.1 * size
    assert device.updater.active().sha256 == sha(DIGITS_FT.read_bytes())


def test_a_failed_fetch_is_retried_with_doubling_delays_up_to_the_cap(
    tmp_path, keys, device_factory, artifact_server
):
    clock = SteppedClock()
    device = device_factory(
        write_config(tmp_path, keys), clock=clock, retry=RetryPolicy(first_s=0.2, max_s=0.8)
    )
    device.updater.recover()
    bench = Bench(artifact_server.root, keys, base_url=artifact_server.url)
    release = bench.release(DIGITS_FT.read_bytes(), 1)
    artifact = artifact_server.root / release["signed"]["artifact"]["sha256"]
    hidden = artifact.rename(tmp_path / "away")  # the store is missing it for now: HTTP 404
    first = device.updater.handle_deployment(bench.deployment(release))
    assert (first.phase, first.reason) == (UpdatePhase.IDLE, "fetch_failed")

    delays = []
    for _ in range(5):  # four retries after the first attempt, and the wait stored after them
        pending = device.updater._retries.pending  # the wait stored before the next try
        assert pending is not None, "the retries stopped"
        delays.append(pending.delay)
        if len(delays) == 5:
            break
        seen = len(artifact_server.requests)
        clock.advance(pending.delay - 0.01)
        device.updater.tick()
        assert len(artifact_server.requests) == seen  # never earlier than stored
        clock.advance(0.01)
        device.updater.tick()
        assert len(artifact_server.requests) > seen  # and at its time, it does try
    assert delays == [0.2, 0.4, 0.8, 0.8, 0.8]  # doubling, capped at max_s

    hidden.rename(artifact)  # the store has it again: the next retry installs it
    clock.advance(0.8)
    device.updater.tick()
    assert device.updater.active().sha256 == sha(DIGITS_FT.read_bytes())
    assert device.last_status().phase == UpdatePhase.COMMITTED
    requests = len(artifact_server.requests)
    for _ in range(60):  # ten minutes of ticks: nothing is fetched again
        clock.advance(10)
        device.updater.tick()
    assert len(artifact_server.requests) == requests


def test_http_refuses_an_announced_length_over_the_cap(tmp_path, artifact_server):
    (artifact_server.root / "blob").write_bytes(BLOB)
    dest = tmp_path / "blob.part"
    with pytest.raises(SizeExceeded):
        HttpFetcher(timeout_s=10).fetch(f"{artifact_server.url}/blob", dest, 1000)
    assert not dest.exists() or dest.stat().st_size <= 1000
    assert artifact_server.sent <= len(BLOB)


def test_http_404_is_unavailable(tmp_path, artifact_server):
    with pytest.raises(FetchFailed, match="HTTP 404"):
        HttpFetcher(timeout_s=10).fetch(f"{artifact_server.url}/missing", tmp_path / "x", 10)


def test_http_timeout_is_unavailable(tmp_path):
    import socket

    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        with pytest.raises(FetchFailed):
            HttpFetcher(timeout_s=0.5).fetch(f"http://127.0.0.1:{port}/x", tmp_path / "x", 10)


def test_file_fetcher_resumes_and_caps(tmp_path):
    src = tmp_path / "src"
    src.write_bytes(BLOB)
    dest = tmp_path / "dest.part"
    dest.write_bytes(BLOB[:1000])
    FileFetcher().fetch(f"file://{src}", dest, len(BLOB))
    assert dest.read_bytes() == BLOB
    capped = tmp_path / "capped.part"
    with pytest.raises(SizeExceeded):
        FileFetcher().fetch(f"file://{src}", capped, 100_000)
    assert capped.stat().st_size <= 100_000
    with pytest.raises(FetchFailed):
        FileFetcher().fetch(f"file://{tmp_path}/missing", tmp_path / "m.part", 10)


def test_unknown_scheme_is_unavailable():
    with pytest.raises(FetchFailed):
        fetcher_for("ftp://example/x")
