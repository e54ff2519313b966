"""The retry schedule on a stepped clock: first wait, doubling, cap, nothing early."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.update.retry import RetryPolicy, RetrySchedule

from .conftest import SteppedClock


def test_waits_double_up_to_the_cap_and_nothing_is_due_early():
    clock = SteppedClock()
    retries = RetrySchedule(RetryPolicy(first_s=10, max_s=35), clock)
    assert retries.take_due() is None  # nothing pending
    retries.schedule(b"d1", (Path("/a"),))
    waits = []
    for _ in range(4):
        pending = retries.pending
        assert pending is not None
        waits.append(pending.delay)
        clock.advance(pending.delay - 0.001)
        assert retries.take_due() is None
        clock.advance(0.001)
        due = retries.take_due()
        assert due is not None and (due.deployment, due.artifact_dirs) == (b"d1", (Path("/a"),))
        assert retries.pending is None  # taken
        retries.schedule(due.deployment, due.artifact_dirs, after=due)  # failed again
    assert waits == [10, 20, 35, 35]
    retries.clear()
    clock.advance(1000)
    assert retries.take_due() is None


def test_a_policy_must_wait_a_positive_time_no_longer_than_its_cap():
    for first, cap in [(0, 1), (5, 1), (-1, 10)]:
        with pytest.raises(ValueError, match="first_s"):
            RetryPolicy(first_s=first, max_s=cap)
