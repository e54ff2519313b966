"""The ingest writer's check-and-write step on a real SQLite store, fed hostile batches on every
channel: it never raises, and each message ends up stored, a duplicate, or quarantined."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud.config import load_cloud_config
from cloud.ingest import Ingester
from cloud.store import open_store
from shared.errors import LiteFleetError
from shared.messages import DeviceState, Event, TelemetryRecord, UpdateStatus, decode_message
from shared.topics import Channel, topic
from tests.cloud.conftest import write_config
from tests.fuzz.conftest import FUZZ_STORE
from tests.fuzz.strategies import DEVICES, encode, message_body, mutated

CHANNEL_OF = {
    DeviceState: Channel.STATE,
    TelemetryRecord: Channel.TELEMETRY,
    Event: Channel.EVENTS,
    UpdateStatus: Channel.UPDATE,
}
TABLE_OF = {TelemetryRecord: "telemetry", Event: "events", UpdateStatus: "updates"}


def payloads_for(cls) -> st.SearchStrategy[bytes]:
    body = message_body(cls).map(encode)
    return body | mutated(body) | st.binary(max_size=64)


PAYLOADS = {cls: payloads_for(cls) for cls in CHANNEL_OF}


@st.composite
def items(draw: st.DrawFn):
    cls = draw(st.sampled_from(list(CHANNEL_OF)))
    channel = CHANNEL_OF[cls] if draw(st.integers(0, 9)) else draw(st.sampled_from(list(Channel)))
    name = topic(draw(st.sampled_from(DEVICES)), channel).encode()
    if not draw(st.integers(0, 19)):
        name = draw(st.binary(max_size=40) | st.just(b"litefleet/v1/devices/+/state"))
    return (name, draw(PAYLOADS[cls]), 1, 1)


@pytest.fixture(scope="module")
def writer(tmp_path_factory):
    root: Path = tmp_path_factory.mktemp("ingest-fuzz")
    ingester = Ingester(load_cloud_config(write_config(root)))  # not started: no broker
    db = open_store(root / "cloud.db")
    yield ingester, db
    db.close()


def _quarantined(db, sha: str) -> bool:
    return db.execute("SELECT 1 FROM quarantine WHERE sha256 = ?", [sha]).fetchone() is not None


def _stored(db, payload: bytes) -> bool:
    try:
        m = decode_message(payload)
    except LiteFleetError:
        return False
    table = TABLE_OF.get(type(m))
    if table is None:  # a state: the device's row
        return (
            db.execute("SELECT 1 FROM devices WHERE device_id = ?", [m.device_id]).fetchone()
            is not None
        )
    return (
        db.execute(
            f"SELECT 1 FROM {table} WHERE device_id = ? AND seq = ?", [m.device_id, m.seq]
        ).fetchone()
        is not None
    )


def test_every_message_is_stored_a_duplicate_or_quarantined(writer) -> None:
    ingester, db = writer

    @FUZZ_STORE
    @given(st.lists(items(), min_size=1, max_size=8))
    def check(batch) -> None:
        before = ingester.snapshot()
        quarantine_before = db.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0]
        assert ingester.write(db, batch)  # never raises; committed
        after = ingester.snapshot()
        delta = {k: after[k] - before[k] for k in after}
        assert delta["received"] == len(batch)
        assert delta["stored"] + delta["duplicates"] + delta["quarantined"] == len(batch)
        quarantine_now = db.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0]
        assert quarantine_now - quarantine_before == delta["quarantined"]
        for _, payload, _, _ in batch:
            sha = hashlib.sha256(payload).hexdigest()
            assert _quarantined(db, sha) or _stored(db, payload)

    check()
