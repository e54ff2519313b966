"""`--since` for every command that takes one: a duration back from now or a UTC time."""

from __future__ import annotations

import time

import pytest

from cloud.durations import parse_since


def test_since_takes_a_duration_or_a_utc_time_and_names_anything_else() -> None:
    before = time.time()
    assert before - 7200 - 1 <= parse_since("2h") <= time.time() - 7200
    assert parse_since("2026-01-31T12:00:00Z") == 1769860800.0
    for bad in ("yesterday", "-5m", "2026-13-01T00:00:00Z", ""):
        with pytest.raises(ValueError, match="neither a duration"):
            parse_since(bad)
