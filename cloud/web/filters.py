"""Jinja filters: how times, sizes and figures read on the pages."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

__all__ = ["FILTERS"]


def ago(ts: float | None) -> str:
    """`12 s ago`, `5 min ago`, `3 h ago`, else the UTC date."""
    if not ts:
        return "never"
    dt = time.time() - float(ts)
    if dt < 0:
        return "just now"
    if dt < 90:
        return f"{int(dt)} s ago"
    if dt < 90 * 60:
        return f"{int(dt / 60)} min ago"
    if dt < 36 * 3600:
        return f"{int(dt / 3600)} h ago"
    return utc(ts)


def utc(ts: float | None) -> str:
    if not ts:
        return "-"
    return datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def size(n: Any) -> str:
    if not isinstance(n, int | float):
        return "-"
    if n < 1024:
        return f"{int(n)} B"
    if n < 1 << 20:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1 << 20):.1f} MiB"


def bytes_of(done: Any, total: Any) -> str:
    """`1.2 MiB of 4.0 MiB`: how far a download got; `-` before its size is known."""
    if not total:
        return "-"
    return f"{size(done)} of {size(total)}"


def num(v: Any, digits: int = 1) -> str:
    return f"{float(v):.{digits}f}" if isinstance(v, int | float) else "-"


def pct(part: Any, whole: Any) -> float:
    """`part` as a percentage of `whole`, for progress bar widths."""
    return round(100.0 * float(part) / float(whole), 1) if whole else 0.0


FILTERS = {
    "ago": ago,
    "utc": utc,
    "size": size,
    "bytes_of": bytes_of,
    "num": num,
    "pct": pct,
}
