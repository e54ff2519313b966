"""`litefleet-agent status --config F [--json]`: what the state dir says, daemon running or not.

Reads only: the active model and the update journal's phase, the trusted root (and, when a
root rotation revoked the signers of the installed release, one line saying the device waits
for a trusted release), sample capture (on or off, files waiting for upload), the outbox's
depth and dropped count, and the time of the last delivery the broker acknowledged. SQLite's
WAL mode lets this read while the daemon writes.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.commands._config import load_or_report
from agent.outbox import OutboxStats, read_outbox_stats
from agent.store import open_existing
from agent.update.trust import TrustStore
from localio.cli import EXIT_INVALID
from shared.root import describe

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "status",
        help="active model, update phase, outbox depth, last publish",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, type=Path, help="the agent config (agent.toml)")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=_status)


def _outbox_stats(state_dir: Path) -> OutboxStats:
    store = open_existing(state_dir)
    if store is None:
        return OutboxStats(0, 0, 0, 0, None)
    try:
        return read_outbox_stats(store)
    finally:
        store.close()


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return EXIT_INVALID
    from agent.update.state import read_installed

    installed = read_installed(config)
    model, phase = installed.model, installed.phase
    stats = _outbox_stats(config.state_dir)
    root = TrustStore(config.trust, config.state_dir).current().root
    report: dict[str, Any] = {
        "device_id": config.device_id,
        "state_dir": str(config.state_dir),
        "model": {"name": model.name, "version": model.version, "sha256": model.sha256},
        "journal": {"phase": phase},
        "outbox": {
            "depth": stats.depth,
            "dropped": stats.dropped,
            "bytes": stats.bytes,
            "last_seq": stats.last_seq,
        },
        "last_publish": _iso(stats.last_publish),
        "trust": {
            "root_version": root.version,
            "expires": root.expires,
            "release_keys": [k.keyid for k in root.release_keys],
            "installed_distrusted": installed.distrusted,
        },
        "capture": _capture(config),
    }
    if args.json:
        print(json.dumps(report, sort_keys=True))
        return 0
    print(f"device      {config.device_id}")
    print(f"model       {model.name} v{model.version} ({model.sha256[:12] or 'unknown'})")
    print(f"update      {phase}")
    print(f"trust       {describe(root)}")
    if installed.distrusted:
        print(
            f"            installed release {model.name}@{model.version} is no longer trusted "
            f"by root v{root.version}: waiting for a trusted release"
        )
    print(
        f"outbox      {stats.depth} record(s) waiting, {stats.bytes} bytes, "
        f"{stats.dropped} dropped, last seq {stats.last_seq}"
    )
    print(f"last publish {report['last_publish'] or 'never'}")
    capture = report["capture"]
    print(
        f"capture     {'on' if capture['enabled'] else 'off'}, {capture['files_waiting']} "
        f"sample file(s) waiting for upload, {capture['bytes_waiting']} bytes"
    )
    return 0


def _capture(config: Any) -> dict[str, Any]:
    from agent.capture.recorder import CAPTURE_STATE_FILE, capture_enabled
    from agent.capture.store import SampleStore

    budget = int(config.capture.max_disk_mb * 1024 * 1024)
    waiting = SampleStore(config.state_dir / "samples", budget).waiting()
    return {
        "enabled": capture_enabled(config.capture, config.state_dir / CAPTURE_STATE_FILE),
        "files_waiting": len(waiting),
        "bytes_waiting": sum(p.stat().st_size for p in waiting),
        "budget_bytes": budget,
    }
