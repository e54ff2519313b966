"""Telemetry over time, as `litefleet telemetry` shows it: per-device means per bucket from the
per-minute rollup for long windows, and a follow that prints every record once even when
it commits behind the reader.

Why the follow reads behind its cursor: a record's `received` is taken when its batch is
decoded, before the batch's transaction, so with two ingest workers (or one slow
transaction) a record with an earlier `received` can commit after the follower has passed
it. Each poll reads the keys of the last `LATE_S` seconds of `received` behind the cursor
again and prints those it has not printed; it remembers what it printed for that window
only.
"""

from __future__ import annotations

import json
from typing import Any

from cloud.store import Store
from cloud.store.records import Cursor, telemetry_keys, telemetry_rows, telemetry_since
from cloud.store.rollup import BucketCursor, buckets

__all__ = [
    "LATE_S",
    "ROLLUP_AFTER_S",
    "TelemetryFollower",
    "telemetry_buckets",
]

# how far behind its cursor a follower looks for records that committed late: the store's
# busy timeout (30 s), beyond which ingest gives a batch up and takes a new `received` for it
LATE_S = 30.0
# `litefleet telemetry --since` longer than this reads the rollup unless told `--raw`
ROLLUP_AFTER_S = 6 * 3600
_KEYS_PAGE = 10_000
_ROWS_PAGE = 500  # (device_id, seq) pairs per IN list


def telemetry_buckets(
    store: Store,
    since: float,
    every_s: int,
    device_id: str | None = None,
    after: BucketCursor | None = None,
    limit: int = 10_000,
) -> list[tuple[BucketCursor, dict[str, Any]]]:
    """(cursor, bucket) pairs: each device's records, mean fps and mean p95 latency per
    `every_s` seconds of device time from `since`, from the rollup; oldest first."""
    return [
        (
            b.cursor,
            {
                "ts": b.bucket * every_s,
                "every_s": every_s,
                "device_id": b.device_id,
                "records": b.records,
                "fps": b.fps,
                "latency_p95_ms": b.p95_ms,
            },
        )
        for b in buckets(store, since, every_s, device_id, after, limit)
    ]


def _record(body: str, received: float) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(body)
    record["received"] = received
    return record


class TelemetryFollower:
    """Records received since `since`, each returned once by `poll`: one page of new ones
    (after the cursor) and any that committed behind the cursor within `late_s`."""

    def __init__(
        self,
        store: Store,
        since: float,
        device_id: str | None = None,
        page: int = 1000,
        late_s: float = LATE_S,
    ) -> None:
        self.store = store
        self.since = since
        self.device_id = device_id
        self.page = page
        self.late_s = late_s
        self.behind = False  # the last page was full: poll again without waiting
        self._cursor: Cursor | None = None
        self._seen: dict[tuple[str, int], float] = {}  # printed, received in the window

    def poll(self) -> list[tuple[Cursor, dict[str, Any]]]:
        out = self._late()
        rows = telemetry_since(self.store, self.since, self.device_id, self._cursor, self.page)
        for cursor, body, received in rows:  # after the cursor: none returned yet
            self._seen[(cursor[1], cursor[2])] = received
            out.append((cursor, _record(body, received)))
        if rows:
            self._cursor = rows[-1][0]
            self._forget()
        self.behind = len(rows) >= self.page
        return out

    def _late(self) -> list[tuple[Cursor, dict[str, Any]]]:
        """Records behind the cursor, within the window, not returned yet."""
        if self._cursor is None:
            return []
        lo = max(self.since, self._cursor[0] - self.late_s)
        missing: list[tuple[str, int]] = []
        after: Cursor | None = None
        while True:
            keys = telemetry_keys(
                self.store, lo, self._cursor, self.device_id, after, limit=_KEYS_PAGE
            )
            missing += [(d, s) for _, d, s in keys if (d, s) not in self._seen]
            if len(keys) < _KEYS_PAGE:
                break
            after = keys[-1]
        out = []
        for i in range(0, len(missing), _ROWS_PAGE):
            for cursor, body, received in telemetry_rows(self.store, missing[i : i + _ROWS_PAGE]):
                self._seen[(cursor[1], cursor[2])] = received
                out.append((cursor, _record(body, received)))
        out.sort(key=lambda row: row[0])
        return out

    def _forget(self) -> None:
        """Keep only what the next look behind can find again."""
        if self._cursor is None:
            return
        lo = self._cursor[0] - self.late_s
        self._seen = {k: r for k, r in self._seen.items() if r >= lo}
