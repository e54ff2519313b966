"""When a deployment that stopped without a verdict is tried again: doubling waits, capped.

A fetch that failed, a download past its deadline or a full disk says nothing about the
release: the same deployment is tried again after `first_s`, then after twice the last wait,
up to `max_s`. Time comes from an injected monotonic clock, so tests step it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_RETRY", "PendingRetry", "RetryPolicy", "RetrySchedule"]


@dataclass(frozen=True)
class RetryPolicy:
    first_s: float = 10.0
    max_s: float = 600.0

    def __post_init__(self) -> None:
        if not 0 < self.first_s <= self.max_s:
            raise ValueError("a retry policy needs 0 < first_s <= max_s")


DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True)
class PendingRetry:
    deployment: bytes
    artifact_dirs: tuple[Path, ...]
    due: float  # on the schedule's clock
    delay: float  # the wait that led to `due`


class RetrySchedule:
    """At most one deployment waiting for its next try (a newer one replaces it)."""

    def __init__(
        self, policy: RetryPolicy = DEFAULT_RETRY, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.policy = policy
        self._clock = clock
        self.pending: PendingRetry | None = None

    def schedule(
        self, deployment: bytes, dirs: tuple[Path, ...], after: PendingRetry | None = None
    ) -> None:
        """Try `deployment` again: after `first_s`, or twice `after`'s wait (capped)."""
        delay = self.policy.first_s if after is None else min(after.delay * 2, self.policy.max_s)
        self.pending = PendingRetry(deployment, dirs, self._clock() + delay, delay)

    def take_due(self) -> PendingRetry | None:
        """The pending retry if its time has come (no longer pending), else None."""
        pending = self.pending
        if pending is None or self._clock() < pending.due:
            return None
        self.pending = None
        return pending

    def clear(self) -> None:
        self.pending = None
