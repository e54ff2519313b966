"""A release in S3 (moto in server mode, real HTTP on loopback), fetched by a device through
its presigned URL with no credentials, and verified by hash."""

from __future__ import annotations

import hashlib
import json
import socket
import urllib.request
from collections.abc import Iterator

import boto3
import pytest
from moto.server import ThreadedMotoServer

from cloud.cli import main
from shared.codec import decompress, delta_decode
from tests.cloud.conftest import DIGITS, DIGITS_FT, CloudEnv, write_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def s3_endpoint(monkeypatch) -> Iterator[str]:
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
        Bucket="fleet-artifacts"
    )
    yield endpoint
    server.stop()


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as resp:  # no credentials: the URL is the key
        assert resp.status == 200
        return resp.read()


def test_release_in_s3_downloads_through_presigned_urls(
    cloud_env: CloudEnv, s3_endpoint, monkeypatch, capsys
) -> None:
    write_config(
        cloud_env.root,
        artifacts="s3://fleet-artifacts/releases",
        store_extra=f'endpoint_url = "{s3_endpoint}"\nregion = "us-east-1"',
    )
    outs = []
    for version, model in ((1, DIGITS), (2, DIGITS_FT)):
        assert (
            main(
                [
                    "release",
                    str(model),
                    "--name",
                    "digits",
                    "--version",
                    str(version),
                    "--profile",
                    "x86-gateway",
                    "--expires",
                    "30d",
                    "--json",
                    "--config",
                    str(cloud_env.config),
                ]
            )
            == 0
        )
        outs.append(json.loads(capsys.readouterr().out))
    signed = outs[1]["envelope"]["signed"]
    url = signed["artifact"]["url"]
    assert url.startswith(
        f"{s3_endpoint}/fleet-artifacts/releases/digits/2/x86-gateway/digits-2-x86-gateway.tflite.zst?"
    )
    assert "X-Amz-Expires=604800" in url  # 30 days asked for, capped at S3's 7-day maximum

    # the device side: no AWS credentials at all
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    full = fetch(url)
    assert hashlib.sha256(full).hexdigest() == signed["artifact"]["sha256"]
    model = decompress(full, signed["target"]["size"])
    assert hashlib.sha256(model).hexdigest() == signed["target"]["sha256"]
    assert model == DIGITS_FT.read_bytes()

    (delta,) = signed["deltas"]
    data = fetch(delta["url"])
    assert hashlib.sha256(data).hexdigest() == delta["sha256"]
    assert delta_decode(DIGITS.read_bytes(), data, signed["target"]["size"]) == model
