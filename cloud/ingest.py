"""The ingester: device messages from the broker into the cloud store, each stored once.

paho's network thread only parses the topic and puts `(topic, payload, mid)` on a bounded
queue (when the queue is full it waits, which stops reading from the socket: back-pressure
reaches the broker, which holds the messages). One writer thread drains the queue in batches
and writes each batch in one transaction:

    telemetry / events / updates   INSERT OR IGNORE on (device_id, seq): a redelivered or
                                   resent record is counted as a duplicate and dropped
    state                          the device row, when newer than what is stored
    updates                        also move the device's row in its rollout (outcomes)

Messages are acknowledged to the broker (manual QoS 1 acks) only after their batch commits,
so an ingester that dies loses nothing: the broker redelivers to the persistent session.
Anything malformed, unknown or sent on another device's topic is logged, counted and dropped.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

from cloud.config import CloudConfig
from cloud.mqtt import CloudLink
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
from shared.topics import Channel, fleet_subscription, parse_topic

__all__ = ["IngestStats", "Ingester", "write_batch"]

log = logging.getLogger(__name__)
_CHANNELS = (Channel.STATE, Channel.TELEMETRY, Channel.EVENTS, Channel.UPDATE)
_EXPECTED: dict[Channel, type[Any]] = {
    Channel.STATE: DeviceState, Channel.TELEMETRY: TelemetryRecord, Channel.EVENTS: Event,
    Channel.UPDATE: UpdateStatus,
}
_OUTCOMES = {UpdatePhase.COMMITTED: "committed", UpdatePhase.ROLLED_BACK: "failed",
             UpdatePhase.REJECTED: "failed"}


@dataclass
class IngestStats:
    received: int = 0
    stored: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    malformed: int = 0
    batches: int = 0


def _decode(topic: str, payload: bytes, prefix: str, max_bytes: int) -> Message | None:
    try:
        parsed = parse_topic(topic, prefix)
        message = decode_message(payload, max_bytes)
    except LiteFleetError as e:
        log.warning("dropped a message on %s: %s", topic, e)
        return None
    expected = _EXPECTED.get(parsed.channel)
    fits = expected is not None and isinstance(message, expected)
    if not fits:
        log.warning("dropped a %s message on %s", type(message).__name__, topic)
        return None
    if getattr(message, "device_id", None) != parsed.device_id:
        log.warning("dropped a message on %s that names device %r", topic,
                    getattr(message, "device_id", None))
        return None
    return message


def write_batch(conn: sqlite3.Connection, messages: list[tuple[Message, bytes]], now: float,
                stats: IngestStats) -> None:
    """Write decoded messages (with their payloads) in one transaction (the caller commits)."""
    telemetry: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    updates: list[tuple[Any, ...]] = []
    states: dict[str, DeviceState] = {}
    latest: dict[str, TelemetryRecord] = {}
    seen: set[str] = set()
    for m, payload in messages:
        seen.add(m.device_id)
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
            prev_state = states.get(m.device_id)
            if prev_state is None or m.ts >= prev_state.ts:
                states[m.device_id] = m
    conn.executemany("INSERT OR IGNORE INTO devices (device_id) VALUES (?)",
                     [(d,) for d in seen])
    conn.executemany("UPDATE devices SET last_seen = MAX(last_seen, ?) WHERE device_id = ?",
                     [(now, d) for d in seen])
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
    for s in states.values():
        model = s.model
        conn.execute(
            "UPDATE devices SET online = ?, profile = ?, agent_version = ?, model_name = ?, "
            "model_version = ?, model_sha256 = ?, update_phase = ?, source_status = ?, fps = ?, "
            "state_ts = ? WHERE device_id = ? AND state_ts <= ?",
            (int(s.online), s.profile, s.agent_version, model.name if model else None,
             model.version if model else None, model.sha256 if model else None, s.update_phase,
             s.source_status, s.fps, s.ts, s.device_id, s.ts),
        )
    for t in latest.values():
        conn.execute("UPDATE devices SET fps = ?, p95_ms = ? WHERE device_id = ?",
                     (t.fps, t.latency_p95_ms, t.device_id))
    for row in updates:
        device_id, rollout_id, phase, reason = row[0], row[4], row[5], row[9]
        if not rollout_id:
            continue
        status = _OUTCOMES.get(phase)
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
    """Subscribes to every device's state, telemetry, events and update topics."""

    def __init__(self, config: CloudConfig, client_id: str | None = None) -> None:
        self.config = config
        self.stats = IngestStats()
        self._queue: queue.Queue[tuple[str, bytes, int, int]] = queue.Queue(
            maxsize=config.ingest.queue_max)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        prefix = config.mqtt.topic_prefix
        self.link = CloudLink(
            config.mqtt, client_id or f"{config.mqtt.client_id}-ingest", persistent=True,
            subscriptions=tuple(fleet_subscription(c, prefix) for c in _CHANNELS),
            on_message=self._enqueue, manual_ack=True,
            receive_maximum=min(65535, config.ingest.queue_max),
        )
        self._writer = threading.Thread(target=self._run, name="ingest-writer", daemon=True)

    def _enqueue(self, message: mqtt.MQTTMessage) -> None:
        item = (message.topic, bytes(message.payload), message.mid, message.qos)
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def start(self, connect_timeout: float | None = 10.0) -> None:
        self._writer.start()
        self.link.start(connect_timeout)

    def stop(self, timeout: float = 10.0) -> None:
        self.link.stop()
        self._stop.set()
        self._writer.join(timeout)

    def _take_batch(self) -> list[tuple[str, bytes, int, int]]:
        cfg = self.config.ingest
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + cfg.batch_wait_s
        while len(batch) < cfg.batch_max:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except queue.Empty:
                pass
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                batch.append(self._queue.get(timeout=min(left, 0.02)))
            except queue.Empty:
                continue
        return batch

    def _run(self) -> None:
        db = open_store(self.config.store.db)
        conn = db.conn
        prefix, cap = self.config.mqtt.topic_prefix, self.config.mqtt.max_payload_bytes
        try:
            while not (self._stop.is_set() and self._queue.empty()):
                batch = self._take_batch()
                if not batch:
                    continue
                messages = []
                for t, p, _, _ in batch:
                    m = _decode(t, p, prefix, cap)
                    if m is not None:
                        messages.append((m, p))
                malformed = len(batch) - len(messages)
                with self._lock:
                    self.stats.received += len(batch)
                    self.stats.malformed += malformed
                    for attempt in range(5):
                        written = IngestStats()
                        try:
                            with conn:
                                write_batch(conn, messages, time.time(), written)
                                add_counter(conn, "malformed", malformed)
                            self.stats.stored.update(written.stored)
                            self.stats.duplicates += written.duplicates
                            self.stats.batches += 1
                            break
                        except sqlite3.OperationalError as e:
                            log.warning("store busy (%s); retrying the batch", e)
                            time.sleep(0.2 * (attempt + 1))
                    else:
                        log.error("dropping the acks of %s messages: the store is unavailable; "
                                  "the broker will redeliver them", len(batch))
                        continue
                for _, _, mid, qos in batch:
                    if qos > 0:
                        self.link.ack(mid, qos)
        except Exception:
            log.exception("the ingest writer stopped")
            raise
        finally:
            conn.close()

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {
                "received": self.stats.received,
                "stored": sum(self.stats.stored.values()),
                "duplicates": self.stats.duplicates,
                "malformed": self.stats.malformed,
                "batches": self.stats.batches,
                "queued": self._queue.qsize(),
            }
