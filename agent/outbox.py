"""The durable outbox: every record the device sends goes through it.

A telemetry record, event or update status is appended to the outbox table in one transaction
that also assigns its `seq` (strictly increasing per device, persisted, never reused). The link
publishes rows oldest-first with QoS 1 and deletes each one when the broker acknowledges it;
whatever is still here after a reconnect or a restart is sent again. Receivers dedup on
`(device_id, seq)`.

The outbox is bounded by rows and bytes (`[outbox] max_rows`, `max_bytes`). When an append would
pass a bound the oldest rows go first, and `dropped` (a persisted, cumulative count) grows: the
telemetry record built next carries it as `outbox_dropped`, so the loss is visible upstream.
Rows in flight (handed to the broker, not yet acknowledged; at most `publish_window`) are held:
they are never dropped, so `dropped` counts exactly the records that were never sent, and the
outbox may briefly hold up to `publish_window` rows over its bound.

While the disk refuses writes (full, or failing), records are held in memory instead, in order,
at most `[outbox] memory_rows` of them; past that the oldest held record goes and `dropped`
grows, as for a full outbox. A held record has no seq yet: it gets one, and is built, when it
reaches the disk (every append and every `retry` try the disk again, oldest first), so seqs stay
persisted and never reused even if the process dies while holding records (those are lost, and
counted nowhere: they were never numbered). Deliveries acknowledged while the disk refuses the
delete are remembered and deleted with the next write that succeeds. One warning a minute at
most says how many records are held and dropped; one line says when the disk takes writes again.

The outbox asks the device store (`agent.store`, which owns the tables) for a SQLite connection
of its own, serialized by a lock, so its short transactions never interleave with other parts'
transactions on their connection.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import sqlite_utils

from agent.config import OutboxConfig
from agent.outbox_hold import HeldRecords
from agent.outbox_hold import disk_refused as _disk_refused
from agent.store import DeviceStore
from shared.errors import PayloadTooLarge
from shared.messages import (
    MAX_MESSAGE_BYTES,
    Event,
    Message,
    TelemetryRecord,
    UpdateStatus,
    encode_message,
)
from shared.topics import Channel

__all__ = ["OUTBOX_CHANNELS", "Outbox", "OutboxEntry", "OutboxStats", "read_outbox_stats"]

log = logging.getLogger(__name__)

OUTBOX_CHANNELS = (Channel.TELEMETRY, Channel.EVENTS, Channel.UPDATE)
_KIND_OF_CHANNEL: dict[Channel, type] = {
    Channel.TELEMETRY: TelemetryRecord,
    Channel.EVENTS: Event,
    Channel.UPDATE: UpdateStatus,
}
_CHUNK = 500  # SQLite host parameters per statement, well under its limit


@dataclass(frozen=True)
class OutboxEntry:
    seq: int
    channel: Channel
    payload: bytes


@dataclass(frozen=True)
class OutboxStats:
    depth: int
    bytes: int
    dropped: int
    last_seq: int
    last_publish: float | None  # wall-clock time of the last acknowledged delivery


class Outbox:
    """Append records with their `seq`; hand them out oldest-first; delete them once acked."""

    def __init__(self, db: DeviceStore, limits: OutboxConfig | None = None) -> None:
        self.limits = limits or OutboxConfig()
        self._lock = threading.RLock()
        self._appended = threading.Condition(self._lock)
        self._listeners: list[Callable[[], None]] = []
        self._held: set[int] = set()
        # a connection of its own (its tables are the store's: `agent.store`)
        self._conn = db.connection(autocommit=True, synchronous=self.limits.synchronous)
        self._depth = self._bytes = self._last_seq = self._dropped = 0
        # while the disk refuses writes: records waiting for a seq, acknowledged records waiting
        # for their delete, and evictions not yet in outbox_meta
        self._waiting = HeldRecords(self.limits.memory_rows)
        self._undeleted: list[tuple[list[int], bool]] = []
        self._dropped_unsaved = 0
        self._reload_counters()
        last = self._meta("last_publish")
        self._last_publish: float | None = None if last is None else float(last)

    # -- appending ---------------------------------------------------------------------------

    def append(self, channel: Channel, make: Callable[[int], Message]) -> int:
        """Store the record `make(seq)` under the next seq, in one transaction; return the seq.

        `make` runs inside the transaction (keep it cheap) and may read `dropped`, which already
        counts the rows this append pushed out. While the disk refuses writes the record is held
        in memory and 0 is returned: `make` runs later, when the record reaches the disk.
        """
        kind = _KIND_OF_CHANNEL.get(channel)
        if kind is None:
            raise ValueError(f"channel {channel} does not go through the outbox")
        with self._lock:
            if self._waiting:  # older records wait for the disk: this one goes behind them
                self._hold(channel, kind, make)
                seq = self._store_waiting()
            else:
                try:
                    seq = self._append_one(channel, kind, make)
                except sqlite3.OperationalError as e:
                    if not _disk_refused(e):
                        raise
                    self._hold(channel, kind, make)
                    self._note_refusal(e)
                    seq = 0
            if seq:
                self._appended.notify_all()
        if seq:
            for listener in self._listeners:
                listener()
        return seq

    def retry(self) -> int:
        """Store the records held in memory if the disk takes writes again; how many were."""
        with self._lock:
            if not self._waiting and not self._undeleted:
                return 0
            before = len(self._waiting)
            seq = self._store_waiting()
            stored = before - len(self._waiting)
            if seq:
                self._appended.notify_all()
        if seq:
            for listener in self._listeners:
                listener()
        return stored

    @property
    def held(self) -> int:
        """Records held in memory because the disk refuses writes."""
        return len(self._waiting)

    def _append_one(self, channel: Channel, kind: type, make: Callable[[int], Message]) -> int:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            seq = self._append_locked(channel, kind, make)
            self._conn.execute("COMMIT")
        except BaseException:
            self._abort()
            raise
        self._dropped_unsaved = 0  # the transaction saved `dropped`
        return seq

    def _hold(self, channel: Channel, kind: type, make: Callable[[int], Message]) -> None:
        if self._waiting.hold((channel, kind, make)):  # the oldest held record went
            self._dropped += 1
            self._dropped_unsaved += 1

    def _store_waiting(self) -> int:
        """Move held records to the disk, oldest first, while it takes them; the last seq."""
        last = 0
        try:
            self._delete_undeleted()
            while self._waiting:
                channel, kind, make = self._waiting.first()
                try:
                    last = self._append_one(channel, kind, make)
                except sqlite3.OperationalError as e:
                    if _disk_refused(e):
                        raise
                    log.error("dropped a held %s record the store refused: %s", channel, e)
                    self._dropped += 1
                    self._dropped_unsaved += 1
                self._waiting.stored_first()
        except sqlite3.OperationalError as e:
            if not _disk_refused(e):
                raise
            self._note_refusal(e)
            return last
        self._waiting.accepted(self._dropped)
        return last

    def _note_refusal(self, error: sqlite3.OperationalError) -> None:
        self._waiting.refused(error, self._dropped)

    def _append_locked(self, channel: Channel, kind: type, make: Callable[[int], Message]) -> int:
        if self._depth >= self.limits.max_rows:
            self._drop_oldest(rows=self._depth - self.limits.max_rows + 1)
        if self._dropped_unsaved:
            self._set_meta("dropped", self._dropped)
        seq = self._last_seq + 1
        message = make(seq)
        if not isinstance(message, kind) or getattr(message, "seq", None) != seq:
            raise ValueError(f"make({seq}) must return a {kind.__name__} with seq={seq}")
        payload = encode_message(message)
        size = len(payload)
        cap = min(MAX_MESSAGE_BYTES, self.limits.max_bytes)
        if size > cap:
            raise PayloadTooLarge(f"{channel} record of {size} bytes exceeds the {cap}-byte cap")
        if self._bytes + size > self.limits.max_bytes:
            self._drop_oldest(free_bytes=self._bytes + size - self.limits.max_bytes)
        self._conn.execute(
            "INSERT INTO outbox (seq, channel, payload, size, created) VALUES (?, ?, ?, ?, ?)",
            (seq, channel.value, payload, size, time.time()),
        )
        self._set_meta("last_seq", seq)
        self._last_seq = seq
        self._depth += 1
        self._bytes += size
        return seq

    def _drop_oldest(self, rows: int = 0, free_bytes: int = 0) -> None:
        victims: list[int] = []
        freed = 0
        cursor = self._conn.execute("SELECT seq, size FROM outbox ORDER BY seq")
        for seq, size in cursor:
            if len(victims) >= rows and freed >= free_bytes:
                break
            if seq in self._held:
                continue
            victims.append(seq)
            freed += size
        cursor.close()
        if not victims:
            return
        for i in range(0, len(victims), _CHUNK):
            chunk = victims[i : i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            self._conn.execute(f"DELETE FROM outbox WHERE seq IN ({marks})", chunk)
        self._depth -= len(victims)
        self._bytes -= freed
        self._dropped += len(victims)
        self._set_meta("dropped", self._dropped)
        log.warning(
            "outbox full (%s rows, %s bytes max): dropped the %s oldest records (seq %s..%s), "
            "%s dropped in total",
            self.limits.max_rows,
            self.limits.max_bytes,
            len(victims),
            victims[0],
            victims[-1],
            self._dropped,
        )

    def add_listener(self, fn: Callable[[], None]) -> None:
        """Call `fn` (cheap, any thread) after every append; the drain wakes up on it."""
        self._listeners.append(fn)

    # -- draining ----------------------------------------------------------------------------

    def pending(
        self, after_seq: int = 0, limit: int = 100, hold: bool = False
    ) -> list[OutboxEntry]:
        """Up to `limit` stored records with seq > `after_seq`, oldest first.

        With `hold`, the records are marked in flight in the same step (see `hold`), so an
        append cannot drop one between this read and its publication.
        """
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, channel, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
            if hold:
                self._held.update(seq for seq, _, _ in rows)
        return [
            OutboxEntry(seq, Channel(channel), bytes(payload)) for seq, channel, payload in rows
        ]

    def hold(self, seq: int) -> None:
        """Mark a record as in flight: it is not dropped until `remove` deletes it."""
        with self._lock:
            self._held.add(seq)

    def wait_for_records(self, after_seq: int, timeout: float) -> bool:
        """Block until a record with seq > `after_seq` may exist, or `timeout` passes."""
        with self._appended:
            if self._last_seq > after_seq:
                return True
            self._appended.wait(timeout)
            return self._last_seq > after_seq

    def remove(self, seqs: Iterable[int], dropped: bool = False) -> int:
        """Delete delivered records (acknowledged by the broker); return how many were here.

        With `dropped`, the records were refused rather than delivered: they count as dropped.
        While the disk refuses the delete, the records are remembered (not handed out again)
        and deleted with the next write that succeeds.
        """
        wanted = sorted(set(seqs))
        if not wanted:
            return 0
        with self._lock:
            try:
                return self._remove_locked(wanted, dropped)
            except sqlite3.OperationalError as e:
                if not _disk_refused(e):
                    raise
                self._undeleted.append((wanted, dropped))
                self._note_refusal(e)
                return len(wanted)

    def _delete_undeleted(self) -> None:
        while self._undeleted:
            wanted, dropped = self._undeleted[0]
            self._remove_locked(wanted, dropped)
            self._undeleted.pop(0)

    def _remove_locked(self, wanted: list[int], dropped: bool) -> int:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            removed = freed = 0
            for i in range(0, len(wanted), _CHUNK):
                chunk = wanted[i : i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                n, size = self._conn.execute(
                    f"SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox WHERE seq IN ({marks})",
                    chunk,
                ).fetchone()
                self._conn.execute(f"DELETE FROM outbox WHERE seq IN ({marks})", chunk)
                removed += n
                freed += size
            now = time.time()
            if dropped:
                self._set_meta("dropped", self._dropped + removed)
            else:
                self._set_meta("last_publish", now)
            self._conn.execute("COMMIT")
        except BaseException:
            self._abort()
            raise
        if dropped:
            self._dropped_unsaved = 0
        self._held.difference_update(wanted)
        self._depth -= removed
        self._bytes -= freed
        if dropped:
            self._dropped += removed
        else:
            self._last_publish = now
        return removed

    # -- reading -----------------------------------------------------------------------------

    def depth(self) -> int:
        return self._depth

    @property
    def dropped(self) -> int:
        """Records dropped (outbox full, or held in memory past `memory_rows`), ever."""
        return self._dropped

    @property
    def last_seq(self) -> int:
        return self._last_seq

    def stats(self) -> OutboxStats:
        with self._lock:
            return OutboxStats(
                self._depth, self._bytes, self._dropped, self._last_seq, self._last_publish
            )

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- internals ---------------------------------------------------------------------------

    def _meta(self, key: str) -> float | None:
        row = self._conn.execute("SELECT value FROM outbox_meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else float(row[0])

    def _set_meta(self, key: str, value: float) -> None:
        self._conn.execute(
            "INSERT INTO outbox_meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def _abort(self) -> None:
        """Undo a failed transaction and re-read the counters it may have moved."""
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")
        self._reload_counters()

    def _reload_counters(self) -> None:
        depth, size, max_seq = self._conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(MAX(seq), 0) FROM outbox"
        ).fetchone()
        self._depth, self._bytes = int(depth), int(size)
        self._last_seq = max(int(self._meta("last_seq") or 0), int(max_seq))
        # evictions from memory not yet saved stay counted
        self._dropped = int(self._meta("dropped") or 0) + self._dropped_unsaved


def read_outbox_stats(db: sqlite_utils.Database) -> OutboxStats:
    """The outbox's figures straight from the store, without creating anything (for `status`)."""
    names = set(db.table_names())
    if "outbox" not in names:
        return OutboxStats(0, 0, 0, 0, None)
    depth, size = db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox").fetchone()
    meta: dict[str, float] = {}
    if "outbox_meta" in names:
        meta = {k: v for k, v in db.execute("SELECT key, value FROM outbox_meta").fetchall()}
    last_publish = meta.get("last_publish")
    return OutboxStats(
        int(depth),
        int(size),
        int(meta.get("dropped", 0)),
        int(meta.get("last_seq", 0)),
        None if last_publish is None else float(last_publish),
    )
