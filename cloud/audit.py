"""The audit trail: every state-changing operator action, appended and never changed.

Each `litefleet` command that changes the fleet calls `record` once: who (the OS user running
the command, or the dashboard user when one is given), what (an `Action` and its target),
when, and the sha256 of the document it signed (a release, a root, a command; a rollout's
deployments are kept in `rollout_devices`, the row names the release they bind). The store
offers no way to change a row: this module only inserts and reads, and on SQLite triggers
refuse UPDATE and DELETE on the table (`cloud.store`).
"""

from __future__ import annotations

import getpass
import hashlib
import time
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from cloud.store import Store
from cloud.store.trail import append_audit, audit_rows
from shared.canonical import canonical_json

__all__ = ["Action", "AuditEntry", "document_sha256", "entries", "record"]

MAX_DETAIL = 1000


class Action(StrEnum):
    RELEASE = "release"
    DEPLOY = "deploy"
    ROLLOUT_PAUSE = "rollout.pause"
    ROLLOUT_RESUME = "rollout.resume"
    ROLLOUT_ABORT = "rollout.abort"
    COMMAND = "command"
    KEYS_ROTATE = "keys.rotate"
    TRUST_PUBLISH = "trust.publish"
    GROUP_ADD = "group.add"
    GROUP_REMOVE = "group.remove"
    USER_ADD = "user.add"
    USER_REMOVE = "user.remove"


@dataclass(frozen=True)
class AuditEntry:
    id: int
    ts: float
    actor: str
    action: str
    target: str
    sha256: str
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def document_sha256(envelope: dict[str, Any]) -> str:
    """The sha256 of a signed envelope's canonical `signed` part: what the signatures cover."""
    return hashlib.sha256(canonical_json(envelope["signed"])).hexdigest()


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        return "unknown"


def record(
    store: Store,
    action: Action,
    target: str,
    *,
    signed: dict[str, Any] | None = None,
    sha256: str = "",
    detail: str = "",
    actor: str | None = None,
) -> None:
    """Append one row (committed at once). `signed` is the envelope the action signed (its
    `document_sha256` is recorded), else `sha256` is; `actor` defaults to the OS user."""
    if signed is not None:
        sha256 = document_sha256(signed)
    append_audit(
        store,
        {
            "ts": time.time(),
            "actor": actor or _os_user(),
            "action": action.value,
            "target": target,
            "sha256": sha256,
            "detail": detail[:MAX_DETAIL],
        },
    )


def entries(store: Store, since: float = 0.0, limit: int = 1000) -> list[AuditEntry]:
    """Rows at or after `since` (epoch seconds), oldest first, at most the newest `limit`."""
    return [AuditEntry(*row) for row in audit_rows(store, since, limit)]
