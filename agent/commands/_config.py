"""What the commands that take `--config` share: load it, or print its problems."""

from __future__ import annotations

import sys
from pathlib import Path

from agent.config import AgentConfig, ConfigInvalid, load_config

__all__ = ["load_or_report"]


def load_or_report(path: Path) -> AgentConfig | None:
    """The config at `path`, or None after printing one line per problem to stderr."""
    try:
        return load_config(path)
    except ConfigInvalid as e:
        for line in e.problems:
            print(line, file=sys.stderr)
        return None
