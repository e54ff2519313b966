"""Which root each device trusts, on both backends (SQLite and a real PostgreSQL): ingest keeps
the version a device's newest state reports on its row, `litefleet devices` shows it, and
`litefleet trust status` counts the devices per version and lists those behind the newest
stored root. States go through `write_batch` as the ingester writes them (encoded, then decoded
from their bytes, as they arrive from the broker)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.cli import main
from cloud.fleet import device_views
from cloud.ingest import IngestStats, write_batch
from cloud.store import Store, open_store
from localio.cli import EXIT_INVALID
from localio.keyfiles import save_signing_key
from shared.keys import SigningKey
from shared.messages import DeviceState, decode_message, encode_message
from tests.cloud.conftest import write_config
from tests.cloud.test_trust_cli import new_key


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    yield s
    s.close()


def write(store: Store, *states: DeviceState | bytes) -> None:
    """One ingest batch of these states (or raw state payloads), each decoded from its bytes."""
    batch = []
    for s in states:
        payload = s if isinstance(s, bytes) else encode_message(s)
        batch.append((decode_message(payload, now=time.time()), payload))
    with store.begin() as conn:
        write_batch(conn, batch, time.time(), IngestStats())


def state(device: str, ts: float, root_version: int) -> DeviceState:
    return DeviceState(device, True, ts, "0.9", "x86-gateway", root_version=root_version)


def older_agent(device: str, ts: float) -> bytes:
    """A state as an agent from before `root_version` sends it."""
    body = {
        "schema": "litefleet.state/1",
        "device_id": device,
        "online": True,
        "ts": ts,
        "agent_version": "0.8",
    }
    return json.dumps(body).encode()


def roots(store: Store) -> dict[str, int]:
    return {v["device_id"]: v["root_version"] for v in device_views(store, 60)}


def test_ingest_keeps_the_root_version_of_each_devices_newest_state(store: Store) -> None:
    now = time.time()
    write(
        store, state("cam-1", now - 30, 1), state("cam-2", now - 30, 1), older_agent("cam-3", now)
    )
    assert roots(store) == {"cam-1": 1, "cam-2": 1, "cam-3": 0}
    # a newer state raises it; an older copy arriving later (a retained state seen again)
    # changes nothing; a last will (offline, its ts older) leaves it too
    write(store, state("cam-1", now - 10, 2))
    write(store, state("cam-1", now - 20, 1))
    write(store, DeviceState("cam-1", False, now - 40))
    assert roots(store) == {"cam-1": 2, "cam-2": 1, "cam-3": 0}
    # the device's agent downgraded to one that does not report: not reported, not the old value
    write(store, older_agent("cam-2", now))
    assert roots(store)["cam-2"] == 0


def cli_config(store_url: str, root: Path) -> list[str]:
    """`--config` for a cloud.toml naming this store, with a signing key (root v1's)."""
    (root / "keys").mkdir(parents=True)
    save_signing_key(SigningKey.generate(), root / "keys" / "release.key")
    config = write_config(root, mqtt_port=1)
    config.write_text(config.read_text().replace('db = "cloud.db"', f'url = "{store_url}"'))
    return ["--config", str(config)]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, (argv, out, err)
    return out


def test_trust_status_counts_devices_per_root_and_lists_those_behind(
    store: Store, store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = time.time()
    write(
        store,
        state("cam-1", now, 2),
        state("cam-2", now, 1),
        older_agent("cam-3", now),
        state("cam-4", now, 2),
        state("cam-5", now, 1),
    )
    cfg = cli_config(store_url, tmp_path / "cloud")

    # no root stored: version 1 (the implicit root) is the newest; only the old agent is behind
    before = json.loads(run(capsys, "trust", "status", "--json", *cfg))
    assert (before["root_version"], before["stored"], before["behind"]) == (1, False, 1)
    assert [d["device_id"] for d in before["behind_devices"]] == ["cam-3"]

    _, _, pub = new_key(tmp_path / "k2")
    signer = str(tmp_path / "cloud" / "keys" / "release.key")
    run(capsys, "keys", "rotate", "--add", str(pub), "--sign", signer, *cfg)
    seen = json.loads(run(capsys, "trust", "status", "--json", *cfg))
    assert {k: seen[k] for k in ("root_version", "stored", "devices", "current", "behind")} == {
        "root_version": 2,
        "stored": True,
        "devices": 5,
        "current": 2,
        "behind": 3,
    }
    assert seen["versions"] == [
        {"root_version": 0, "devices": 1},
        {"root_version": 1, "devices": 2},
        {"root_version": 2, "devices": 2},
    ]
    # furthest behind first (not reported counts as behind), then by id
    assert [(d["device_id"], d["root_version"]) for d in seen["behind_devices"]] == [
        ("cam-3", 0),
        ("cam-2", 1),
        ("cam-5", 1),
    ]
    assert all(d["online"] and d["last_seen"] for d in seen["behind_devices"])

    text = run(capsys, "trust", "status", "--limit", "2", *cfg)
    assert text.splitlines()[:5] == [
        "newest root v2 (stored)",
        "  v2       2 device(s)",
        "  v1       2 device(s)",
        "  unknown  1 device(s) (agents that do not report their root)",
        "3 of 5 device(s) behind root v2",
    ]
    listed = [line.split()[:2] for line in text.splitlines() if line.startswith("cam-")]
    assert listed == [["cam-3", "unknown"], ["cam-2", "v1"]]
    assert text.splitlines()[-1] == "... and 1 more (--limit)"

    # the devices catch up: nobody is behind, nothing is listed
    write(store, state("cam-2", now + 1, 2), state("cam-3", now + 1, 2), state("cam-5", now + 1, 2))
    done = json.loads(run(capsys, "trust", "status", "--json", *cfg))
    assert (done["current"], done["behind"], done["behind_devices"]) == (5, 0, [])
    assert run(capsys, "trust", "status", *cfg).splitlines()[-1] == (
        "every device (5) reports root v2"
    )

    assert main(["trust", "status", "--limit", "-1", *cfg]) == EXIT_INVALID
    err = capsys.readouterr().err
    assert err == "error: --limit -1: give 0 or more\n"


def test_litefleet_devices_has_a_root_column(
    store: Store, store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = time.time()
    write(store, state("cam-1", now, 3), older_agent("cam-2", now))
    cfg = cli_config(store_url, tmp_path / "cloud")
    text = run(capsys, "devices", *cfg)
    header, *rows = [re.split(r"\s{2,}", line.strip()) for line in text.splitlines()]
    column = header.index("root")
    assert {r[0]: r[column] for r in rows if r[0].startswith("cam-")} == {
        "cam-1": "v3",
        "cam-2": "-",
    }
    listed = json.loads(run(capsys, "devices", "--json", *cfg))
    assert {v["device_id"]: v["root_version"] for v in listed} == {"cam-1": 3, "cam-2": 0}
