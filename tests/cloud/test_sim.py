"""`litefleet sim` against a real broker and a real `serve`: simulated devices that report, take
real rollouts (real verification, real HTTP downloads of deltas and full artifacts) and fail
the way they are told to."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

import tests.cloud.test_s3 as s3_tests
from cloud.artifacts.http import ArtifactServer
from cloud.cli import main
from cloud.config import load_cloud_config
from cloud.mqtt import CloudLink
from cloud.roots import chain_message
from cloud.service import CloudService
from cloud.sim.audit import missing_seqs
from cloud.sim.download import fetch_into
from cloud.store import open_store
from localio.keyfiles import save_signing_key
from shared.builders import build_deployment
from shared.envelope import sign_envelope
from shared.errors import SizeExceeded
from shared.keys import SigningKey
from tests.cloud.conftest import DIGITS, DIGITS_FT, CloudEnv
from tests.cloud.test_ingest import wait_for
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
PROFILE = "x86-gateway"
s3_endpoint = s3_tests.s3_endpoint  # moto in server mode: real HTTP on loopback


class SimProcess:
    def __init__(self, env: CloudEnv, n: int, *extra: str) -> None:
        self.log = env.root / f"sim-{time.monotonic_ns()}.log"
        self.out = self.log.with_suffix(".json")
        argv = [
            sys.executable,
            "-m",
            "cloud.cli",
            "sim",
            "--config",
            str(env.config),
            "--devices",
            str(n),
            "--group",
            "lab",
            "--initial",
            str(DIGITS),
            "--telemetry-interval",
            "0.5",
            "--probation",
            "0.2",
            "--offline-for",
            "1",
            "--log-level",
            "INFO",
            *extra,
        ]
        with self.log.open("wb") as log, self.out.open("wb") as out:
            self.process = subprocess.Popen(
                argv, stdout=out, stderr=log, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}
            )

    def stop(self) -> dict:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(60) == 0, self.log.read_text()
        return json.loads(self.out.read_text())


@pytest.fixture
def store_lines(request) -> str:
    """The `[store]` artifact settings: a folder, or with `indirect` "s3" a moto server."""
    if getattr(request, "param", "file") == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        return (
            f'artifacts = "s3://fleet-artifacts/releases"\nendpoint_url = "{endpoint}"\n'
            'region = "us-east-1"'
        )
    return 'artifacts = "file://artifacts"'


@pytest.fixture
def cloud(cloud_env: CloudEnv, mosquitto, store_lines: str) -> Iterator[CloudEnv]:
    http_port = free_port()
    cloud_env.config.write_text(f"""
[mqtt]
host = "127.0.0.1"
port = {mosquitto.port}

[store]
db = "cloud.db"
{store_lines}
public_url = "http://127.0.0.1:{http_port}/artifacts"

[signing]
key = "keys/release.key"

[http]
host = "127.0.0.1"
port = {http_port}

[web]
enabled = false

[ingest]
batch_wait_s = 0.05

