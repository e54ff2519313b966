"""`litefleet-agent apply --config F DEPLOYMENT.json`: the offline update path.

The same pipeline as a deployment arriving over MQTT. Artifacts are looked for by sha256 in
the deployment file's folder first (see `agent.update.local` for the naming), then fetched
from the release's URLs. When the daemon runs, it performs the update (hot swap and
probation) and `apply` waits for its answer; when it does not, `apply` installs and commits
the model itself. Exit 0 once the update is active, EXIT_REJECTED with the typed reason when
it is refused, EXIT_UNAVAILABLE when the artifact could not be fetched (retry later).

A `roots.json` next to the deployment (the root chain `litefleet deploy --out` writes) is
walked first, so a bundle signed by rotated keys installs on a device that was offline when
the new root was published.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from agent.commands._config import load_or_report
from agent.config import AgentConfig
from agent.outbox import Outbox
from agent.store import open_store
from agent.update import Updater
from agent.update.handover import MAX_SPOOL_BYTES, UpdateLock, submit, wait_result
from agent.update.trust import TrustStore
from localio.cli import EXIT_INVALID, EXIT_REJECTED, EXIT_UNAVAILABLE
from shared.errors import Rejected, Unavailable
from shared.root import BUNDLE_FILE

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "apply",
        help="install a signed deployment from a file (the offline update path)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, type=Path, help="the agent config (agent.toml)")
    p.add_argument("deployment", type=Path, help="a signed deployment document (JSON)")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    p.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        help="seconds to wait for a running daemon's answer (default 900)",
    )
    p.set_defaults(func=_apply)


def _exit_code(outcome: dict[str, Any]) -> int:
    if outcome.get("active"):
        return 0
    if outcome.get("reason") == "fetch_failed" or outcome.get("phase") == "idle":
        return EXIT_UNAVAILABLE
    return EXIT_REJECTED


def _print(outcome: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(outcome, sort_keys=True))
        return
    target = f"{outcome.get('model', '')}@{outcome.get('version', '')}"
    if outcome.get("active"):
        how = "already active" if outcome.get("no_op") else outcome.get("phase")
        print(f"{target} is active ({how}, via {outcome.get('via') or 'daemon'})")
    else:
        print(f"update refused: {outcome.get('reason')}: {outcome.get('detail')}", file=sys.stderr)


def _walk_roots(config: AgentConfig, path: Path) -> bool:
    """Walk the bundle's root chain, if any; False (and one line) when it is refused."""
    if not path.is_file():
        return True
    try:
        TrustStore(config.trust, config.state_dir).offer(path.read_bytes())
    except Rejected as e:
        print(f"error: {path}: root refused: {e.reason}: {e}", file=sys.stderr)
        return False
    except OSError as e:
        print(f"error: {path}: {e.strerror}", file=sys.stderr)
        return False
    return True


def _apply(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return EXIT_INVALID
    path: Path = args.deployment
    try:
        with path.open("rb") as f:
            data = f.read(MAX_SPOOL_BYTES + 1)
    except OSError as e:
        print(f"error: {path}: {e.strerror}", file=sys.stderr)
        return EXIT_INVALID
    folders = [path.resolve().parent]
    if not _walk_roots(config, folders[0] / BUNDLE_FILE):
        return EXIT_REJECTED
    lock = UpdateLock(config.state_dir)
    if not lock.acquire():
        request = submit(config.state_dir, data, folders)
        outcome = wait_result(config.state_dir, request, args.timeout)
        if outcome is None:
            print(
                f"error: the running agent did not answer within {args.timeout:.0f} s",
                file=sys.stderr,
            )
            return EXIT_UNAVAILABLE
        outcome.setdefault("active", outcome.get("phase") in ("probation", "committed"))
        _print(outcome, args.json)
        return _exit_code(outcome)
    db = open_store(config.state_dir, config.outbox.synchronous)
    outbox = Outbox(db, config.outbox)
    updater = Updater(config, db, outbox, lambda: None, lock=lock)
    try:
        updater.recover()
        result = updater.handle_deployment(data, folders).to_dict()
    except Unavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    finally:
        updater.close()
        outbox.close()
        db.close()
    _print(result, args.json)
    return _exit_code(result)
