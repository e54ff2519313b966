"""What is installed, read from the state dir: the active model's identity, the journal phase,
and whether the current root still trusts the active release (`update_models.distrusted`, set
by `agent.update.installed` when a new root drops its signers).

Used by `Updater` and by `litefleet-agent status`, whether or not the daemon runs (SQLite in
WAL mode lets readers in while the daemon writes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent.config import AgentConfig
from agent.store import open_store
from agent.update.journal import UpdateJournal
from agent.update.modelstore import ACTIVE, ModelStore, file_sha256
from shared.messages import ModelIdentity

__all__ = ["Installed", "active_identity", "read_installed", "read_update_state"]


@dataclass(frozen=True)
class Installed:
    """The active model, the journal's phase, and whether the active release is distrusted."""

    model: ModelIdentity
    phase: str
    distrusted: bool


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
    installed = read_installed(config)
    return installed.model, installed.phase


def read_installed(config: AgentConfig) -> Installed:
    """What the state dir records about the active release (see `Installed`)."""
    db = open_store(config.state_dir)
    try:
        journal = UpdateJournal(db)
        try:
            store = ModelStore(config.state_dir, config.model.name)
            model = active_identity(config, store, journal)
            record = journal.model(model.sha256) if model.version else None
            distrusted = record is not None and record.distrusted
            return Installed(model, journal.phase(), distrusted)
        finally:
            journal.close()
    finally:
        db.close()
