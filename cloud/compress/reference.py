"""The reference profile of the model a compression run chose: its evaluation set's input
statistics and output distribution (`shared.features`), written as `reference.json` next to
the report, for `litefleet release` to sign with the model."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cloud.compress.litert import TFLiteModel
from localio.atomic import write_atomic
from shared.documents import IOSignature, load_json
from shared.errors import MalformedDocument
from shared.features import build_reference
from shared.reference import (
    DEFAULT_CONFIDENCE_PCT,
    DEFAULT_DRIFT_THRESHOLD_MILLI,
    ReferenceProfile,
)

__all__ = ["FILE_NAME", "MAX_SAMPLES", "compute_reference", "read_reference", "write_reference"]

FILE_NAME = "reference.json"
MAX_SAMPLES = 1000  # evaluation samples the profile is computed on (the first ones)


def compute_reference(
    blob: bytes, signature: IOSignature, inputs: Sequence[np.ndarray], threads: int = 1
) -> ReferenceProfile:
    """Run the model over (at most MAX_SAMPLES of) `inputs` and profile what it saw and said."""
    head = [x[:MAX_SAMPLES] for x in inputs]
    outputs = TFLiteModel(blob, threads).predict(head)
    return build_reference(
        signature,
        head[0],
        outputs,
        drift_threshold_milli=DEFAULT_DRIFT_THRESHOLD_MILLI,
        confidence_threshold_pct=DEFAULT_CONFIDENCE_PCT,
    )


def write_reference(out_dir: Path, reference: ReferenceProfile) -> Path:
    path = out_dir / FILE_NAME
    write_atomic(path, (json.dumps(reference.to_dict(), sort_keys=True) + "\n").encode("utf-8"))
    return path


def read_reference(path: Path) -> ReferenceProfile:
    """A reference.json, bounded and parsed like the signed one (MalformedDocument if bad)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise MalformedDocument(f"cannot read {path}: {e.strerror}", "reference") from e
    return ReferenceProfile.parse(load_json(data, 1024 * 1024), "reference")