[rollout]
tick_s = 0.2
""")
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
                    PROFILE,
                    "--config",
                    str(cloud_env.config),
                ]
            )
            == 0
        )
    service = CloudService(load_cloud_config(cloud_env.config))
    service.start()
    yield cloud_env
    service.stop()


@pytest.fixture
def sim(cloud: CloudEnv) -> Iterator[Callable[..., SimProcess]]:
    made: list[SimProcess] = []

    def start(n: int, *extra: str) -> SimProcess:
        made.append(SimProcess(cloud, n, *extra))
        return made[-1]

    yield start
    for p in made:
        if p.process.poll() is None:
            p.process.kill()
            p.process.wait()


def query(env: CloudEnv, sql: str, *params: object) -> list[tuple]:
    conn = sqlite3.connect(str(env.db), timeout=30)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def count(env: CloudEnv, sql: str, *params: object) -> int:
    return int(query(env, sql, *params)[0][0])


def deploy(env: CloudEnv, capsys, ref: str, waves: str) -> str:
    capsys.readouterr()
    assert (
        main(
            [
                "deploy",
                ref,
                "--group",
                "lab",
                "--waves",
                waves,
                "--json",
                "--config",
                str(env.config),
            ]
        )
        == 0
    )
    return str(json.loads(capsys.readouterr().out)["id"])


def statuses(env: CloudEnv, rollout_id: str) -> dict[str, int]:
    return dict(
        query(
            env,
            "SELECT status, COUNT(*) FROM rollout_devices WHERE rollout_id = ? GROUP BY status",
            rollout_id,
        )
    )


def wait_online(env: CloudEnv, n: int) -> None:
    wait_for(
        lambda: (
            count(env, "SELECT COUNT(*) FROM devices WHERE online = 1 AND profile = ?", PROFILE)
            == n
        ),
        60,
        f"{n} simulated devices online in the store",
    )


def test_a_simulated_fleet_reports_and_takes_a_rollout_to_committed(
    cloud, sim, capsys, mosquitto, mqtt_subscriber
):
    reports = mqtt_subscriber(mosquitto, ["litefleet/v1/devices/+/update"])
    fleet = sim(20, "--offline", "10", "--restart", "10", "--restart-within", "3")
    wait_online(cloud, 20)
    assert sorted(
        r[0] for r in query(cloud, "SELECT device_id FROM groups WHERE group_name = 'lab'")
    ) == [f"sim-{i:04d}" for i in range(20)]
    # they trust what an agent with only `[trust] keys` trusts (the signing key), and say so
    assert query(cloud, "SELECT DISTINCT root_version FROM devices") == [(1,)]
    wait_for(
        lambda: count(cloud, "SELECT COUNT(DISTINCT device_id) FROM telemetry") == 20,
        30,
        "telemetry from every device",
    )

    first = deploy(cloud, capsys, "digits@1", "1,50%,100%")  # full artifacts: no delta to v1
    wait_for(lambda: statuses(cloud, first) == {"committed": 20}, 90, "every device committed v1")
    second = deploy(cloud, capsys, "digits@2", "1,50%,100%")  # deltas from v1
    wait_for(lambda: statuses(cloud, second) == {"committed": 20}, 90, "every device committed v2")
    wait_for(
        lambda: count(cloud, "SELECT COUNT(*) FROM rollouts WHERE state = 'completed'") == 2,
        30,
        "both rollouts completed",
    )
    summary = fleet.stop()

    assert summary["models"] == {"digits@2": 20}
    assert summary["outcomes"]["committed"] == 40
    assert summary["outcomes"]["offline_mid_download"] == 2
    assert summary["outcomes"]["restarts"] == 2
    vias = dict(
        query(
            cloud,
            "SELECT rollout_id, GROUP_CONCAT(DISTINCT via) FROM updates "
            "WHERE phase = 'committed' AND via != '' GROUP BY rollout_id",
        )
    )
    assert vias == {first: "full", second: "delta"}
    phases = [
        r[0]
        for r in query(
            cloud,
            "SELECT phase FROM updates WHERE device_id = 'sim-0000' "
            "AND rollout_id = ? ORDER BY seq",
            second,
        )
    ]
    assert [p for i, p in enumerate(phases) if p not in phases[:i]] == [
        "downloading",
        "verifying",
        "staged",
        "activating",
        "probation",
        "committed",
    ]
    # download progress on the wire: complete transfers, and the halves the offline devices
    # got before they went away (they resumed from there)
    full_size = query(cloud, "SELECT envelope FROM releases WHERE version = 1")[0][0]
    full_size = json.loads(full_size)["signed"]["artifact"]["size"]
    downloading = [json.loads(p) for p in reports.payloads("/update")]
    downloading = [
        m
        for m in downloading
        if m["phase"] == "downloading" and m["rollout_id"] == first and m["bytes_done"]
    ]
    assert {m["bytes_total"] for m in downloading} == {full_size}
    assert sum(1 for m in downloading if m["bytes_done"] == full_size) == 20
    assert any(0 < m["bytes_done"] < full_size for m in downloading)
    # and in the store (ingest): each device's row in a rollout holds its whole download, the
    # full artifact in the first, the (smaller) delta in the second
    held = "SELECT DISTINCT bytes_done, bytes_total FROM rollout_devices WHERE rollout_id = ?"
    assert query(cloud, held, first) == [(full_size, full_size)]
    ((delta_done, delta_total),) = query(cloud, held, second)
    assert 0 < delta_done == delta_total < full_size
    models = {r[0] for r in query(cloud, "SELECT model_version FROM devices")}
    assert models == {2}
    # a clean stop: every device's last state says offline; nothing any device sent was lost
    wait_for(
        lambda: count(cloud, "SELECT COUNT(*) FROM devices WHERE online = 0") == 20,
        30,
        "every device offline after the stop",
    )
    sent = summary["records_sent"]
    wait_for(
        lambda: (
            count(
                cloud,
                "SELECT (SELECT COUNT(*) FROM telemetry) + (SELECT COUNT(*) "
                "FROM updates) + (SELECT COUNT(*) FROM events)",
            )
            == sent
        ),
        30,
        f"all {sent} records the fleet sent in the store",
    )
    assert summary["unacknowledged"] == 0
    store = open_store(cloud.db)
    try:
        assert missing_seqs(store, "sim-") == {}
        # the positive control: a record lost in the middle is found
        store.execute(
            "DELETE FROM telemetry WHERE device_id = 'sim-0003' AND seq = "
            "(SELECT MIN(seq) FROM telemetry WHERE device_id = 'sim-0003')"
        )
        assert missing_seqs(store, "sim-") == {"sim-0003": 1}
    finally:
        store.close()


@pytest.mark.parametrize("store_lines", ["s3"], indirect=True)
def test_deltas_come_from_s3_through_presigned_urls(cloud, sim, capsys) -> None:
    fleet = sim(5)
    wait_online(cloud, 5)
    rollout = deploy(cloud, capsys, "digits@2", "100%")  # a delta from the initial model
    wait_for(lambda: statuses(cloud, rollout) == {"committed": 5}, 60, "every device committed")
    assert query(cloud, "SELECT DISTINCT via FROM updates WHERE phase = 'committed'") == [
        ("delta",)
    ]
    envelope = json.loads(query(cloud, "SELECT envelope FROM releases WHERE version = 2")[0][0])
    assert "X-Amz-Signature=" in envelope["signed"]["deltas"][0]["url"]  # presigned, in S3
    assert fleet.stop()["models"] == {"digits@2": 5}


def test_failed_probations_roll_back_and_pause_the_rollout(cloud, sim, capsys) -> None:
    fleet = sim(6, "--fail-probation", "100")
    wait_online(cloud, 6)
    rollout = deploy(cloud, capsys, "digits@1", "1,100%")
    wait_for(
        lambda: count(cloud, "SELECT COUNT(*) FROM rollouts WHERE state = 'paused'") == 1,
        60,
        "the rollout to pause",
    )
    assert statuses(cloud, rollout) == {"failed": 1, "waiting": 5}
    assert query(cloud, "SELECT reason FROM rollout_devices WHERE status = 'failed'") == [
        ("probation_failed",)
    ]
    rolled = query(cloud, "SELECT device_id, reason FROM updates WHERE phase = 'rolled_back'")
    assert len(rolled) == 1 and rolled[0][1] == "probation_failed"
    # the failed device still runs the model it had (version 0, the initial one)
    assert query(cloud, "SELECT model_version FROM devices WHERE device_id = ?", rolled[0][0]) == [
        (0,)
    ]
    assert fleet.stop()["outcomes"] == {"rolled_back:probation_failed": 1}


def test_a_tampered_artifact_is_refused_with_hash_mismatch(cloud, sim, capsys) -> None:
    key = query(cloud, "SELECT artifact_key FROM releases WHERE version = 1")[0][0]
    path = cloud.artifacts / key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes: only the hash can tell
    path.write_bytes(bytes(data))

    fleet = sim(4)
    wait_online(cloud, 4)
    rollout = deploy(cloud, capsys, "digits@1", "100%")
    wait_for(lambda: statuses(cloud, rollout) == {"failed": 4}, 60, "every device refusing")
    assert {r[0] for r in query(cloud, "SELECT reason FROM rollout_devices")} == {"hash_mismatch"}
    assert (
        count(
            cloud,
            "SELECT COUNT(*) FROM updates WHERE phase = 'rejected' AND "
            "reason = 'hash_mismatch' AND rollout_id = ?",
            rollout,
        )
        == 4
    )
    assert {r[0] for r in query(cloud, "SELECT model_version FROM devices")} == {0}
    assert fleet.stop()["outcomes"] == {"rejected:hash_mismatch": 4}


def test_a_download_cut_halfway_resumes_with_a_range_request(tmp_path) -> None:
    (tmp_path / "m").mkdir()
    data = DIGITS.read_bytes()
    (tmp_path / "m" / "model.bin").write_bytes(data)
    server = ArtifactServer(tmp_path)
    server.start()
    try:
        url = f"{server.base_url}/m/model.bin"
        buf = bytearray()
        fetch_into(buf, url, len(data), stop_at=len(data) // 2)
        assert len(data) // 2 <= len(buf) < len(data)  # the link went down here
        seen: list[int] = []
        fetch_into(buf, url, len(data), progress=seen.append)
        assert bytes(buf) == data
        assert seen[0] > len(data) // 2  # went on from the prefix: the server honoured Range
        with pytest.raises(SizeExceeded):
            fetch_into(bytearray(), url, len(data) - 1)  # never past the signed size
    finally:
        server.stop()


def publish_as_outsider(env: CloudEnv, name: str, payload: bytes) -> None:
    """What someone holding a key (or forging a chain) publishes, retained, past the cloud."""
    link = CloudLink(load_cloud_config(env.config).mqtt, "outsider")
    link.start(timeout=10.0)
    try:
        link.publish(name, payload, retain=True)
    finally:
        link.stop()


def deploy_as_outsider(env: CloudEnv, key: SigningKey, version: int, device: str) -> None:
    """A deployment of stored release `version`, signed by `key`, straight onto `desired`."""
    release = json.loads(
        query(env, "SELECT envelope FROM releases WHERE version = ?", version)[0][0]
    )
    deployment = build_deployment(
        release=release,
        device_id=device,
        rollout_id=f"outside-{version}",
        keys=[key],
        now=datetime.now(UTC),
    )
    publish_as_outsider(
        env, f"litefleet/v1/devices/{device}/desired", json.dumps(deployment).encode()
    )


def root_versions(env: CloudEnv) -> list[tuple[int]]:
    return query(env, "SELECT DISTINCT root_version FROM devices WHERE profile = ?", PROFILE)


def model_version(env: CloudEnv, device: str) -> int:
    return count(env, "SELECT model_version FROM devices WHERE device_id = ?", device)


def test_simulated_devices_walk_the_root_chain_and_verify_with_the_new_keys(
    cloud: CloudEnv, sim: Callable[..., SimProcess], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = ["--config", str(cloud.config)]
    old = cloud.key
    (cloud.root / "keys" / "release.pub").write_text(old.public.hex)
    new = SigningKey.generate()
    (cloud.root / "k2").mkdir()
    save_signing_key(new, cloud.root / "k2" / "release.key")
    (cloud.root / "k2" / "release.pub").write_text(new.public.hex)
    fleet = sim(3)
    wait_online(cloud, 3)
    assert root_versions(cloud) == [(1,)]

    # root v2: the new release key in, the old one out (the old key still signs roots)
    assert (
        main(
            [
                "keys",
                "rotate",
                "--add",
                str(cloud.root / "k2" / "release.pub"),
                "--remove",
                str(cloud.root / "keys" / "release.pub"),
                "--sign",
                str(cloud.root / "keys" / "release.key"),
                *cfg,
            ]
        )
        == 0
    )
    # a forged chain first: the genuine v2, then a v3 for an outsider's release key signed by
    # that outsider alone. The whole walk is refused and every device keeps root v1 ...
    store = open_store(cloud.db)
    try:
        genuine = chain_message(store)
    finally:
        store.close()
    assert genuine is not None
    chain = json.loads(genuine)
    outsider = SigningKey.generate()
    forged = dict(chain["roots"][0]["signed"], version=3)
    forged["release_keys"] = {"keys": [outsider.public.hex], "threshold": 1}
    forged["root_keys"] = {"keys": [outsider.public.hex], "threshold": 1}
    chain["roots"].append(sign_envelope(forged, [outsider]))
    publish_as_outsider(cloud, "litefleet/v1/trust/root", json.dumps(chain).encode())
    wait_for(
        lambda: fleet.log.read_text().count("root chain refused: bad_signature") == 3,
        30,
        "every device refusing the forged chain",
    )
    # ... so a deployment signed by the old key is still committed (the v2 it refused would
    # have refused it)
    deploy_as_outsider(cloud, old, 2, "sim-0000")
    wait_for(lambda: model_version(cloud, "sim-0000") == 2, 60, "sim-0000 committing v2")
    assert root_versions(cloud) == [(1,)]

    # the genuine chain: every device walks to v2 and says so in a fresh retained state
    assert main(["trust", "publish", *cfg]) == 0
    wait_for(lambda: root_versions(cloud) == [(2,)], 30, "every device reporting root v2")
    capsys.readouterr()
    assert main(["trust", "status", "--json", *cfg]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["current"], status["behind"], status["behind_devices"]) == (3, 0, [])

    # the removed key is refused now (the control above: it was accepted under v1) ...
    deploy_as_outsider(cloud, old, 2, "sim-0001")
    wait_for(
        lambda: (
            count(
                cloud,
                "SELECT COUNT(*) FROM updates WHERE device_id = 'sim-0001' "
                "AND phase = 'rejected' AND reason = 'bad_signature'",
            )
            == 1
        ),
        30,
        "sim-0001 refusing the removed key",
    )
    assert model_version(cloud, "sim-0001") == 0
    # ... and a release signed by the new key is committed by every device
    cloud.config.write_text(cloud.config.read_text().replace("keys/release.key", "k2/release.key"))
    argv = ["release", str(DIGITS), "--name", "digits", "--version", "3", "--profile", PROFILE]
    assert main([*argv, *cfg]) == 0
    rollout = deploy(cloud, capsys, "digits@3", "100%")
    wait_for(lambda: statuses(cloud, rollout) == {"committed": 3}, 60, "every device committed v3")
    summary = fleet.stop()
    assert summary["roots"] == {"v2": 3}
    assert summary["models"] == {"digits@3": 3}
    outcomes = summary["outcomes"]
    assert outcomes["root_refused:bad_signature"] == 3 and outcomes["root:v2"] == 3
    assert summary["root_walks"] <= 4  # two chains from v1, a no-op or two from v2: shared
    wait_for(
        lambda: (
            query(cloud, "SELECT online, root_version, COUNT(*) FROM devices GROUP BY 1, 2")
            == [(0, 2, 3)]
        ),
        30,
        "every device's last state: offline, root v2",
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--devices", "0"], "--devices 0: between 1 and 20000"),
        (["--devices", "2", "--id-prefix", "bad/prefix"], "is not [A-Za-z0-9_-]"),
        (["--devices", "2", "--initial", "/nonexistent.tflite"], "--initial /nonexistent.tflite"),
        (["--devices", "2", "--trust-key", "zz"], "--trust-key"),
        (["--devices", "2", "--profile", "no-such-profile"], "no-such-profile"),
        (["--devices", "2", "--group", "a group"], "group name"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cloud_env, capsys, argv, message) -> None:
    assert main(["sim", *argv, "--config", str(cloud_env.config)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err


@pytest.mark.slow
def test_the_fleet_benchmark_prints_one_line_with_every_device_committed(tmp_path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "fleet.py"),
            "--devices",
            "20",
            "--duration",
            "1",
            "--backlog",
            "2",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["rollout_committed"] == result["rollout_delta_committed"] == 20
    assert result["telemetry_missing"] == 0 and result["telemetry_records"] > 0
    assert result["records_stored"] == result["records_sent"]
    assert result["controller_failover_s"] is None and "controller_failover_s" in result["note"]
