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

    telemetry / events / updates   INSERT OR IGNORE on (device_id, seq): a redelivered or
                                   resent record is counted as a duplicate and dropped
    state                          in arrival order: the device row when newer than what is
                                   stored; `online: false` (a last will) whatever its ts
    updates                        also move the device's row in its rollout (outcomes)

Messages are acknowledged to the broker (manual QoS 1 acks, one write per batch) only after
their batch commits, so an ingester that dies loses nothing: the broker redelivers to the
persistent session.

Nothing a device sends can stop the writer. Each message is stored, counted as a duplicate,
or quarantined (`cloud.quarantine`: a dead letter with its reason, written in the same
transaction) and then acknowledged like the others: anything malformed, out of the contract's
bounds (`shared.messages`), of an unknown schema, of the wrong kind for its topic or naming
another device; anything the parser fails on unexpectedly (`internal_error`); and a message the
store itself refuses (`store_error`: the batch is then written again one message at a time, so
only the offender is set aside). A store that is busy is retried, then the batch is left
unacknowledged for the broker to redeliver. Anything else (a store that is corrupt or refuses
even a dead letter, a bug) ends the writer: it logs the error, and `on_death` tells the service,
which exits non-zero so that systemd restarts it.

Cost: about 35-40 us of CPU per telemetry record on a busy 2-core test machine (receiving,
JSON, the message check with the contract's bounds, SQLite; the bounds take 3-5 us of it), so
one process stores several thousand records a second; `benchmarks/ingest.py` measures it
against `mosquitto_sub`.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cloud.config import CloudConfig, CloudRole
from cloud.ingest_queue import Handoff as _Handoff
from cloud.ingest_queue import Item
from cloud.mqtt import CloudLink
from cloud.quarantine import DeadLetter, Reason, write_dead_letters
from cloud.store import add_counter, open_store
from shared.errors import LiteFleetError
from shared.messages import (
    DeviceState,
    Event,
    Message,
    TelemetryRecord,
    UpdatePhase,
    UpdateStatus,
    decode_message,
)
from shared.topics import Channel, ParsedTopic, fleet_subscription, parse_topic

__all__ = ["IngestStats", "Ingester", "write_batch"]

log = logging.getLogger(__name__)
_CHANNELS = (Channel.STATE, Channel.TELEMETRY, Channel.EVENTS, Channel.UPDATE)
_EXPECTED: dict[Channel, type[Any]] = {
    Channel.STATE: DeviceState, Channel.TELEMETRY: TelemetryRecord, Channel.EVENTS: Event,
    Channel.UPDATE: UpdateStatus,
}
_OUTCOMES = {UpdatePhase.COMMITTED: "committed", UpdatePhase.ROLLED_BACK: "failed",
             UpdatePhase.REJECTED: "failed"}
_TOPIC_CACHE_MAX = 65_536  # parsed topic names kept (4 per device); emptied when full
# what the store raises for one message's values (a number SQLite cannot hold, text it cannot
# encode, a constraint): that message is quarantined; any other store error is the store's
_DATA_ERRORS = (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.InterfaceError,
                sqlite3.ProgrammingError, OverflowError, ValueError, TypeError)
_TRACEBACK_EVERY_S = 60.0  # unexpected parser failures: one traceback a minute in the log
_LOG_WINDOW_S, _LOG_LINES = 60.0, 20  # quarantined messages logged one by one, then summed up


@dataclass
class IngestStats:
    received: int = 0
    stored: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)  # by reason
    batches: int = 0

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
            return self._refuse(name, payload, Reason.INTERNAL_ERROR,
                                f"{type(e).__name__}: {e}", device)
        if type(message) is not _EXPECTED.get(parsed.channel):
            return self._refuse(name, payload, Reason.WRONG_CHANNEL,
                                f"a {type(message).__name__} message", device)
        if message.device_id != device:
            return self._refuse(name, payload, Reason.WRONG_DEVICE,
                                f"names device {message.device_id!r}", device)
        return message

    def _refuse(self, name: bytes, payload: bytes, reason: str, detail: str,
                device: str) -> DeadLetter:
        """A dead letter, logged: one line each up to `_LOG_LINES` a minute (a device that
        floods garbage must not flood the journal), then how many more."""
        now = time.monotonic()
        if now - self._window_start >= _LOG_WINDOW_S:
            if self._unlogged:
                log.warning("quarantined %s more message(s) in the last minute "
                            "(`litefleet quarantine` lists them)", self._unlogged)
            self._window_start, self._logged, self._unlogged = now, 0, 0
        if self._logged < _LOG_LINES:
            self._logged += 1
            log.warning("quarantined a message on %s (%s): %s", _shown(name), reason,
                        detail[:200])
        else:
            self._unlogged += 1
        return DeadLetter(name, payload, reason, detail, device)


