"""Operator-friendly durations, points in time and shares: `30d`, `12h`, `600`; `--since`;
`95%`, `0.95`."""

from __future__ import annotations

import re
import time

from shared.documents import parse_time
from shared.errors import MalformedDocument

__all__ = ["parse_duration", "parse_share_pct", "parse_since"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^(\d+)([smhdw]?)$")


def parse_duration(text: str) -> int:
    """Seconds in `text` (`600`, `1s`, `10m`, `12h`, `30d`, `2w`); ValueError otherwise."""
    m = _DURATION.match(text.strip().lower())
    if m is None:
        raise ValueError(f"{text!r} is not a duration like 600, 10m, 12h or 30d")
    seconds = int(m.group(1)) * _UNITS[m.group(2) or "s"]
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return seconds


def parse_since(text: str) -> float:
    """A `--since` as a Unix time: a duration back from now (`2h`, `7d`) or a UTC time
    (`2026-01-31T12:00:00Z`); ValueError with the sentence to show otherwise."""
    try:
        return time.time() - parse_duration(text)
    except ValueError:
        pass
    try:
        return parse_time(text, "--since").timestamp()
    except MalformedDocument as e:
        raise ValueError(
            f"--since: {text!r} is neither a duration (2h, 7d) nor a UTC time "
            "like 2026-01-31T12:00:00Z"
        ) from e


def parse_share_pct(text: str) -> int:
    """An integer percentage 0..100 from `95%`, `95` or `0.95`; ValueError otherwise."""
    t = text.strip()
    try:
        if t.endswith("%"):
            value = float(t[:-1])
        else:
            value = float(t)
            if "." in t and value <= 1.0:
                value *= 100
    except ValueError as e:
        raise ValueError(f"{text!r} is not a percentage like 95% or 0.95") from e
    if not 0 <= value <= 100:
        raise ValueError(f"{text!r} is not between 0% and 100%")
    return round(value)
