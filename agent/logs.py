"""Logging set-up for the agent process: JSON lines under systemd, readable lines on a terminal.

Everything goes to stderr and the journal keeps it (no log files to rotate on an SD card).
`configure_logging("auto")` picks JSON when systemd started us (`$JOURNAL_STREAM` or
`$INVOCATION_ID` is set) and text otherwise; `"json"` and `"text"` force a format (the agent
config's `log_format`). When stderr really is the journal stream, each line starts with a
`<N>` syslog priority prefix, which journald strips and stores as the entry's priority, so
`journalctl -p warning` works.

A JSON line holds `ts` (UTC, ISO 8601), `level`, `logger`, `msg` (already formatted), `thread`,
`exc` when an exception was logged, and any `extra=` fields.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

__all__ = ["JsonFormatter", "configure_logging", "resolve_format"]

FORMATS = ("auto", "json", "text")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
# syslog priorities (sd-daemon.h) for the journal's `<N>` prefix
_PRIORITY = {"CRITICAL": 2, "ERROR": 3, "WARNING": 4, "INFO": 6, "DEBUG": 7}


class JsonFormatter(logging.Formatter):
    """One JSON object per line; `journal_prefix` adds the `<N>` priority for journald."""

    def __init__(self, journal_prefix: bool = False) -> None:
        super().__init__()
        self.journal_prefix = journal_prefix

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "thread": record.threadName,
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and key not in entry:
                entry[key] = value
        line = json.dumps(entry, default=str, ensure_ascii=False)
        if self.journal_prefix:
            return f"<{_PRIORITY.get(record.levelname, 6)}>{line}"
        return line


class _LiteFleetHandler(logging.StreamHandler[TextIO]):
    """Marks the handler this module installed, so a second call replaces it."""


def resolve_format(fmt: str, environ: Mapping[str, str] | None = None) -> str:
    """`json` or `text` for a configured format (`auto` looks at systemd's variables)."""
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt != "auto":
        return fmt
    env = os.environ if environ is None else environ
    return "json" if env.get("JOURNAL_STREAM") or env.get("INVOCATION_ID") else "text"


def configure_logging(fmt: str = "auto", level: str = "INFO", stream: TextIO | None = None) -> None:
    """Install one handler on the root logger (replacing an earlier one from this function)."""
    name = level.upper()
    if name not in LEVELS:
        raise ValueError(f"log level {level!r} is not one of {', '.join(LEVELS)}")
    resolved = resolve_format(fmt)
    out = sys.stderr if stream is None else stream
    handler = _LiteFleetHandler(out)
    if resolved == "json":
        handler.setFormatter(JsonFormatter(journal_prefix=_is_journal_stream(out)))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _LiteFleetHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(name)


def _is_journal_stream(stream: TextIO) -> bool:
    """True when `stream` is the journal socket systemd connected (`$JOURNAL_STREAM=dev:ino`)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not dev.isdigit() or not ino.isdigit():
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return st.st_dev == int(dev) and st.st_ino == int(ino)
