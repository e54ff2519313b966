"""Did every record a device sent reach the store? Gaps in the devices' sequence numbers.

A device numbers everything it sends through its outbox (telemetry, events, update reports)
with one strictly increasing `seq` from 1, as the agent does; the store keeps each
`(device_id, seq)` once in `telemetry`, `events` or `updates`. A device whose highest stored
seq is H and which has fewer than H distinct seqs stored lost the difference.
"""

from __future__ import annotations

import sqlite3

__all__ = ["missing_seqs"]

_QUERY = """
SELECT device_id, MAX(seq), COUNT(DISTINCT seq) FROM (
    SELECT device_id, seq FROM telemetry WHERE device_id LIKE ? ESCAPE '\\'
    UNION ALL SELECT device_id, seq FROM events WHERE device_id LIKE ? ESCAPE '\\'
    UNION ALL SELECT device_id, seq FROM updates WHERE device_id LIKE ? ESCAPE '\\'
) GROUP BY device_id
"""


def missing_seqs(conn: sqlite3.Connection, id_prefix: str = "") -> dict[str, int]:
    """Devices (whose id starts with `id_prefix`) with missing seqs, and how many each."""
    pattern = id_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    rows = conn.execute(_QUERY, (pattern, pattern, pattern)).fetchall()
    return {device: top - count for device, top, count in rows if top != count}
