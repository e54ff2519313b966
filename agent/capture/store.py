"""Captured samples on the device, waiting for upload: a folder under a disk budget.

A sample is two files in `state_dir/samples/`: the input (`<id>.jpg` for frames, `<id>.npy`
for sensor windows) and `<id>.json` (outputs, model identity, trigger, time), written in that
order, each atomically: a sample whose JSON is there is complete. `<id>` is
`YYYYmmddTHHMMSS-<8 hex>` (UTC), so names sort by time. Each file is deleted once the cloud has
stored it; the budget counts what is still here, and a sample that would exceed it is refused.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from localio.atomic import write_atomic
from shared.samples import SAMPLE_FILE

__all__ = ["SAMPLE_FILE", "SampleStore", "new_sample_id"]

log = logging.getLogger(__name__)


def new_sample_id(now: float) -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + "-" + secrets.token_hex(4)


class SampleStore:
    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self.refused = 0  # samples over the budget

    def used_bytes(self) -> int:
        return sum(p.stat().st_size for p in self._files())

    def _files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if SAMPLE_FILE.match(p.name))

    def keep(self, sample_id: str, ext: str, payload: bytes, meta: dict[str, Any]) -> bool:
        """Write one sample; False (and nothing written) when it does not fit the budget."""
        body = json.dumps(meta, sort_keys=True).encode("utf-8")
        with self._lock:
            if self.used_bytes() + len(payload) + len(body) > self.max_bytes:
                self.refused += 1
                log.info("sample refused: the capture budget of %s bytes is full", self.max_bytes)
                return False
            self.folder.mkdir(parents=True, exist_ok=True)
            write_atomic(self.folder / f"{sample_id}.{ext}", payload)
            write_atomic(self.folder / f"{sample_id}.json", body)
        return True

    def waiting(self) -> list[Path]:
        """The files of complete samples not yet stored by the cloud, oldest first; a sample's
        input before its JSON."""
        files = self._files()
        complete = {p.stem for p in files if p.suffix == ".json"}
        return sorted(
            (p for p in files if p.stem in complete), key=lambda p: (p.stem, p.suffix == ".json")
        )

    def remove(self, name: str) -> None:
        if SAMPLE_FILE.match(name):
            (self.folder / name).unlink(missing_ok=True)
