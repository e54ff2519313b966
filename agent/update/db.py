"""The device store the update journal lives in: `agent.store`'s `agent.db` (WAL)."""

from __future__ import annotations

from pathlib import Path

import sqlite_utils

from agent.store import open_store

__all__ = ["open_device_store"]


def open_device_store(state_dir: Path) -> sqlite_utils.Database:
    return open_store(state_dir)
