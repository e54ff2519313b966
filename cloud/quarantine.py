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
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from cloud.store import Store, add_counter
from cloud.store.dead_letters import insert_dead_letters, quarantine_rows

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
    text = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return text.replace("\x00", "\\x00")[:_TEXT_KEEP]  # PostgreSQL text holds no NUL


@dataclass(frozen=True)
class DeadLetter:
    topic: bytes
    payload: bytes
    reason: str
    detail: str
    device_id: str = ""  # what the topic names, when it is a valid device topic

    def row(self, now: float) -> dict[str, Any]:
        return {
            "received": now,
            "topic": _text(self.topic.decode("utf-8", "backslashreplace")),
            "device_id": _text(self.device_id),
            "size": len(self.payload),
            "sha256": hashlib.sha256(self.payload).hexdigest(),
            "reason": _text(self.reason),
            "detail": _text(self.detail),
            "payload": self.payload[:PAYLOAD_KEEP],
        }


def write_dead_letters(conn: Connection, letters: list[DeadLetter], now: float) -> None:
    """Insert dead letters and count them (inside the caller's transaction)."""
    if not letters:
        return
    insert_dead_letters(conn, [letter.row(now) for letter in letters], KEEP_ROWS)
    add_counter(conn, "quarantined", len(letters))
    add_counter(conn, "malformed", len(letters))  # the name before quarantine existed
    for reason, count in Counter(letter.reason for letter in letters).items():
        add_counter(conn, f"quarantined.{reason}", count)


def quarantine_views(
    store: Store, since: float = 0.0, device_id: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """The newest dead letters first; payloads shown as text (undecodable bytes escaped)."""
    out = []
    for row in quarantine_rows(store, since, device_id, limit):
        payload = bytes(row["payload"])
        out.append(
            {
                **{
                    k: row[k]
                    for k in (
                        "id",
                        "received",
                        "topic",
                        "device_id",
                        "size",
                        "sha256",
                        "reason",
                        "detail",
                    )
                },
                "payload": payload.decode("utf-8", "backslashreplace"),
                "payload_truncated": row["size"] > len(payload),
            }
        )
    return out
