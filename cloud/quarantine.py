"""Dead letters: device messages the ingester refused, kept for the operator instead of lost.

Every message a device publishes ends up stored, counted as a duplicate, or here: a row in the
`quarantine` table with its topic, the device its topic names (when it names one), its size,
the sha256 of the whole payload, a reason code (`malformed`, `payload_too_large`,
`unknown_schema`, `invalid_device_id`, `wrong_channel`, `wrong_device`, `store_error`,
`internal_error`), a one-line detail and the first `PAYLOAD_KEEP` bytes of the payload. The
counters `quarantined` and `quarantined.<reason>` count them. The ingester then acknowledges the
message like any other, so the broker never hands the same poison to the next ingester again.

The table keeps the newest `KEEP_ROWS` rows; the counters keep counting.
`litefleet quarantine` lists them.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections import Counter
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from cloud.store import add_counter

__all__ = ["KEEP_ROWS", "PAYLOAD_KEEP", "DeadLetter", "quarantine_views", "write_dead_letters"]

PAYLOAD_KEEP = 4096  # bytes of each refused payload kept for inspection
KEEP_ROWS = 100_000  # dead letters kept; older ones are deleted as new ones arrive
_TEXT_KEEP = 512  # characters of the topic and of the detail kept


class Reason:
    """Reason codes the ingester adds to those of `shared.errors` (`Rejected.reason`)."""

    WRONG_CHANNEL = "wrong_channel"  # a message kind that does not belong on this topic
    WRONG_DEVICE = "wrong_device"  # names another device than its topic
    STORE_ERROR = "store_error"  # the store refused this one message (the rest were written)
    INTERNAL_ERROR = "internal_error"  # the parser failed in a way it should not: a bug


def _text(value: str) -> str:
    """Printable, storable text: lone surrogates escaped, cut to a bound."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")[:_TEXT_KEEP]


@dataclass(frozen=True)
class DeadLetter:
    topic: bytes
    payload: bytes
    reason: str
    detail: str
    device_id: str = ""  # what the topic names, when it is a valid device topic

    def row(self, now: float) -> tuple[Any, ...]:
        return (now, _text(self.topic.decode("utf-8", "backslashreplace")), self.device_id,
                len(self.payload), hashlib.sha256(self.payload).hexdigest(), _text(self.reason),
                _text(self.detail), self.payload[:PAYLOAD_KEEP])


def write_dead_letters(conn: sqlite3.Connection, letters: list[DeadLetter], now: float) -> None:
    """Insert dead letters and count them (inside the caller's transaction)."""
    if not letters:
        return
    conn.executemany(
        "INSERT INTO quarantine (received, topic, device_id, size, sha256, reason, detail, "
        "payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [letter.row(now) for letter in letters])
    add_counter(conn, "quarantined", len(letters))
    add_counter(conn, "malformed", len(letters))  # the name before quarantine existed
    for reason, count in Counter(letter.reason for letter in letters).items():
        add_counter(conn, f"quarantined.{reason}", count)
    newest = conn.execute("SELECT MAX(id) FROM quarantine").fetchone()[0]
    if newest > KEEP_ROWS:
        conn.execute("DELETE FROM quarantine WHERE id <= ?", (newest - KEEP_ROWS,))


def quarantine_views(db: sqlite_utils.Database, since: float = 0.0, device_id: str | None = None,
                     limit: int = 100) -> list[dict[str, Any]]:
    """The newest dead letters first; payloads shown as text (undecodable bytes escaped)."""
    sql = ("SELECT id, received, topic, device_id, size, sha256, reason, detail, payload "
           "FROM quarantine WHERE received >= ?")
    params: list[Any] = [since]
    if device_id is not None:
        sql += " AND device_id = ?"
        params.append(device_id)
    sql += " ORDER BY id DESC LIMIT ?"
    params.append(limit)
    out = []
    for row in db.execute(sql, params):
        payload = bytes(row[8])
        out.append({
            "id": row[0], "received": row[1], "topic": row[2], "device_id": row[3],
            "size": row[4], "sha256": row[5], "reason": row[6], "detail": row[7],
            "payload": payload.decode("utf-8", "backslashreplace"),
            "payload_truncated": row[4] > len(payload),
        })
    return out