def write_batch(conn: sqlite3.Connection, messages: list[tuple[Message, bytes]], now: float,
                stats: IngestStats) -> None:
    """Write decoded messages (with their payloads) in one transaction (the caller commits)."""
    telemetry: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    updates: list[tuple[Any, ...]] = []
    states: list[DeviceState] = []  # in arrival order
    latest: dict[str, TelemetryRecord] = {}
    seen: set[str] = set()
    talking: set[str] = set()  # sent something other than state: connected right now
    state_count = 0
    for m, payload in messages:
        seen.add(m.device_id)
        if not isinstance(m, DeviceState):
            talking.add(m.device_id)
        if isinstance(m, TelemetryRecord):
            model = m.model
            telemetry.append((
                m.device_id, m.seq, m.ts, now, model.name if model else None,
                model.version if model else None, model.sha256 if model else None, m.fps,
                m.latency_p95_ms, m.inferences, m.errors, payload.decode("utf-8"),
            ))
            prev = latest.get(m.device_id)
            if prev is None or m.ts >= prev.ts:
                latest[m.device_id] = m
        elif isinstance(m, Event):
            events.append((m.device_id, m.seq, m.ts, now, m.kind, json.dumps(m.detail)))
        elif isinstance(m, UpdateStatus):
            updates.append((m.device_id, m.seq, m.ts, now, m.rollout_id, m.phase, m.model,
                            m.version, m.sha256, m.reason, m.detail, m.via))
        elif isinstance(m, DeviceState):
            states.append(m)
            state_count += 1
    conn.executemany("INSERT OR IGNORE INTO devices (device_id) VALUES (?)",
                     [(d,) for d in seen])
    conn.executemany("UPDATE devices SET last_seen = MAX(last_seen, ?) WHERE device_id = ?",
                     [(now, d) for d in seen])
    # a device marked offline for silence is back as soon as it talks; its state, written
    # below, still has the last word within this batch (a last will says offline)
    conn.executemany("UPDATE devices SET online = 1 WHERE device_id = ?", [(d,) for d in talking])
    for table, rows, width in (("telemetry", telemetry, 12), ("events", events, 6),
                               ("updates", updates, 12)):
        if not rows:
            continue
        before = conn.total_changes
        conn.executemany(f"INSERT OR IGNORE INTO {table} VALUES ({','.join('?' * width)})", rows)
        stored = conn.total_changes - before
        stats.stored[table] += stored
        stats.duplicates += len(rows) - stored
        add_counter(conn, f"stored.{table}", stored)
        add_counter(conn, "duplicates", len(rows) - stored)
    stats.stored["state"] += state_count  # applied, or older than the state already stored
    add_counter(conn, "stored.state", state_count)
    for s in states:
        model = s.model
        conn.execute(
            "UPDATE devices SET online = ?, profile = ?, agent_version = ?, model_name = ?, "
            "model_version = ?, model_sha256 = ?, update_phase = ?, source_status = ?, fps = ?, "
            "state_ts = ? WHERE device_id = ? AND state_ts <= ?",
            (int(s.online), s.profile, s.agent_version, model.name if model else None,
             model.version if model else None, model.sha256 if model else None, s.update_phase,
             s.source_status, s.fps, s.ts, s.device_id, s.ts),
        )
        if not s.online:  # a last will's ts is its connection's start, older than the states
            # sent on that connection: its offline stands until the device is heard from again
            conn.execute("UPDATE devices SET online = 0 WHERE device_id = ?", (s.device_id,))
    for t in latest.values():
        conn.execute("UPDATE devices SET fps = ?, p95_ms = ? WHERE device_id = ?",
                     (t.fps, t.latency_p95_ms, t.device_id))
    for row in updates:
        device_id, rollout_id, phase, reason = row[0], row[4], row[5], row[9]
        if not rollout_id:
            continue
        status = _OUTCOMES.get(phase)
        if phase == UpdatePhase.IDLE and reason == "superseded":
            status = "superseded"  # a newer deployment took this device over: not a failure
        if status is None:
            conn.execute(
                "UPDATE rollout_devices SET phase = ?, updated = ? WHERE rollout_id = ? AND "
                "device_id = ? AND status = 'pending'", (phase, now, rollout_id, device_id))
        else:
            conn.execute(
                "UPDATE rollout_devices SET status = ?, phase = ?, reason = ?, updated = ? "
                "WHERE rollout_id = ? AND device_id = ? AND status IN ('pending', 'timed_out')",
                (status, phase, reason, now, rollout_id, device_id))
    stats.batches += 1


