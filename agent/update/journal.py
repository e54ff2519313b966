"""The update journal: one row per update attempt, persisted in the device store.

    downloading -> verifying -> validating -> staged -> activating -> probation
         -> committed | rolled_back | rejected | idle

(the allowed moves are declared once, in `shared.phases.TRANSITIONS`; `Attempts.advance` is
the one caller that changes a phase)

A row is written before the step it names is taken, so after a crash the last row says what
may be half done. `update_models` remembers the name and version of every model that was ever
verified here, so the active link (a sha256) can be reported as `name@version`, together with
the key ids that signed its release and whether a later root stopped trusting them
(`agent.update.installed`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from agent.store import DeviceStore
from shared.keys import HEX64
from shared.phases import MODEL_REASONS, UpdatePhase

__all__ = ["JournalEntry", "JournalValue", "ModelRecord", "UpdateJournal"]

ATTEMPTS = "update_journal"
MODELS = "update_models"
MAX_ROWS = 1000  # attempts kept; older ones are trimmed
JournalValue = str | int | float  # what a journal column holds


@dataclass(frozen=True)
class JournalEntry:
    id: int
    rollout_id: str
    model: str
    version: int
    sha256: str
    phase: UpdatePhase
    reason: str = ""
    detail: str = ""
    via: str = ""
    from_sha256: str = ""  # active before this update
    prev_sha256: str = ""  # previous before this update
    deployment: str = ""  # the verified deployment document, for resuming
    started: float = 0.0
    updated: float = 0.0
    probation_started: float = 0.0
    interruptions: int = 0  # restarts of the agent while this attempt was on probation

    @property
    def terminal(self) -> bool:
        return self.phase.terminal


_COLUMNS = {f.name for f in fields(JournalEntry)}


@dataclass(frozen=True)
class ModelRecord:
    """A model verified here: its release's name and version, and who signed that release."""

    sha256: str
    name: str
    version: int
    signers: tuple[str, ...] | None  # None: verified before the signers were kept
    distrusted: bool  # the current root does not trust those signers (reported once)


