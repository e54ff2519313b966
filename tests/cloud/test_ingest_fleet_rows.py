"""What ingest keeps on rows for the fleet views, on both backends (SQLite and a real
PostgreSQL): each rollout device's download bytes, and each device's latest drift figures and
variant choice. Messages go through `write_batch` as the ingester writes them (encoded, then
decoded from their bytes, as they arrive from the broker)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.cli import main
from cloud.fleet import device_views, rollout_views
from cloud.ingest import IngestStats, write_batch
from cloud.rollout import tick_rollouts
from cloud.store import Store, open_store
from cloud.store import rollouts as rs
from shared.messages import (
    DeviceState,
    DriftSummary,
    Event,
    Message,
    ModelIdentity,
    TelemetryRecord,
    UpdateStatus,
    decode_message,
    encode_message,
)
from tests.cloud.conftest import CloudEnv, write_config

MB = 1_000_000
MIB = 1 << 20


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    yield s
    s.close()


def write(store: Store, *messages: Message) -> None:
    """One ingest batch of these messages, each decoded from its own bytes."""
    batch = []
    for m in messages:
        payload = encode_message(m)
        batch.append((decode_message(payload, now=time.time()), payload))
    with store.begin() as conn:
        write_batch(conn, batch, time.time(), IngestStats())


def rollout(store: Store, devices: list[str]) -> str:
    with store.begin() as conn:
        rs.insert_rollout(
            conn,
            {
                "id": "r-1",
                "release_name": "digits",
                "release_version": 2,
                "waves": json.dumps(["100%"]),
                "success_threshold_pct": 100,
                "max_failures_pct": 100,
            },
            [(d, 0, f'{{"to": "{d}"}}') for d in devices],
            time.time(),
        )
    tick_rollouts(store, lambda d, p: None)  # the wave goes out: every device pending
    return "r-1"


def status(device: str, seq: int, phase: str, done: int = 0, total: int = 0) -> UpdateStatus:
    return UpdateStatus(
        device,
        seq,
        time.time(),
        "r-1",
        phase,
        "digits",
        2,
        "cd" * 32,
        bytes_done=done,
        bytes_total=total,
        via="full",
    )


def figures(store: Store, rid: str) -> dict[str, tuple[int, int]]:
    return {r["device_id"]: (r["bytes_done"], r["bytes_total"]) for r in rs.device_rows(store, rid)}


def test_each_rollout_device_keeps_its_newest_reports_bytes(store: Store) -> None:
    rid = rollout(store, ["a", "b", "c", "d"])
    write(store, status("a", 1, "downloading", 0, 4 * MB), status("b", 1, "downloading", 0, MB))
    write(store, status("a", 2, "downloading", MB, 4 * MB), status("b", 2, "downloading", MB, MB))
    write(store, status("b", 3, "verifying", MB, MB), status("c", 1, "downloading", 0, 2 * MB))
    assert figures(store, rid) == {"a": (MB, 4 * MB), "b": (MB, MB), "c": (0, 2 * MB), "d": (0, 0)}
    # an older report arriving late (a resend) changes nothing; in one batch, the newest wins
    write(store, status("a", 3, "downloading", 3 * MB, 4 * MB), status("a", 1, "downloading", 0, 1))
    write(
        store, status("c", 3, "downloading", MB, 2 * MB), status("c", 2, "downloading", 5, 2 * MB)
    )
    write(store, status("b", 1, "downloading", 0, MB))  # alone in its batch: still older
    # a device's figure above its total is held to it (the total is what it says it fetches)
    write(store, status("d", 1, "downloading", 9 * MB, 3 * MB))
    assert figures(store, rid) == {
        "a": (3 * MB, 4 * MB),
        "b": (MB, MB),
        "c": (MB, 2 * MB),
        "d": (3 * MB, 3 * MB),
    }

    # the summed downloads, as `litefleet rollouts ID` and its --json give them
    view = rollout_views(store, rid)[0]
    assert (view["downloading"], view["bytes_done"], view["bytes_total"]) == (
        3,  # a, c, d: b is verifying
        7 * MB,
        9 * MB,
    )
    assert {d["device_id"] for d in view["downloads"]} == {"a", "c", "d"}

    # no total: a downloading report leaves the figures, a phase past downloading finishes
    # them, an idle (stopped) attempt keeps how far it got
    write(store, status("a", 4, "downloading"), status("c", 4, "idle"))
    assert figures(store, rid)["a"] == (3 * MB, 4 * MB)
    assert figures(store, rid)["c"] == (MB, 2 * MB)
    write(store, status("a", 5, "staged"), status("a", 6, "probation"))
    assert figures(store, rid)["a"] == (4 * MB, 4 * MB)
    write(store, status("a", 7, "committed"))
    assert figures(store, rid)["a"] == (4 * MB, 4 * MB)
    assert rs.status_counts(store, rid)["committed"] == 1
    # a report for another rollout (or none) touches nothing here
    other = UpdateStatus("d", 2, time.time(), "r-2", "downloading", bytes_done=1, bytes_total=2)
    write(store, other)
    assert figures(store, rid)["d"] == (3 * MB, 3 * MB)


def drift(score: float, feature: str = "input.c0") -> DriftSummary:
    return DriftSummary(score=score, feature=feature, threshold=0.25, samples=300)


def test_drift_and_variant_go_on_the_device_row(store: Store) -> None:
    now = time.time()
    write(
        store,
        TelemetryRecord("cam-1", 1, now - 30, drift=drift(0.05)),
        TelemetryRecord("cam-1", 2, now - 20, drift=drift(1.42, "output.class")),
        TelemetryRecord("cam-2", 1, now - 20, drift=drift(0.03)),
        TelemetryRecord("cam-3", 1, now - 20),  # no reference profile: nothing known
    )
    views = {v["device_id"]: v for v in device_views(store, 60)}
    assert views["cam-1"]["drift"] == {
        "score": 1.42,
        "feature": "output.class",
        "threshold": 0.25,
        "samples": 300,
        "ts": now - 20,
        "model_sha256": None,  # the record named no model
    }
    assert views["cam-1"]["drifting"] is True
    assert views["cam-2"]["drift"]["score"] == 0.03 and views["cam-2"]["drifting"] is False
    assert views["cam-3"]["drift"] is None and views["cam-3"]["drifting"] is False
    # an older record arriving later (an outbox resend) changes nothing; a newer record
    # without drift figures leaves the last known ones; a newer one with them replaces them
    write(store, TelemetryRecord("cam-1", 3, now - 25, drift=drift(0.01)))
    write(store, TelemetryRecord("cam-1", 4, now - 10))
    assert device_views(store, 60)[0]["drift"]["score"] == 1.42
    write(store, TelemetryRecord("cam-1", 5, now - 5, drift=drift(0.02)))
    cam1 = device_views(store, 60)[0]
    assert cam1["drift"]["score"] == 0.02 and cam1["drifting"] is False

    chosen = {"release": "digits@2", "chosen": "fast", "sha256": "ab" * 32, "reason": "fastest"}
    write(
        store,
        Event("cam-1", 7, now - 4, "variant", {**chosen, "chosen": "release"}),
        Event("cam-1", 8, now - 3, "variant", chosen),
        Event("cam-1", 9, now - 2, "inference", {"label": "7"}),
    )
    assert device_views(store, 60)[0]["variant"] == chosen
    # a redelivered older variant event (a seq below the stored one's) changes nothing
    write(store, Event("cam-1", 6, now - 5, "variant", {**chosen, "chosen": "slow"}))
    assert device_views(store, 60)[0]["variant"] == chosen
    assert {v["device_id"]: v["variant"] for v in device_views(store, 60)}["cam-2"] is None


A = ModelIdentity("digits", 2, "aa" * 32)
B = ModelIdentity("digits", 3, "bb" * 32)  # no reference profile: its records bring no figures


def cli_drift(store_url: str, root: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    """The drift column of `litefleet devices`, per device, with a config naming the store."""
    root.mkdir(exist_ok=True)
    config = write_config(root, mqtt_port=1)
    config.write_text(config.read_text().replace('db = "cloud.db"', f'url = "{store_url}"'))
    assert main(["devices", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    columns: dict[str, str] = {}
    for line in out.splitlines():
        cells = line.split()
        if cells and cells[0].startswith("cam-"):
            columns[cells[0]] = re.split(r"\s{2,}", line.strip())[8]
    assert main(["devices", "--json", "--config", str(config)]) == 0
    listed = {v["device_id"]: v for v in json.loads(capsys.readouterr().out)}
    assert listed.keys() == columns.keys()
    for device, view in listed.items():  # the table and --json agree
        assert (view["drift"] is None) == (columns[device] == "-"), device
    return columns


def test_drift_of_a_model_the_device_left_is_cleared(
    store: Store, store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = time.time()
    write(
        store,
        TelemetryRecord("cam-1", 1, now - 30, model=A, drift=drift(1.42)),
        TelemetryRecord("cam-2", 1, now - 30, model=A, drift=drift(0.8)),
        TelemetryRecord("cam-3", 1, now - 30, model=A, drift=drift(0.6)),
        TelemetryRecord("cam-4", 1, now - 30, model=A, drift=drift(0.5)),
    )
    before = cli_drift(store_url, tmp_path / "cli", capsys)
    assert before == {
        "cam-1": "1.42! input.c0",
        "cam-2": "0.80! input.c0",
        "cam-3": "0.60! input.c0",
        "cam-4": "0.50! input.c0",
    }

    write(store, TelemetryRecord("cam-1", 2, now - 20, model=B))  # moved to B: cleared
    write(store, TelemetryRecord("cam-2", 2, now - 20, model=A))  # same model: kept
    write(store, DeviceState("cam-3", True, now - 20, model=B))  # its state names B: cleared
    write(store, TelemetryRecord("cam-4", 2, now - 20))  # names no model: kept
    # in one batch, figures on A then a newer record on B
    write(
        store,
        TelemetryRecord("cam-5", 1, now - 30, model=A, drift=drift(0.9)),
        TelemetryRecord("cam-5", 2, now - 20, model=B),
    )

    views = {v["device_id"]: v for v in device_views(store, 60)}
    assert (views["cam-1"]["drift"], views["cam-1"]["drifting"]) == (None, False)
    assert views["cam-2"]["drift"]["score"] == 0.8 and views["cam-2"]["drifting"] is True
    assert views["cam-2"]["drift"]["model_sha256"] == A.sha256
    assert (views["cam-3"]["drift"], views["cam-3"]["drifting"]) == (None, False)
    assert views["cam-4"]["drift"]["score"] == 0.5
    assert (views["cam-5"]["drift"], views["cam-5"]["drifting"]) == (None, False)
    assert cli_drift(store_url, tmp_path / "cli", capsys) == {
        "cam-1": "-",
        "cam-2": "0.80! input.c0",
        "cam-3": "-",
        "cam-4": "0.50! input.c0",
        "cam-5": "-",
    }

    # a late resend of A's figures stays out while the state names B; B's own figures show
    write(store, TelemetryRecord("cam-3", 0, now - 40, model=A, drift=drift(0.7)))
    write(store, TelemetryRecord("cam-1", 3, now - 10, model=B, drift=drift(0.1)))
    views = {v["device_id"]: v for v in device_views(store, 60)}
    assert views["cam-3"]["drift"] is None
    assert views["cam-1"]["drift"]["model_sha256"] == B.sha256
    assert views["cam-1"]["drifting"] is False
    # an older record on A arriving after B's figures changes nothing
    write(store, TelemetryRecord("cam-1", 1, now - 30, model=A, drift=drift(1.42)))
    assert {v["device_id"]: v for v in device_views(store, 60)}["cam-1"]["drift"]["score"] == 0.1


def test_litefleet_rollouts_id_names_each_download_under_way(cloud_env: CloudEnv, capsys) -> None:
    db = open_store(cloud_env.db)
    try:
        rid = rollout(db, ["a", "b"])
        write(db, status("a", 1, "downloading", 3 * MIB // 2, 4 * MIB), status("b", 1, "committed"))
    finally:
        db.close()
    assert main(["rollouts", rid, "--config", str(cloud_env.config)]) == 0
    out = capsys.readouterr().out
    assert "a: downloading 1.5 MiB of 4.0 MiB" in out
    assert "1 (1.5 MiB of 4.0 MiB)" in out  # the table's downloading column
    assert "b: downloading" not in out  # committed: not under way
    assert main(["rollouts", rid, "--json", "--config", str(cloud_env.config)]) == 0
    (view,) = json.loads(capsys.readouterr().out)
    assert view["downloads"] == [
        {"device_id": "a", "wave": 1, "bytes_done": 3 * MIB // 2, "bytes_total": 4 * MIB}
    ]