class Ingester:
    """Subscribes to every device's state, telemetry, events and update topics.

    `on_death(worker, error)` is called if the writer ends for any reason but `stop()`.
    """

    def __init__(self, config: CloudConfig, client_id: str | None = None,
                 on_death: Callable[[str, BaseException], None] | None = None) -> None:
        self.config = config
        self.stats = IngestStats()
        self._queue = _Handoff(config.ingest.queue_max)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._on_death = on_death
        prefix = config.mqtt.topic_prefix
        self._decode = _Decoder(prefix, config.mqtt.max_payload_bytes)  # the writer's own
        self.link = CloudLink(
            config.mqtt, client_id or f"{config.mqtt.client_id}-ingest", persistent=True,
            subscriptions=tuple(fleet_subscription(c, prefix) for c in _CHANNELS),
            on_raw=self._enqueue, manual_ack=True,
            receive_maximum=min(65535, config.ingest.queue_max), role=CloudRole.INGEST,
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

    def _commit(self, conn: sqlite3.Connection, messages: list[tuple[Message, bytes]],
                topics: list[bytes], letters: list[DeadLetter], now: float) -> IngestStats:
        """One transaction for the batch and its dead letters. When the store refuses a
        message's values, the batch is written again one message at a time (a savepoint
        each) and the offenders join the dead letters."""
        written = IngestStats()
        try:
            with conn:
                write_batch(conn, messages, now, written)
                write_dead_letters(conn, letters, now)
            written.quarantined.update(letter.reason for letter in letters)
            return written
        except _DATA_ERRORS as e:
            log.warning("the store refused a message in a batch of %s (%s: %s); writing them "
                        "one at a time", len(messages), type(e).__name__, e)
        written, letters = IngestStats(), list(letters)
        with conn:
            conn.execute("BEGIN")  # the savepoints below nest in this one transaction
            for (message, payload), name in zip(messages, topics, strict=True):
                one = IngestStats()
                conn.execute("SAVEPOINT message")
                try:
                    write_batch(conn, [(message, payload)], now, one)
                except _DATA_ERRORS as e:
                    conn.execute("ROLLBACK TO message")
                    log.warning("quarantined a message on %s (%s): %s", _shown(name),
                                Reason.STORE_ERROR, e)
                    letters.append(DeadLetter(name, payload, Reason.STORE_ERROR,
                                              f"{type(e).__name__}: {e}", message.device_id))
                else:
                    written.add(one)
                conn.execute("RELEASE message")
            write_dead_letters(conn, letters, now)
        written.quarantined.update(letter.reason for letter in letters)
        return written

    def _store(self, conn: sqlite3.Connection, messages: list[tuple[Message, bytes]],
               topics: list[bytes], letters: list[DeadLetter], received: int) -> bool:
        """Write one batch (retrying while the store is busy); False if it could not."""
        with self._lock:
            self.stats.received += received
            for attempt in range(5):
                try:
                    written = self._commit(conn, messages, topics, letters, time.time())
                except sqlite3.OperationalError as e:
                    log.warning("store busy (%s); retrying the batch", e)
                    time.sleep(0.2 * (attempt + 1))
                    continue
                self.stats.add(written)
                self.stats.batches += 1
                return True
        log.error("dropping the acks of %s messages: the store is unavailable; "
                  "the broker will redeliver them", received)
        return False

    def _run(self) -> None:
        try:
            self._write_until_stopped()
        except BaseException as e:  # anything: the service must not live on without a writer
            log.exception("the ingest writer stopped")
            if self._on_death is not None:
                self._on_death("the ingest writer", e)

    def write(self, conn: sqlite3.Connection, batch: list[Item]) -> bool:
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
        return self._store(conn, messages, topics, letters, len(batch))

    def _write_until_stopped(self) -> None:
        conn = open_store(self.config.store.db).conn
        try:
            cfg = self.config.ingest
            while not (self._stop.is_set() and not self._queue):
                batch = self._queue.take(cfg.batch_max, cfg.batch_wait_s)
                if not batch or not self.write(conn, batch):
                    continue
                self.link.ack_many(mid for _, _, mid, qos in batch if qos == 1)
                for _, _, mid, qos in batch:
                    if qos > 1:
                        self.link.ack(mid, qos)
        finally:
            conn.close()

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
                "queued": len(self._queue),
            }
