"""What is installed, read from the state dir: the active model's identity and the journal phase.

Used by `Updater` and by `litefleet-agent status`, whether or not the daemon runs (SQLite in
WAL mode lets readers in while the daemon writes).
"""

from __future__ import annotations

from pathlib import Path

from agent.config import AgentConfig
from agent.store import open_store
from agent.update.journal import UpdateJournal
from agent.update.modelstore import ACTIVE, ModelStore, file_sha256
from shared.messages import ModelIdentity

__all__ = ["active_identity", "read_update_state"]


def active_identity(
    config: AgentConfig, store: ModelStore, journal: UpdateJournal
) -> ModelIdentity:
    """The model the `active` link names, or the configured initial model (version 0)."""
    sha = store.link(ACTIVE)
    if sha is None:
        return ModelIdentity(config.model.name, 0, _initial_sha(config.model.initial))
    version = journal.model_version(sha)
    return ModelIdentity(config.model.name, version if version is not None else 0, sha)


def _initial_sha(path: Path) -> str:
    try:
        return file_sha256(path)
    except OSError:
        return ""


def read_update_state(config: AgentConfig) -> tuple[ModelIdentity, str]:
    """(active model, journal phase) as recorded in the state dir."""
    db = open_store(config.state_dir)
    try:
        journal = UpdateJournal(db)
        try:
            store = ModelStore(config.state_dir, config.model.name)
            return active_identity(config, store, journal), journal.phase()
        finally:
            journal.close()
    finally:
        db.close()
