"""Getting a release's target bytes: from a local folder, a delta, or the full artifact.

Order: a file next to the deployment (offline `apply`), then the delta from the active model
(when the release has one), then the full artifact. A delta that fails in any way falls back
to the full artifact. Every path ends in the same checks:

    compressed bytes: size <= signed size (hard cap while downloading), exact size, sha256
    decompressed:     size <= target size (hard cap while decompressing), sha256

Downloads go to `downloads/<sha256-of-the-artifact>.part` and resume from there after a crash
or a dropped connection (`Unavailable`). When the release is refused in any way (`Rejected`:
hash, size, corrupt bytes, a delta for another base) or a newer deployment supersedes it, its
parts are deleted at once, not left to the 24 h cleanup.

Each download has a deadline of `grace_s + size / min_rate` seconds (`[update]
download_grace_s` and `min_download_rate`), so a mirror that drips bytes cannot hold the
update for ever (`SlowRetrieval`, retried with the usual backoff).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.update.crash import crashpoint
from agent.update.fetch import Fetcher, Transfer
from agent.update.local import ARTIFACT_NAMES, DELTA_NAMES, TARGET_NAMES, find_local
from shared.codec import decompress, delta_decode
from shared.documents import Release
from shared.errors import (
    FetchFailed,
    Rejected,
    SizeExceeded,
    SlowRetrieval,
)
from shared.phases import UpdatePhase
from shared.verify import check_bytes
from shared.vocabulary import Via

__all__ = ["Retrieval", "TargetRetriever"]

log = logging.getLogger(__name__)

PhaseReport = Callable[[UpdatePhase, Via, int, int], None]  # phase, via, bytes done, total


@dataclass(frozen=True)
class Retrieval:
    data: bytes
    via: Via
    delta_error: str = ""  # why a delta was tried and dropped, if it was


def _read_capped(path: Path, cap: int) -> bytes:
    with path.open("rb") as f:
        data = f.read(cap + 1)
    if len(data) > cap:
        raise SizeExceeded(f"{path.name} holds more than the signed {cap} bytes")
    return data


@dataclass(frozen=True)
class Pace:
    """How long a download may take: `grace_s + bytes / min_rate` (bytes per second)."""

    min_rate: int = 16 * 1024
    grace_s: float = 60.0

    def deadline_s(self, size: int) -> float:
        return self.grace_s + size / self.min_rate


class TargetRetriever:
    def __init__(
        self,
        downloads: Path,
        fetcher_for: Callable[[str], Fetcher],
        report: PhaseReport,
        local_dirs: Sequence[Path] = (),
        transfer: Transfer | None = None,
        pace: Pace = Pace(),
    ) -> None:
        self.downloads = downloads
        self.downloads.mkdir(parents=True, exist_ok=True)
        self._fetcher_for = fetcher_for
        self._report = report
        self._local = tuple(local_dirs)
        self._transfer = transfer or Transfer()
        self._pace = pace

    def obtain(self, release: Release, base: tuple[str, Path] | None) -> Retrieval:
        """The verified target bytes; `base` is the active model (sha256, file) for deltas.

        A `Rejected` release leaves no partial download behind.
        """
        try:
            return self._obtain(release, base)
        except Rejected:
            self.discard(release)
            raise

    def _obtain(self, release: Release, base: tuple[str, Path] | None) -> Retrieval:
        target = release.target
        local = self._from_local(release, base)
        if local is not None:
            return local
        delta_error = ""
        delta = release.delta_for(base[0]) if base is not None else None
        if delta is not None and base is not None:
            try:
                raw = self._download(delta.url, delta.sha256, delta.size, Via.DELTA)
                crashpoint("retrieval.delta_downloaded")
                data = self._rebuild_delta(base[1], raw, release)
                return Retrieval(data, Via.DELTA)
            except (Rejected, FetchFailed) as e:
                if isinstance(e, SlowRetrieval):
                    raise  # the same mirror serves the full artifact: retry later instead
                if isinstance(e, Rejected):
                    (self.downloads / f"{delta.sha256}.part").unlink(missing_ok=True)
                delta_error = f"delta failed ({e.reason}: {e}); fetching the full artifact"
                log.warning("%s", delta_error)
        art = release.artifact
        raw = self._download(art.url, art.sha256, art.size, Via.FULL)
        crashpoint("retrieval.full_downloaded")
        self._report(UpdatePhase.VERIFYING, Via.FULL, art.size, art.size)
        data = decompress(raw, target.size)
        check_bytes(data, target.size, target.sha256, "decompressed model")
        return Retrieval(data, Via.FULL, delta_error)

    def _rebuild_delta(self, base_path: Path, raw: bytes, release: Release) -> bytes:
        target = release.target
        self._report(UpdatePhase.VERIFYING, Via.DELTA, len(raw), len(raw))
        data = delta_decode(base_path.read_bytes(), raw, target.size)
        check_bytes(data, target.size, target.sha256, "model rebuilt from the delta")
        return data

    def _from_local(self, release: Release, base: tuple[str, Path] | None) -> Retrieval | None:
        if not self._local:
            return None
        target = release.target
        path = find_local(self._local, target.sha256, TARGET_NAMES)
        if path is not None:
            data = _read_capped(path, target.size)
            check_bytes(data, target.size, target.sha256, path.name)
            return Retrieval(data, Via.LOCAL)
        delta = release.delta_for(base[0]) if base is not None else None
        if delta is not None and base is not None:
            path = find_local(self._local, delta.sha256, DELTA_NAMES)
            if path is not None:
                try:
                    raw = _read_capped(path, delta.size)
                    check_bytes(raw, delta.size, delta.sha256, path.name)
                    return Retrieval(self._rebuild_delta(base[1], raw, release), Via.LOCAL)
                except Rejected as e:
                    log.warning("local delta %s refused (%s); trying the full artifact", path, e)
        art = release.artifact
        path = find_local(self._local, art.sha256, ARTIFACT_NAMES)
        if path is None:
            return None
        raw = _read_capped(path, art.size)
        check_bytes(raw, art.size, art.sha256, path.name)
        self._report(UpdatePhase.VERIFYING, Via.LOCAL, art.size, art.size)
        data = decompress(raw, target.size)
        check_bytes(data, target.size, target.sha256, "decompressed model")
        return Retrieval(data, Via.LOCAL)

    def _download(self, url: str, sha256: str, size: int, via: Via) -> bytes:
        part = self.downloads / f"{sha256}.part"
        self._report(UpdatePhase.DOWNLOADING, via, _size(part), size)
        self._transfer.limit(self._pace.deadline_s(size - min(_size(part), size)))
        try:
            self._fetcher_for(url).fetch(
                url,
                part,
                size,
                lambda done: self._report(UpdatePhase.DOWNLOADING, via, done, size),
                self._transfer,
            )
        except SizeExceeded:
            part.unlink(missing_ok=True)
            raise
        data = part.read_bytes()
        try:
            check_bytes(data, size, sha256, f"{via} artifact")
        except Rejected:
            part.unlink(missing_ok=True)
            raise
        return data

    def discard(self, release: Release) -> None:
        """Remove this release's partial and complete downloads (once its model is installed)."""
        for sha in (release.artifact.sha256, *(d.sha256 for d in release.deltas)):
            (self.downloads / f"{sha}.part").unlink(missing_ok=True)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
