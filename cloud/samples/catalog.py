"""The operator's view of captured samples: list them from the artifact store, and pull a
selection into a dataset `litefleet compress --data` accepts.

Each sample's JSON (`samples/<device>/<id>.json`) is read with a size cap and checked before
it is used; a sample whose input is missing or does not decode is skipped with a warning (one
bad upload never spoils a pull). The dataset is an `.npz` with `x` (the model inputs, real
values, as the device fed them), `y` (the served model's predicted class; -1 for models that
are not classifiers), `trigger` (why each was kept) and `sample` (each sample's id), and a
`dataset.json` next to it naming the selection and the `.npz`'s sha256 (what a release's
provenance can cite: `litefleet release --samples`).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cloud.artifacts import ArtifactStore, StoreError
from localio.atomic import write_atomic
from shared.documents import load_json
from shared.errors import Rejected
from shared.samples import MAX_SAMPLE_FILE_BYTES, SAMPLE_FILE

__all__ = ["Sample", "list_samples", "pull_samples"]

log = logging.getLogger(__name__)

MAX_META_BYTES = 1024 * 1024
TRIGGERS = ("low_confidence", "disagreement", "drift", "command")


@dataclass(frozen=True)
class Sample:
    device_id: str
    id: str
    trigger: str
    time: float
    model: dict[str, Any] | None
    input_key: str
    meta: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "id": self.id,
            "trigger": self.trigger,
            "time": self.time,
            "model": self.model,
            "input_key": self.input_key,
        }


def _sample(store_keys: set[str], key: str, raw: bytes) -> Sample | None:
    device_id, name = key.split("/")[1:3]
    meta = load_json(raw, MAX_META_BYTES)
    if not isinstance(meta, dict):
        return None
    trigger, when = meta.get("trigger"), meta.get("time")
    if trigger not in TRIGGERS or isinstance(when, bool) or not isinstance(when, (int, float)):
        return None
    stem = name.removesuffix(".json")
    ext = "jpg" if meta.get("encoding") == "jpeg" else "npy"
    input_key = f"samples/{device_id}/{stem}.{ext}"
    if input_key not in store_keys:
        return None  # its input is not uploaded (yet)
    model = meta.get("model") if isinstance(meta.get("model"), dict) else None
    return Sample(device_id, stem, str(trigger), float(when), model, input_key, meta)


def list_samples(
    store: ArtifactStore,
    device_id: str | None = None,
    since: float | None = None,
    reason: str | None = None,
) -> list[Sample]:
    """The complete samples in the store, oldest first, filtered."""
    keys = store.keys(f"samples/{device_id}/" if device_id else "samples/")
    present = set(keys)
    out = []
    for key in keys:
        parts = key.split("/")
        if len(parts) != 3 or not key.endswith(".json") or not SAMPLE_FILE.match(parts[2]):
            continue
        try:
            sample = _sample(present, key, store.get(key, MAX_META_BYTES))
        except (Rejected, StoreError) as e:
            log.warning("skipping %s: %s", key, e)
            continue
        if sample is None:
            continue
        if since is not None and sample.time < since:
            continue
        if reason is not None and sample.trigger != reason:
            continue
        out.append(sample)
    return sorted(out, key=lambda s: (s.time, s.device_id, s.id))


def _input(store: ArtifactStore, sample: Sample) -> np.ndarray | None:
    data = store.get(sample.input_key, MAX_SAMPLE_FILE_BYTES)
    shape = sample.meta.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d > 0 for d in shape):
        return None
    if sample.input_key.endswith(".jpg"):
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        scale, offset = sample.meta.get("pixel_scale"), sample.meta.get("pixel_offset")
        if (
            pixels is None
            or not isinstance(scale, (int, float))
            or not isinstance(offset, (int, float))
        ):
            return None
        real = pixels.astype(np.float32) * np.float32(scale) + np.float32(offset)
    else:
        real = np.load(io.BytesIO(data), allow_pickle=False).astype(np.float32)
    if real.size != int(np.prod(shape)):
        return None
    return real.reshape(shape)


def _predicted(sample: Sample) -> int:
    predicted = sample.meta.get("predicted")  # a shadow frame: the new model's top-1
    if isinstance(predicted, int) and not isinstance(predicted, bool) and predicted >= 0:
        return predicted
    outputs = sample.meta.get("outputs")
    if (
        isinstance(outputs, list)
        and len(outputs) == 1
        and isinstance(outputs[0], list)
        and len(outputs[0]) >= 2
    ):
        return int(np.argmax(np.asarray(outputs[0], dtype=np.float32)))
    return -1


def pull_samples(
    store: ArtifactStore, samples: list[Sample], out_dir: Path, selection: dict[str, Any]
) -> tuple[Path, int]:
    """Write `dataset.npz` (and `dataset.json`) into `out_dir`; return its path and how many
    samples it holds. Samples of another input shape than the first one's are skipped."""
    xs: list[np.ndarray] = []
    ys: list[int] = []
    triggers: list[str] = []
    ids: list[str] = []
    for sample in samples:
        try:
            x = _input(store, sample)
        except (StoreError, ValueError, OSError) as e:
            log.warning("skipping sample %s: %s", sample.id, e)
            continue
        if x is None or (xs and x.shape != xs[0].shape):
            log.warning(
                "skipping sample %s: its input does not decode to the dataset's shape", sample.id
            )
            continue
        xs.append(x)
        ys.append(_predicted(sample))
        triggers.append(sample.trigger)
        ids.append(f"{sample.device_id}/{sample.id}")
    if not xs:
        raise ValueError("no sample matches (or none decodes): nothing to pull")
    out_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        x=np.stack(xs),
        y=np.asarray(ys, dtype=np.int64),
        trigger=np.asarray(triggers),
        sample=np.asarray(ids),
    )
    data = buffer.getvalue()
    path = out_dir / "dataset.npz"
    write_atomic(path, data)
    manifest = {
        "samples": len(xs),
        "sha256": hashlib.sha256(data).hexdigest(),
        "selection": selection,
        "ids": ids,
    }
    write_atomic(
        out_dir / "dataset.json",
        (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8"),
    )
    return path, len(xs)
