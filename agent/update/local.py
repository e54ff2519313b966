"""Artifacts that sit next to a deployment file: the offline (`apply`) and sneakernet path.

Files are found by content hash, never by what the deployment's URL says, so a folder of
artifacts can be copied from anywhere (`litefleet deploy --out DIR` writes this layout):

    <artifact.sha256>  or  <artifact.sha256>.zst      the full zstd artifact
    <delta.sha256>     or  <delta.sha256>.delta       a delta (its own sha256, not the base's)
    <target.sha256>.tflite                            the uncompressed model itself

The sha256 in each name is that of the file's own bytes, as signed in the release. A file
found here is still checked (size cap, hash, decompression cap, target hash) like a download.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["ARTIFACT_NAMES", "DELTA_NAMES", "TARGET_NAMES", "find_local"]

ARTIFACT_NAMES = ("{sha256}", "{sha256}.zst")
DELTA_NAMES = ("{sha256}", "{sha256}.delta")
TARGET_NAMES = ("{sha256}.tflite",)


def find_local(folders: Sequence[Path], sha256: str, patterns: Sequence[str]) -> Path | None:
    """The first regular file in `folders` named after `sha256` by one of `patterns`."""
    for folder in folders:
        for pattern in patterns:
            path = folder / pattern.format(sha256=sha256)
            if path.is_file():
                return path
    return None
