"""What every stage of an update works on: the config, the model store, the journal, the
steps (`Attempts`), the model loader and the clocks. Built once by `Updater`."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from agent.config import AgentConfig
from agent.update.attempts import Attempts
from agent.update.journal import UpdateJournal
from agent.update.modelstore import ModelStore
from agent.update.state import active_identity
from shared.documents import IOSignature, Release
from shared.messages import ModelIdentity

if TYPE_CHECKING:
    from agent.loop import InferenceResult
    from agent.runtime.protocol import Model, ModelLoader

__all__ = ["DisagreementHook", "Loop", "ReleaseHook", "UpdateContext"]

log = logging.getLogger(__name__)

STALE_DOWNLOAD_S = 24 * 3600  # partial downloads untouched this long are removed


ReleaseHook = Callable[[Release], None]
# (new model sha256, the frame's inputs, new top-1, previous top-1)
DisagreementHook = Callable[[str, list[np.ndarray], int | None, int | None], None]


class Loop(Protocol):
    """The inference loop, as the updater sees it (`agent.loop.InferenceLoop`)."""

    @property
    def model(self) -> Model: ...
    def swap(self, model: Model, timeout: float = 5.0) -> Model: ...
    def recent_inputs(self) -> list[list[np.ndarray]]: ...
    def add_listener(self, fn: Callable[[InferenceResult], None]) -> None: ...


@dataclass
class UpdateContext:
    config: AgentConfig
    journal: UpdateJournal
    store: ModelStore
    steps: Attempts
    loader: ModelLoader
    now: Callable[[], datetime]  # wall clock, for document expiry
    clock: Callable[[], float] = time.monotonic  # for waits: probation, retries, progress
    loop: Loop | None = None
    on_release: ReleaseHook | None = None  # each staged release, before activation
    on_disagreement: DisagreementHook | None = None  # shadow disagreements on probation
    _io: dict[str, IOSignature] = field(default_factory=dict)

    @property
    def downloads(self) -> Path:
        return self.config.state_dir / "downloads"

    def load(self, path: Path) -> Model:
        runtime = self.config.profile.runtime
        return self.loader(path, runtime.threads, runtime.delegates)

    def active(self) -> ModelIdentity:
        return active_identity(self.config, self.store, self.journal)

    def active_io(self, sha256: str) -> IOSignature | None:
        """The input/output signature of the model `sha256` (the serving one, or loaded once)."""
        if self.loop is not None:
            current = self.loop.model
            if current.sha256 == sha256:
                return current.signature
        if sha256 not in self._io:
            path = self.store.verified_path(sha256)
            if path is None:
                return None
            model = self.load(path)
            self._io[sha256] = model.signature
            model.close()
        return self._io[sha256]

    def housekeeping(self) -> None:
        """Prune old models (never the one an attempt works on) and stale partial downloads."""
        protect = tuple(e.sha256 for e in (self.journal.in_progress(),) if e is not None)
        try:
            self.store.prune(self.config.update.keep_models, protect)
        except OSError as e:
            log.warning("model housekeeping failed: %s", e)
        cutoff = time.time() - STALE_DOWNLOAD_S
        if self.downloads.is_dir():
            for part in self.downloads.glob("*.part"):
                try:
                    if part.stat().st_mtime < cutoff:
                        log.info("removing stale partial download %s", part.name)
                        part.unlink()
                except OSError:
                    continue
