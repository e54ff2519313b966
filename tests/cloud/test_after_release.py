"""The cloud's side of the model after release: compress writes the reference profile,
release signs it (and refuses one for other I/O), release names a samples dataset in its
provenance, `litefleet devices` shows drift, and upload grants are checked by serve's HTTP
server (real HTTP) and bounded when devices ask for them."""

from __future__ import annotations

import io
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from cloud.artifacts import StoreError
from cloud.artifacts.files import FileStore
from cloud.artifacts.http import ArtifactServer
from cloud.artifacts.upload import UploadSigner
from cloud.cli import main
from cloud.ingest import IngestStats, write_batch
from cloud.samples.grants import upload_command
from cloud.store import open_store
from shared.errors import Rejected
from shared.messages import CaptureRequest, DriftSummary, TelemetryRecord, encode_message
from shared.samples import parse_capture_request
from tests.cloud.conftest import DIGITS, VIBRATION, CloudEnv

REPO = Path(__file__).resolve().parents[2]
EVAL = REPO / "examples" / "data" / "digits-eval.npz"


def test_compress_writes_the_reference_and_release_signs_it(
    cloud_env: CloudEnv, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    assert (
        main(
            [
                "compress",
                str(DIGITS),
                "--profile",
                "x86-gateway",
                "--data",
                str(EVAL),
                "--methods",
                "float16",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    reference = json.loads((out / "reference.json").read_text())
    assert [f["name"] for f in reference["features"]] == [
        "input.c0",
        "output.class",
        "output.score",
    ]
    assert all(isinstance(v, int) for f in reference["features"] for v in f["edges"] + f["counts"])
    capsys.readouterr()
    assert (
        main(
            [
                "release",
                str(out / "chosen.tflite"),
                "--name",
                "digits",
                "--version",
                "1",
                "--profile",
                "x86-gateway",
                "--from-report",
                str(out / "report.json"),
                "--drift-threshold",
                "0.4",
                "--json",
                "--config",
                str(cloud_env.config),
            ]
        )
        == 0
    )
    signed = json.loads(capsys.readouterr().out)["envelope"]["signed"]
    assert signed["reference"]["drift_threshold_milli"] == 400
    assert signed["reference"]["features"] == reference["features"]

    # a reference for another model's I/O is refused, and nothing is released
    assert (
        main(
            [
                "release",
                str(VIBRATION),
                "--name",
                "vibration",
                "--version",
                "1",
                "--profile",
                "x86-gateway",
                "--reference",
                str(out / "reference.json"),
                "--config",
                str(cloud_env.config),
            ]
        )
        == 2
    )
    assert "does not describe" in capsys.readouterr().err
    db = open_store(cloud_env.db)
    assert db.execute("SELECT count(*) FROM releases WHERE name = 'vibration'").fetchone()[0] == 0
    db.close()


def test_release_names_the_samples_dataset(cloud_env: CloudEnv, tmp_path: Path, capsys) -> None:
    dataset = tmp_path / "dataset.npz"
    buffer = io.BytesIO()
    np.savez(
        buffer,
        x=np.zeros((3, 28, 28, 1), np.float32),
        y=np.zeros(3, np.int64),
        trigger=np.asarray(["drift"] * 3),
    )
    dataset.write_bytes(buffer.getvalue())
    assert (
        main(
            [
                "release",
                str(DIGITS),
                "--name",
                "digits",
                "--version",
                "1",
                "--profile",
                "x86-gateway",
                "--samples",
                str(dataset),
                "--json",
                "--config",
                str(cloud_env.config),
            ]
        )
        == 0
    )
    metrics = json.loads(capsys.readouterr().out)["provenance"]["metrics"]
    assert metrics["samples"] == 3 and len(metrics["samples_sha256"]) == 64
    (tmp_path / "bad.npz").write_bytes(b"not a dataset")
    assert (
        main(
            [
                "release",
                str(DIGITS),
                "--name",
                "digits",
                "--version",
                "2",
                "--profile",
                "x86-gateway",
                "--samples",
                str(tmp_path / "bad.npz"),
                "--config",
                str(cloud_env.config),
            ]
        )
        == 2
    )
    assert "not a samples dataset" in capsys.readouterr().err


def test_devices_shows_the_latest_drift(cloud_env: CloudEnv, capsys) -> None:
    db = open_store(cloud_env.db)
    now = time.time()
    records = [
        TelemetryRecord("cam-01", 1, now - 2),
        TelemetryRecord("cam-01", 2, now - 1, drift=DriftSummary(1.42, "input.c0", 0.25, 300)),
        TelemetryRecord("cam-02", 1, now - 1, drift=DriftSummary(0.031, "output.class", 0.25, 300)),
    ]
    with db.begin() as conn:  # as the ingester stores them: drift kept on the device's row
        write_batch(conn, [(r, encode_message(r)) for r in records], now, IngestStats())
    db.close()
    assert main(["devices", "--config", str(cloud_env.config)]) == 0
    text = capsys.readouterr().out
    assert "1.42! input.c0" in text and "0.03" in text
    assert main(["devices", "--json", "--config", str(cloud_env.config)]) == 0
    views = {v["device_id"]: v for v in json.loads(capsys.readouterr().out)}
    assert views["cam-01"]["drift"]["feature"] == "input.c0" and views["cam-01"]["drifting"]
    assert views["cam-02"]["drift"]["score"] == 0.031 and not views["cam-02"]["drifting"]


def _put(url: str, data: bytes) -> int:
    request = urllib.request.Request(
        url, data=data, method="PUT", headers={"Content-Type": "application/octet-stream"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        return e.code


def test_serve_accepts_only_granted_uploads_and_never_serves_samples(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    root.mkdir()
    key = tmp_path / "upload.key"
    server = ArtifactServer(root, uploads=UploadSigner.from_file(key))
    server.start()
    try:
        assert key.stat().st_mode & 0o077 == 0
        store = FileStore(root, server.base_url, key)
        name = "samples/cam-01/20260101T000000-0123abcd.jpg"
        url = store.put_url(name, 60, time.time())
        assert _put(url, b"jpeg bytes") == 201
        assert (root / name).read_bytes() == b"jpeg bytes"
        assert _put(url, b"again") == 201  # a retried upload writes the same key again
        # the grant names one key; a forged, altered or expired one writes nothing
        other = url.replace("0123abcd.jpg", "0123abce.jpg")
        assert (
            _put(other, b"x") == 403
            and not (root / "samples/cam-01/20260101T000000-0123abce.jpg").exists()
        )
        assert _put(url[:-4] + "0000", b"x") == 403
        expired = store.put_url(name.replace("abcd", "abcf"), -10, time.time())
        assert _put(expired, b"x") == 403
        assert _put(f"{server.base_url}/digits/1/x.tflite.zst", b"x") == 404
        with pytest.raises(StoreError):
            store.put_url("digits/1/x.tflite.zst", 60, time.time())
        # samples never go back out over HTTP
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{server.base_url}/{name}", timeout=10)
        assert e.value.code == 404
    finally:
        server.stop()


def test_capture_requests_are_bounded_and_answered_with_signed_grants(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from agent.link.commands import verify_command
    from shared.keys import Keyring, SigningKey

    good = {"20260101T000000-0123abcd.jpg": 900, "20260101T000000-0123abcd.json": 200}
    request = parse_capture_request(encode_message(CaptureRequest("cam-01", 1.0, good)), "cam-01")
    for payload, device in (
        (encode_message(CaptureRequest("cam-02", 1.0, good)), "cam-01"),  # another's topic
        (encode_message(CaptureRequest("cam-01", 1.0, {})), "cam-01"),
        (encode_message(CaptureRequest("cam-01", 1.0, {"../x.jpg": 1})), "cam-01"),
        (
            encode_message(CaptureRequest("cam-01", 1.0, {"20260101T000000-0123abcd.jpg": 10**9})),
            "cam-01",
        ),
        (
            encode_message(
                CaptureRequest(
                    "cam-01", 1.0, {f"20260101T000000-0123ab{i:02x}.jpg": 1 for i in range(17)}
                )
            ),
            "cam-01",
        ),
        (b"{" * 10_000, "cam-01"),
    ):
        with pytest.raises(Rejected):
            parse_capture_request(payload, device)
    store = FileStore(tmp_path / "a", "http://fleet.example/artifacts", tmp_path / "upload.key")
    key = SigningKey.generate()
    envelope = upload_command(store, key, "cam-01", request.files, time.time())
    command = verify_command(
        json.dumps(envelope).encode(), Keyring([key.public], 1), "cam-01", datetime.now(UTC)
    )
    assert command.command == "upload"
    assert set(command.args["urls"]) == set(good)
    assert all(
        u.startswith("http://fleet.example/artifacts/samples/cam-01/")
        for u in command.args["urls"].values()
    )
