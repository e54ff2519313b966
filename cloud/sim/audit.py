"""Did every record a device sent reach the store? Gaps in the devices' sequence numbers.

A device numbers everything it sends through its outbox (telemetry, events, update reports)
with one strictly increasing `seq` from 1, as the agent does; the store keeps each
`(device_id, seq)` once in `telemetry`, `events` or `updates`. A device whose highest stored
seq is H and which has fewer than H distinct seqs stored lost the difference (the query is
`cloud.store.records.seq_gaps`).
"""

from __future__ import annotations

from cloud.store import Store
from cloud.store.records import seq_gaps

__all__ = ["missing_seqs"]


def missing_seqs(store: Store, id_prefix: str = "") -> dict[str, int]:
    """Devices (whose id starts with `id_prefix`) with missing seqs, and how many each."""
    return seq_gaps(store, id_prefix)
