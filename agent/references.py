"""The reference profiles of the models this device may serve, by model sha256.

A release's reference profile is signed with the model; the updater keeps it here once the
release is verified (`remember`). The initial model's profile may come from the config
(`[drift] reference`, the `reference.json` of the compression run that made it): a file the
operator put on the device, trusted as the initial model itself is. Files are small JSON
documents under `state_dir/references/`, written atomically and parsed with the same bounds
as the signed ones when read back.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from pathlib import Path

from localio.atomic import write_atomic
from shared.documents import load_json
from shared.errors import Rejected
from shared.reference import ReferenceProfile

__all__ = ["ReferenceBook"]

log = logging.getLogger(__name__)

MAX_REFERENCE_BYTES = 1024 * 1024
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ReferenceBook:
    def __init__(self, state_dir: Path) -> None:
        self.folder = state_dir / "references"
        self._cache: dict[str, ReferenceProfile | None] = {}
        self._lock = threading.Lock()

    def remember(self, sha256: str, reference: ReferenceProfile | None) -> None:
        if not _SHA256.match(sha256) or reference is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        data = json.dumps(reference.to_dict(), sort_keys=True).encode("utf-8")
        write_atomic(self.folder / f"{sha256}.json", data)
        with self._lock:
            self._cache[sha256] = reference

    def get(self, sha256: str) -> ReferenceProfile | None:
        with self._lock:
            if sha256 in self._cache:
                return self._cache[sha256]
        reference = None
        path = self.folder / f"{sha256}.json"
        if _SHA256.match(sha256) and path.exists():
            try:
                reference = ReferenceProfile.parse(
                    load_json(path.read_bytes(), MAX_REFERENCE_BYTES), "reference"
                )
            except (OSError, Rejected) as e:
                log.warning("the reference profile of %s is unreadable: %s", sha256[:12], e)
        with self._lock:
            self._cache[sha256] = reference
        return reference
