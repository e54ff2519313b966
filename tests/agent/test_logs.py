"""Log lines: JSON under systemd or by config, readable text on a terminal."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.logs import configure_logging, resolve_format


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


def test_json_lines_carry_the_record() -> None:
    out = io.StringIO()
    configure_logging("json", "DEBUG", stream=out)
    log = logging.getLogger("agent.test")
    log.info("model %s loaded in %.1f ms", "digits", 12.34, extra={"sha256": "ab" * 32})
    try:
        raise RuntimeError("broken frame")
    except RuntimeError:
        log.exception("inference failed")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["msg"] == "model digits loaded in 12.3 ms"
    assert first["level"] == "INFO" and first["logger"] == "agent.test"
    assert first["sha256"] == "ab" * 32
    assert first["ts"].endswith("+00:00")
    assert second["level"] == "ERROR"
    assert "RuntimeError: broken frame" in second["exc"]


def test_text_lines_are_readable() -> None:
    out = io.StringIO()
    configure_logging("text", "INFO", stream=out)
    logging.getLogger("agent.test").debug("hidden")
    logging.getLogger("agent.test").warning("source %s down", "camera:0")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith("WARNING agent.test: source camera:0 down")


def test_second_call_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("text", stream=first)
    configure_logging("json", stream=second)
    logging.getLogger("agent.test").info("once")
    assert first.getvalue() == ""
    assert json.loads(second.getvalue())["msg"] == "once"


@pytest.mark.parametrize(
    ("fmt", "env", "expected"),
    [
        ("auto", {}, "text"),
        ("auto", {"INVOCATION_ID": "0123abcd"}, "json"),
        ("auto", {"JOURNAL_STREAM": "8:12345"}, "json"),
        ("text", {"INVOCATION_ID": "0123abcd"}, "text"),
        ("json", {}, "json"),
    ],
)
def test_auto_format_follows_systemd(fmt: str, env: dict[str, str], expected: str) -> None:
    assert resolve_format(fmt, env) == expected


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="log format"):
        configure_logging("yaml")
    with pytest.raises(ValueError, match="log level"):
        configure_logging("text", "LOUD")


def test_journal_stream_gets_priority_prefix(tmp_path: Path) -> None:
    """When stderr is the stream named by $JOURNAL_STREAM, lines carry journald's <N> prefix."""
    err = tmp_path / "stderr"
    script = (
        "import logging, os, sys\n"
        "st = os.fstat(2)\n"
        "os.environ['JOURNAL_STREAM'] = f'{st.st_dev}:{st.st_ino}'\n"
        "from agent.logs import configure_logging\n"
        "configure_logging('auto')\n"
        "logging.getLogger('agent.x').warning('disk %s', 'low')\n"
        "logging.getLogger('agent.x').info('fine')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "INVOCATION_ID")}
    with err.open("w") as f:
        subprocess.run([sys.executable, "-c", script], stderr=f, env=env, check=True, timeout=60)
    warn, info = err.read_text().splitlines()
    assert warn.startswith("<4>{") and json.loads(warn[3:])["msg"] == "disk low"
    assert info.startswith("<6>{")
