"""Operator-friendly durations and shares: `30d`, `12h`, `90s`, `600`; `95%`, `0.95`."""

from __future__ import annotations

import re

__all__ = ["parse_duration", "parse_share_pct"]

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
