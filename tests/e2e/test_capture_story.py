"""Acceptance: sample capture from real agents through `litefleet serve`'s upload grants, into
a file store (HTTP PUT checked by serve) and into S3 (moto server, presigned PUT URLs); with
capture off nothing leaves the device until an operator's signed `capture N`; and the pulled
dataset is one `litefleet compress --data` accepts."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cloud.artifacts import open_artifact_store
from cloud.cli import main
from cloud.compress.reference import read_reference, write_reference
from cloud.config import load_cloud_config
from cloud.samples.catalog import list_samples
from cloud.service import CloudService
from tests.agent.drift_helpers import DIGITS, digits_reference, digits_video, looping_agent
from tests.cloud.conftest import CloudEnv, cloud_env  # noqa: F401  (the signing key fixture)
from tests.cloud.test_s3 import s3_endpoint  # noqa: F401  (the moto server fixture)
from tests.conftest import free_port

PREFIX = "litefleet/v1/devices"


def _cloud_config(
    env: CloudEnv, broker_port: int, http_port: int, artifacts: str, store_extra: str = ""
) -> Path:
    env.config.write_text(f"""
[mqtt]
host = "127.0.0.1"
port = {broker_port}

[store]
db = "cloud.db"
artifacts = "{artifacts}"
public_url = "http://127.0.0.1:{http_port}/artifacts"
{store_extra}

[signing]
key = "keys/release.key"

[http]
host = "127.0.0.1"
port = {http_port}
""")
    return env.config


def _wait(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return bool(predicate())


@pytest.mark.parametrize("backend", ["files", "s3"])
def test_capture_uploads_through_grants_nothing_leaves_when_off_and_pull_feeds_compress(  # type: ignore[no-untyped-def]
    backend: str, request, tmp_path: Path, mosquitto, mqtt_subscriber, agent_process, capsys
) -> None:
    env: CloudEnv = request.getfixturevalue("cloud_env")
    http_port = free_port()
    if backend == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        config = _cloud_config(
            env,
            mosquitto.port,
            http_port,
            "s3://fleet-artifacts/fleet",
            f'endpoint_url = "{endpoint}"\nregion = "us-east-1"',
        )
    else:
        config = _cloud_config(env, mosquitto.port, http_port, "file://artifacts")
    cloud = load_cloud_config(config)
    store = open_artifact_store(cloud.store)
    service = CloudService(cloud, web=False)  # no dashboard: it would take 127.0.0.1:8080
    service.start()
    try:
        # every frame whose top score is under 100 % is "low confidence": triggers galore
        path = digits_reference(tmp_path / "ref")
        write_reference(path.parent, replace(read_reference(path), confidence_threshold_pct=100))
        sub = mqtt_subscriber(mosquitto, [f"{PREFIX}/+/capture"])
        video = digits_video(tmp_path / "digits.avi", inverted=False)
        common = {"telemetry_s": 2.0, "source": f"file://{video}?fps=20"}
        drift = f'[drift]\nreference = "{path}"\n'
        on = looping_agent(
            agent_process,
            mosquitto,
            [env.key.public.hex],
            device_id="cap-on",
            extra_toml=drift + "[capture]\nenabled = true\nmax_per_hour = 1800\n",
            **common,
        )
        off = looping_agent(
            agent_process,
            mosquitto,
            [env.key.public.hex],
            device_id="cap-off",
            extra_toml=drift,
            **common,
        )

        # positive control: the device with capture on asks for grants and its samples land
        assert _wait(lambda: len(list_samples(store, "cap-on")) >= 4, 90), on.log()[-3000:]
        assert any(m.topic.endswith("/cap-on/capture") for m in sub.snapshot())
        samples = list_samples(store, "cap-on")
        assert {s.trigger for s in samples} == {"low_confidence"}
        assert all(s.model and s.model["name"] == "digits" for s in samples)
        # each stored sample is deleted on the device
        kept = on.state_dir / "samples"
        assert _wait(
            lambda: (
                not any(
                    (kept / f"{s.id}.{ext}").exists() for s in samples for ext in ("jpg", "json")
                )
            ),
            30,
        )

        # capture off: nothing was asked, nothing stored, nothing kept on the device
        assert not any(m.topic.endswith("/cap-off/capture") for m in sub.snapshot())
        assert list_samples(store, "cap-off") == []
        assert not list((off.state_dir / "samples").glob("*"))

        # an operator's signed `capture 2` keeps exactly two frames of the device with capture off
        assert main(["capture", "cap-off", "--count", "2", "--config", str(config)]) == 0
        assert _wait(lambda: len(list_samples(store, "cap-off")) >= 2, 60), off.log()[-3000:]
        time.sleep(2.0)  # and no more (the count is used up)
        commanded = list_samples(store, "cap-off")
        assert [s.trigger for s in commanded] == ["command", "command"]

        # the operator pulls a dataset; compress accepts it as --data
        out = tmp_path / "pulled"
        capsys.readouterr()
        assert (
            main(
                [
                    "samples",
                    "pull",
                    "--device",
                    "cap-on",
                    "--since",
                    "1h",
                    "--out",
                    str(out),
                    "--config",
                    str(config),
                ]
            )
            == 0
        )
        with np.load(out / "dataset.npz") as npz:
            x, y, trigger = npz["x"], npz["y"], npz["trigger"]
        assert x.shape[1:] == (28, 28, 1) and len(x) == len(y) == len(trigger) >= 4
        assert set(trigger.tolist()) == {"low_confidence"} and all(0 <= v <= 9 for v in y)
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        manifest = json.loads((out / "dataset.json").read_text())
        assert manifest["samples"] == len(x)
        capsys.readouterr()
        assert (
            main(["samples", "list", "--reason", "command", "--json", "--config", str(config)]) == 0
        )
        listed = json.loads(capsys.readouterr().out)
        assert {s["device_id"] for s in listed} == {"cap-off"} and len(listed) == 2
        result = main(
            [
                "compress",
                str(DIGITS),
                "--profile",
                "x86-gateway",
                "--data",
                str(out / "dataset.npz"),
                "--methods",
                "float16",
                "--out",
                str(tmp_path / "compressed"),
            ]
        )
        assert result == 0
        report = json.loads((tmp_path / "compressed" / "report.json").read_text())
        # no --eval: compress holds out part of the pulled samples, labelled by the predicted y
        assert report["eval"]["samples"] >= 1 and report["eval"]["labelled"]
        assert (tmp_path / "compressed" / "reference.json").exists()
    finally:
        service.stop()
