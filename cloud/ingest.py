"""The ingester: device messages from the broker into the cloud store, each stored once.

Two threads in one process:

    network   paho's thread, with `cloud.mqtt_receive.ReceiveClient` (buffered reads, no
              MQTT 5 property parsing): appends each `(topic, payload, mid, qos)` to a
              bounded queue (a deque: no lock per message). When the queue is full it waits,
              which stops reading from the socket: back-pressure reaches the broker, which
              holds the messages; with MQTT 5 the session's receive maximum also bounds what
              the broker sends unacknowledged.
    writer    drains the queue in batches (`ingest.batch_max`, `ingest.batch_wait_s`), checks
              each message (topic, size, schema, device id; parsed topic names are cached)
              and writes the batch in one transaction:

    telemetry / events / updates   stored once per (device_id, seq) (ON CONFLICT DO NOTHING):
                                   a redelivered or resent record is counted as a duplicate
    state                          in arrival order: the device row when newer than what is
                                   stored; `online: false` (a last will) whatever its ts
                                   (with several ingesters sharing the topics, see
                                   docs/scale.md: a will may be applied after the
                                   reconnected device's first state; its next telemetry
                                   marks it online again)
    updates                        also move the device's row in its rollout (outcomes,
                                   download bytes: `cloud.store.rollouts.record_reports`)
    drift, variant                 the newest drift figures (telemetry) and `variant` event
                                   go on the device's row (`cloud.store.devices`), so the
                                   fleet views read one table; drift is cleared when a newer
                                   record or state names another model (`cloud.store.drift`)

Messages are acknowledged to the broker (manual QoS 1 acks, one write per batch) only after
their batch commits, so an ingester that dies loses nothing: the broker redelivers to the
persistent session.

Nothing a device sends can stop the writer. Each message is stored, counted as a duplicate,
or quarantined (`cloud.quarantine`: a dead letter with its reason, written in the same
transaction) and then acknowledged like the others: anything malformed, out of the contract's
bounds (`shared.messages`), of an unknown schema, of the wrong kind for its topic or naming
another device; anything the parser fails on unexpectedly (`internal_error`); and a message the
store itself refuses (`store_error`: the batch is then written again one message at a time, so
only the offender is set aside). A store that does not answer (busy, restarting, unreachable)
holds the batch: it is retried, with a warning a minute, until the store answers, its acks
waiting meanwhile (the broker keeps what follows in the session). Anything else (a store that is corrupt or refuses
even a dead letter, a bug) ends the writer: it logs the error, and `on_death` tells the service,
which exits non-zero so that systemd restarts it.

Cost: about 35-40 us of CPU per telemetry record on a busy 2-core test machine (receiving,
JSON, the message check with the contract's bounds, the store; the bounds take 3-5 us of it), so
one process stores several thousand records a second; `benchmarks/ingest.py` measures it
against `mosquitto_sub`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection
from sqlalchemy import exc as sa_exc

from cloud.config import CloudConfig, CloudRole
from cloud.ingest_queue import Handoff as _Handoff
from cloud.ingest_queue import Item
from cloud.mqtt import CloudLink
from cloud.quarantine import DeadLetter, Reason, write_dead_letters
from cloud.store import Store, add_counter, describe_error, open_store
from cloud.store import devices as device_rows
from cloud.store.drift import Drift, ModelSeen
from cloud.store.records import insert_new
from cloud.store.rollouts import Report, record_reports
from cloud.store.rollup import add_records
from shared.errors import LiteFleetError
from shared.messages import (
    DeviceState,
    Event,
    Message,
    TelemetryRecord,
    UpdateStatus,
    decode_message,
)
from shared.topics import Channel, ParsedTopic, fleet_subscription, parse_topic

__all__ = ["IngestStats", "Ingester", "write_batch"]

log = logging.getLogger(__name__)
_CHANNELS = (Channel.STATE, Channel.TELEMETRY, Channel.EVENTS, Channel.UPDATE)
_EXPECTED: dict[Channel, type[Any]] = {
    Channel.STATE: DeviceState,
    Channel.TELEMETRY: TelemetryRecord,
    Channel.EVENTS: Event,
    Channel.UPDATE: UpdateStatus,
}
STORE_RETRY_MAX_S = 5.0  # the longest wait between attempts at a batch the store refused
STORE_WARN_EVERY_S = 60.0  # one warning a minute while the store does not answer
_TOPIC_CACHE_MAX = 65_536  # parsed topic names kept (4 per device); emptied when full
# what the store raises for one message's values (a number the store cannot hold, text it
# cannot encode, a constraint): that message is quarantined; any other store error is the store's
_DATA_ERRORS = (
    sa_exc.IntegrityError,
    sa_exc.DataError,
    sa_exc.InterfaceError,
    sa_exc.ProgrammingError,
    OverflowError,
    ValueError,
    TypeError,
)
_TRACEBACK_EVERY_S = 60.0  # unexpected parser failures: one traceback a minute in the log
_LOG_WINDOW_S, _LOG_LINES = 60.0, 20  # quarantined messages logged one by one, then summed up


@dataclass
class IngestStats:
    received: int = 0
    stored: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)  # by reason
    batches: int = 0
    store_retries: int = 0  # attempts at a batch that the store did not answer

    def add(self, other: IngestStats) -> None:
        self.stored.update(other.stored)
        self.duplicates += other.duplicates
        self.quarantined.update(other.quarantined)


def _shown(name: bytes) -> str:
    return name.decode("utf-8", "backslashreplace")


class _Decoder:
    """Turns (topic, payload) into a checked message, or a dead letter saying why not."""

    def __init__(self, prefix: str, max_bytes: int) -> None:
        self.prefix, self.max_bytes = prefix, max_bytes
        self._topics: dict[bytes, ParsedTopic] = {}
        self._last_traceback = 0.0
        self._window_start, self._logged, self._unlogged = 0.0, 0, 0

    def _topic(self, name: bytes) -> ParsedTopic:
        parsed = self._topics.get(name)
        if parsed is None:
            parsed = parse_topic(name.decode("utf-8", "replace"), self.prefix)
            if len(self._topics) >= _TOPIC_CACHE_MAX:
                self._topics.clear()
            self._topics[name] = parsed
        return parsed

    def __call__(self, name: bytes, payload: bytes, now: float) -> Message | DeadLetter:
        device = ""
        try:
            parsed = self._topic(name)
            device = parsed.device_id
            message: Message = decode_message(payload, self.max_bytes, now=now)
        except LiteFleetError as e:
            return self._refuse(name, payload, e.reason, str(e), device)
        except Exception as e:  # a parser bug must not stop the writer: quarantined too
            if time.monotonic() - self._last_traceback > _TRACEBACK_EVERY_S:
                self._last_traceback = time.monotonic()
                log.exception("the parser failed on a message on %s", _shown(name))
            return self._refuse(
                name, payload, Reason.INTERNAL_ERROR, f"{type(e).__name__}: {e}", device
            )
        if type(message) is not _EXPECTED.get(parsed.channel):
            return self._refuse(
                name, payload, Reason.WRONG_CHANNEL, f"a {type(message).__name__} message", device
            )
        if message.device_id != device:
            return self._refuse(
                name, payload, Reason.WRONG_DEVICE, f"names device {message.device_id!r}", device
            )
        return message

    def _refuse(
        self, name: bytes, payload: bytes, reason: str, detail: str, device: str
    ) -> DeadLetter:
        """A dead letter, logged: one line each up to `_LOG_LINES` a minute (a device that
        floods garbage must not flood the journal), then how many more."""
        now = time.monotonic()
        if now - self._window_start >= _LOG_WINDOW_S:
            if self._unlogged:
                log.warning(
                    "quarantined %s more message(s) in the last minute "
                    "(`litefleet quarantine` lists them)",
                    self._unlogged,
                )
            self._window_start, self._logged, self._unlogged = now, 0, 0
        if self._logged < _LOG_LINES:
            self._logged += 1
            log.warning("quarantined a message on %s (%s): %s", _shown(name), reason, detail[:200])
        else:
            self._unlogged += 1
        return DeadLetter(name, payload, reason, detail, device)


def write_batch(
    conn: Connection, messages: list[tuple[Message, bytes]], now: float, stats: IngestStats
) -> None:
    """Write decoded messages (with their payloads) in one transaction (the caller's)."""
    # rows as tuples in the tables' column order (`cloud.store.records.columns`)
    rows: dict[str, list[tuple[Any, ...]]] = {"telemetry": [], "events": [], "updates": []}
    states: list[dict[str, Any]] = []  # in arrival order
    latest: dict[str, TelemetryRecord] = {}
    drifts: dict[str, Drift] = {}  # newest drift summary per device
    seen_models: dict[str, ModelSeen] = {}  # newest model named per device (records, states)
    variants: dict[str, tuple[int, str]] = {}  # newest `variant` event per device: seq, detail
    reports: list[Report] = []
    seen: set[str] = set()
    talking: set[str] = set()  # sent something other than state: connected right now
    for m, payload in messages:
        seen.add(m.device_id)
        if not isinstance(m, DeviceState):
            talking.add(m.device_id)
        if isinstance(m, TelemetryRecord):
            model = m.model
            rows["telemetry"].append(
                (
                    m.device_id,
                    m.seq,
                    m.ts,
                    now,
                    model.name if model else None,
                    model.version if model else None,
                    model.sha256 if model else None,
                    m.fps,
                    m.latency_p95_ms,
                    m.inferences,
                    m.errors,
                    payload.decode("utf-8"),
                )
            )
            prev = latest.get(m.device_id)
            if prev is None or m.ts >= prev.ts:
                latest[m.device_id] = m
            held = drifts.get(m.device_id)
            if m.drift is not None and (held is None or m.ts >= held.ts):
                drifts[m.device_id] = Drift(
                    m.ts, dataclasses.asdict(m.drift), model.sha256 if model else None
                )
            if model is not None:
                _saw_model(seen_models, m.device_id, ModelSeen(m.ts, model.sha256))
        elif isinstance(m, Event):
            detail = json.dumps(m.detail)
            rows["events"].append((m.device_id, m.seq, m.ts, now, m.kind, detail))
            if m.kind == "variant":
                chosen = variants.get(m.device_id)
                if chosen is None or m.seq > chosen[0]:
                    variants[m.device_id] = (m.seq, detail)
        elif isinstance(m, UpdateStatus):
            rows["updates"].append(
                (
                    m.device_id,
                    m.seq,
                    m.ts,
                    now,
                    m.rollout_id,
                    m.phase,
                    m.model,
                    m.version,
                    m.sha256,
                    m.reason,
                    m.detail,
                    m.via,
                )
            )
            reports.append(
                Report(
                    m.device_id,
                    m.rollout_id,
                    m.seq,
                    m.phase,
                    m.reason,
                    m.bytes_done,
                    m.bytes_total,
                )
            )
        elif isinstance(m, DeviceState):
            model = m.model
            states.append(
                {
                    "device_id": m.device_id,
                    "state_ts": m.ts,
                    "online": int(m.online),
                    "profile": m.profile,
                    "agent_version": m.agent_version,
                    "model_name": model.name if model else None,
                    "model_version": model.version if model else None,
                    "model_sha256": model.sha256 if model else None,
                    "update_phase": m.update_phase,
                    "source_status": m.source_status,
                    "fps": m.fps,
                    "root_version": m.root_version,
                }
            )
            if model is not None:
                _saw_model(seen_models, m.device_id, ModelSeen(m.ts, model.sha256))
    # a device marked offline for silence is back as soon as it talks; its state, written
    # below, still has the last word within this batch (a last will says offline)
    device_rows.touch_devices(conn, seen, talking, now)
    for table, table_rows in rows.items():
        if not table_rows:
            continue
        stored = insert_new(conn, table, table_rows)
        if table == "telemetry":
            add_records(conn, table_rows, all_new=stored == len(table_rows))
        stats.stored[table] += stored
        stats.duplicates += len(table_rows) - stored
        add_counter(conn, f"stored.{table}", stored)
        add_counter(conn, "duplicates", len(table_rows) - stored)
    stats.stored["state"] += len(states)  # applied, or older than the state already stored
    add_counter(conn, "stored.state", len(states))
    # a last will's ts is its connection's start, older than the states sent on that
    # connection: its offline stands until the device is heard from again
    device_rows.apply_states(conn, states)
    device_rows.apply_fps(
        conn,
        [{"d": t.device_id, "v_fps": t.fps, "v_p95": t.latency_p95_ms} for t in latest.values()],
    )
    device_rows.apply_drift(conn, drifts, seen_models)
    device_rows.apply_variants(
        conn, [{"d": d, "seq": seq, "v": v} for d, (seq, v) in variants.items()]
    )
    record_reports(conn, reports, now)
    stats.batches += 1


def _saw_model(seen: dict[str, ModelSeen], device_id: str, report: ModelSeen) -> None:
    held = seen.get(device_id)
    if held is None or report.ts >= held.ts:
        seen[device_id] = report


class Ingester:
    """Subscribes to every device's state, telemetry, events and update topics; `shared`:
    as one of several ingesters (an MQTT shared subscription, `$share/<share_group>/...`: the
    broker hands each message to one of them).

    `on_death(worker, error)` is called if the writer ends for any reason but `stop()`.
    """

    def __init__(
        self,
        config: CloudConfig,
        client_id: str | None = None,
        on_death: Callable[[str, BaseException], None] | None = None,
        shared: bool = False,
    ) -> None:
        self.config = config
        self.stats = IngestStats()
        self._queue = _Handoff(config.ingest.queue_max)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._on_death = on_death
        prefix = config.mqtt.topic_prefix
        self._decode = _Decoder(prefix, config.mqtt.max_payload_bytes)  # the writer's own
        self.link = CloudLink(
            config.mqtt,
            client_id or f"{config.mqtt.client_id}-ingest",
            persistent=True,
            subscriptions=tuple(
                f"$share/{config.ingest.share_group}/{fleet_subscription(c, prefix)}"
                if shared
                else fleet_subscription(c, prefix)
                for c in _CHANNELS
            ),
            on_raw=self._enqueue,
            manual_ack=True,
            receive_maximum=min(65535, config.ingest.queue_max),
            role=CloudRole.INGEST,
        )
        self._writer = threading.Thread(target=self._run, name="ingest-writer", daemon=True)

    def _enqueue(self, name: bytes, payload: bytes, mid: int, qos: int) -> None:
        self._queue.put((name, payload, mid, qos), self._stop)

    def start(self, connect_timeout: float | None = 10.0) -> None:
        self._writer.start()
        self.link.start(connect_timeout)

    def stop(self, timeout: float = 10.0) -> None:
        self.link.stop()
        self._stop.set()
        self._writer.join(timeout)

    @property
    def writing(self) -> bool:
        """Whether the writer thread runs."""
        return self._writer.is_alive()

    def _commit(
        self,
        store: Store,
        messages: list[tuple[Message, bytes]],
        topics: list[bytes],
        letters: list[DeadLetter],
        now: float,
    ) -> IngestStats:
        """One transaction for the batch and its dead letters. When the store refuses a
        message's values, the batch is written again one message at a time (a savepoint
        each) and the offenders join the dead letters."""
        written = IngestStats()
        try:
            with store.begin() as conn:
                write_batch(conn, messages, now, written)
                write_dead_letters(conn, letters, now)
            written.quarantined.update(letter.reason for letter in letters)
            return written
        except _DATA_ERRORS as e:
            log.warning(
                "the store refused a message in a batch of %s (%s); writing them one at a time",
                len(messages),
                describe_error(e),
            )
        written, letters = IngestStats(), list(letters)
        with store.begin() as conn:  # the savepoints below nest in this one transaction
            for (message, payload), name in zip(messages, topics, strict=True):
                one = IngestStats()
                savepoint = conn.begin_nested()
                try:
                    write_batch(conn, [(message, payload)], now, one)
                except _DATA_ERRORS as e:
                    savepoint.rollback()
                    why = describe_error(e)
                    log.warning(
                        "quarantined a message on %s (%s): %s",
                        _shown(name),
                        Reason.STORE_ERROR,
                        why,
                    )
                    letters.append(
                        DeadLetter(name, payload, Reason.STORE_ERROR, why, message.device_id)
                    )
                else:
                    savepoint.commit()
                    written.add(one)
            write_dead_letters(conn, letters, now)
        written.quarantined.update(letter.reason for letter in letters)
        return written

    def _store(
        self,
        store: Store,
        messages: list[tuple[Message, bytes]],
        topics: list[bytes],
        letters: list[DeadLetter],
        received: int,
    ) -> bool:
        """Write one batch, retrying while the store does not answer (its acks wait: the
        broker holds everything after it); False only if `stop()` came first."""
        attempt, warned = 0, -math.inf
        while True:
            try:
                written = self._commit(store, messages, topics, letters, time.time())
            except sa_exc.OperationalError as e:
                attempt += 1
                with self._lock:
                    self.stats.store_retries += 1
                if time.monotonic() - warned >= STORE_WARN_EVERY_S:
                    warned = time.monotonic()
                    log.warning(
                        "store unavailable (%s): a batch of %d message(s) waits for it, "
                        "retried until it answers",
                        describe_error(e),
                        received,
                    )
                if self._stop.wait(min(STORE_RETRY_MAX_S, 0.2 * attempt)):
                    with self._lock:
                        self.stats.received += received
                    log.error(
                        "stopping with %d message(s) not stored: they stay unacknowledged "
                        "and the broker gives them to the next ingester",
                        received,
                    )
                    return False
                continue
            with self._lock:  # one step: a snapshot never sees a batch half counted
                self.stats.received += received
                self.stats.add(written)
                self.stats.batches += 1
            if attempt:
                log.info("store answering again after %d attempt(s): batch stored", attempt + 1)
            return True

    def _run(self) -> None:
        try:
            self._write_until_stopped()
        except BaseException as e:  # anything: the service must not live on without a writer
            log.exception("the ingest writer stopped")
            if self._on_death is not None:
                self._on_death("the ingest writer", e)

    def write(self, store: Store, batch: list[Item]) -> bool:
        """Check and store one batch (the writer's step); True once it is committed, when
        every message in it is stored, a duplicate or quarantined."""
        now = time.time()
        messages: list[tuple[Message, bytes]] = []
        topics: list[bytes] = []
        letters: list[DeadLetter] = []
        for name, payload, _, _ in batch:
            m = self._decode(name, payload, now)
            if isinstance(m, DeadLetter):
                letters.append(m)
            else:
                messages.append((m, payload))
                topics.append(name)
        return self._store(store, messages, topics, letters, len(batch))

    def _write_until_stopped(self) -> None:
        store = open_store(self.config.store)
        try:
            cfg = self.config.ingest
            while not (self._stop.is_set() and not self._queue):
                batch = self._queue.take(cfg.batch_max, cfg.batch_wait_s)
                if not batch or not self.write(store, batch):
                    continue
                self.link.ack_many(mid for _, _, mid, qos in batch if qos == 1)
                for _, _, mid, qos in batch:
                    if qos > 1:
                        self.link.ack(mid, qos)
        finally:
            store.close()

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            quarantined = sum(self.stats.quarantined.values())
            return {
                "received": self.stats.received,
                "stored": sum(self.stats.stored.values()),
                "duplicates": self.stats.duplicates,
                "quarantined": quarantined,
                "malformed": quarantined,  # the name before quarantine existed
                "batches": self.stats.batches,
                "store_retries": self.stats.store_retries,
                "queued": len(self._queue),
            }