class UpdateJournal:
    """The journal on a connection of its own to the device store (other parts of the agent
    write on theirs from other threads); callers serialize writes (the updater's lock)."""

    def __init__(self, store: DeviceStore) -> None:
        self._db = store.database()  # the tables are the store's (`agent.store`)

    # attempts ---------------------------------------------------------------------------

    def latest(self) -> JournalEntry | None:
        rows = list(self._db.query(f"SELECT * FROM {ATTEMPTS} ORDER BY id DESC LIMIT 1"))
        return _entry(rows[0]) if rows else None

    def in_progress(self) -> JournalEntry | None:
        """The newest attempt that has not reached a terminal phase, if any."""
        marks = ", ".join("?" for _ in UpdatePhase.TERMINAL)
        rows = list(
            self._db.query(
                f"SELECT * FROM {ATTEMPTS} WHERE phase NOT IN ({marks}) ORDER BY id DESC LIMIT 1",
                UpdatePhase.TERMINAL,
            )
        )
        return _entry(rows[0]) if rows else None

    def phase(self) -> UpdatePhase:
        entry = self.in_progress() or self.latest()
        return entry.phase if entry else UpdatePhase.IDLE

    def begin(self, **values: JournalValue) -> JournalEntry:
        now = time.time()
        row = {k: _storable(v) for k, v in values.items() if k in _COLUMNS}
        row.update(started=now, updated=now)
        with self._db.conn:
            table = self._db.table(ATTEMPTS)
            table.insert(row)
            entry_id = int(self._db.execute("SELECT last_insert_rowid()").fetchone()[0])
            self._db.execute(f"DELETE FROM {ATTEMPTS} WHERE id <= ?", [entry_id - MAX_ROWS])
        return self.get(entry_id)

    def close(self) -> None:
        self._db.close()

    def get(self, entry_id: int) -> JournalEntry:
        return _entry(self._db.table(ATTEMPTS).get(entry_id))

    def update(self, entry_id: int, **values: JournalValue) -> JournalEntry:
        unknown = set(values) - _COLUMNS
        if unknown:
            raise RuntimeError(f"unknown journal columns {sorted(unknown)}")
        values = {k: _storable(v) for k, v in values.items()}
        values["updated"] = time.time()
        with self._db.conn:
            self._db.table(ATTEMPTS).update(entry_id, values)
        return self.get(entry_id)

    def condemned(self, sha256: str, version: int) -> JournalEntry | None:
        """An earlier attempt that found these exact bytes at this version unfit to serve."""
        marks = ", ".join("?" for _ in MODEL_REASONS)
        rows = list(
            self._db.query(
                f"SELECT * FROM {ATTEMPTS} WHERE sha256 = ? AND version = ? "
                f"AND phase IN (?, ?) AND reason IN ({marks}) ORDER BY id DESC LIMIT 1",
                [sha256, version, UpdatePhase.ROLLED_BACK, UpdatePhase.REJECTED, *MODEL_REASONS],
            )
        )
        return _entry(rows[0]) if rows else None

    # models -----------------------------------------------------------------------------

    def remember_model(
        self, sha256: str, name: str, version: int, signers: Sequence[str] | None = None
    ) -> None:
        """Record a verified model; `signers` are the key ids whose signatures on its release
        verified (None for a model that came with no release: the configured initial one)."""
        with self._db.conn:
            self._db.table(MODELS).upsert(
                {
                    "sha256": sha256,
                    "name": name,
                    "version": version,
                    "verified": time.time(),
                    "signers": json.dumps(sorted(signers)) if signers is not None else None,
                    "distrusted": 0,
                },
                pk="sha256",
            )

    def model_version(self, sha256: str) -> int | None:
        rows = list(self._db.query(f"SELECT version FROM {MODELS} WHERE sha256 = ?", [sha256]))
        return int(rows[0]["version"]) if rows else None

    def model(self, sha256: str) -> ModelRecord | None:
        rows = list(
            self._db.query(
                f"SELECT sha256, name, version, signers, distrusted FROM {MODELS} WHERE sha256 = ?",
                [sha256],
            )
        )
        if not rows:
            return None
        row = rows[0]
        return ModelRecord(
            row["sha256"],
            row["name"] or "",
            int(row["version"] or 0),
            _signers(row["signers"]),
            bool(row["distrusted"]),
        )

    def distrust_model(self, sha256: str, distrusted: bool) -> None:
        with self._db.conn:
            self._db.execute(
                f"UPDATE {MODELS} SET distrusted = ? WHERE sha256 = ?", [int(distrusted), sha256]
            )

    def installing_deployment(self, sha256: str, version: int) -> str | None:
        """The deployment document of the newest attempt that made this model, at this version,
        active (verified when it arrived); None when the journal no longer holds one."""
        rows = list(
            self._db.query(
                f"SELECT deployment FROM {ATTEMPTS} WHERE sha256 = ? AND version = ? "
                "AND phase IN (?, ?) AND deployment != '' ORDER BY id DESC LIMIT 1",
                [sha256, version, UpdatePhase.COMMITTED, UpdatePhase.PROBATION],
            )
        )
        return str(rows[0]["deployment"]) if rows else None


def _storable(value: JournalValue) -> JournalValue:
    """Text SQLite can store: a lone surrogate quoted from hostile input is escaped."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _signers(text: str | None) -> tuple[str, ...] | None:
    """Recorded key ids; None (not recorded) for a missing or unreadable value."""
    try:
        value = json.loads(text) if text is not None else None
    except ValueError:
        return None
    if not isinstance(value, list) or not all(isinstance(k, str) and HEX64.match(k) for k in value):
        return None
    return tuple(value)


def _entry(row: dict[str, Any]) -> JournalEntry:
    values: dict[str, Any] = {
        k: (v if v is not None else _default(k)) for k, v in row.items() if k in _COLUMNS
    }
    values["phase"] = UpdatePhase(values["phase"])
    return JournalEntry(**values)


def _default(key: str) -> JournalValue:
    if key == "interruptions":
        return 0
    return 0.0 if key in ("started", "updated", "probation_started") else ""
