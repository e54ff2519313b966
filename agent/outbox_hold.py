"""What the outbox keeps in memory while the disk refuses writes (see `agent.outbox`).

`HeldRecords` is a bounded first-in first-out list of records not yet numbered: past its limit
the oldest goes (the caller counts it as dropped). It also says, at most once a minute, that
the disk refuses writes, and once that it takes them again.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable

from shared.messages import Message
from shared.topics import Channel

__all__ = ["REFUSAL_LOG_S", "HeldRecord", "HeldRecords", "disk_refused"]

log = logging.getLogger("agent.outbox")

REFUSAL_LOG_S = 60.0  # at most one "disk refuses writes" warning this often
_DISK_REFUSES = (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR)  # primary result codes

HeldRecord = tuple[Channel, type, Callable[[int], Message]]


def disk_refused(error: sqlite3.OperationalError) -> bool:
    """SQLITE_FULL or SQLITE_IOERR: the disk refuses the write (not a bug in the statement)."""
    return (getattr(error, "sqlite_errorcode", 0) & 0xFF) in _DISK_REFUSES


class HeldRecords:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._records: deque[HeldRecord] = deque()
        self._logged: float | None = None  # time.monotonic() of the last warning
        self._refusing = False

    def __len__(self) -> int:
        return len(self._records)

    def hold(self, record: HeldRecord) -> bool:
        """Keep `record` last; True when the oldest held record went to make room."""
        evicted = len(self._records) >= self.limit
        if evicted:
            self._records.popleft()
        self._records.append(record)
        return evicted

    def first(self) -> HeldRecord:
        return self._records[0]

    def stored_first(self) -> None:
        self._records.popleft()

    def refused(self, error: sqlite3.OperationalError, dropped: int) -> None:
        """The disk refused a write: warn, unless a warning went out less than a minute ago."""
        self._refusing = True
        now = time.monotonic()
        if self._logged is not None and now - self._logged < REFUSAL_LOG_S:
            return
        self._logged = now
        log.warning(
            "the disk refuses outbox writes (%s): %s records held in memory (at most %s, "
            "the oldest dropped beyond that), %s dropped in total; retrying every second",
            error,
            len(self._records),
            self.limit,
            dropped,
        )

    def accepted(self, dropped: int) -> None:
        """A write went through: say so once if the disk had been refusing."""
        if self._refusing:
            self._refusing = False
            log.warning(
                "the disk takes outbox writes again: records held in memory are stored "
                "(%s dropped in total)",
                dropped,
            )
