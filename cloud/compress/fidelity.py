"""How closely a candidate's outputs follow the original's, one output at a time.

Every output gets its maximum and mean absolute error against the original on the same inputs,
and an agreement figure shaped by what the output is, recognised from its shape:

| kind | recognised by | agreement |
|---|---|---|
| `classes` | [N, C] or [N, A, C] with C >= 2 (C != 4 when A is given) | top-1 class the same (per anchor for [N, A, C]) |
| `boxes` | [N, A, 4] | boxes (y1, x1, y2, x2) overlapping the original's with IoU >= 0.5 |
| `mask` | [N, H, W, C] with H, W >= 8 | mask IoU (foreground above 0.5 for C = 1, else per-pixel class), mean over samples |
| `values` | anything else | values within 1 % of the original output's range |

A model's agreement is the lowest of its outputs': the profile's `max_accuracy_drop` applies to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["OutputFidelity", "compare", "output_kind"]

BOX_IOU = 0.5
VALUES_TOLERANCE = 0.01  # of the original output's range


@dataclass(frozen=True)
class OutputFidelity:
    name: str
    kind: str  # classes | boxes | mask | values
    agreement: float
    max_abs_error: float
    mean_abs_error: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "agreement": round(self.agreement, 6),
            "max_abs_error": round(self.max_abs_error, 6),
            "mean_abs_error": round(self.mean_abs_error, 6),
        }


def output_kind(shape: tuple[int, ...]) -> str:
    """The kind of an output from its shape without the batch dimension."""
    if len(shape) == 1 and shape[0] >= 2:
        return "classes"
    if len(shape) == 2 and shape[1] == 4:
        return "boxes"
    if len(shape) == 2 and shape[1] >= 2:
        return "classes"
    if len(shape) == 3 and shape[0] >= 8 and shape[1] >= 8:
        return "mask"
    return "values"


def compare(name: str, candidate: np.ndarray, original: np.ndarray) -> OutputFidelity:
    """Compare one output ([N, ...] per sample) of a candidate with the original's."""
    kind = output_kind(tuple(original.shape[1:]))
    diff = np.abs(candidate.astype(np.float64) - original.astype(np.float64))
    agreement = _AGREEMENT[kind](candidate, original)
    return OutputFidelity(name, kind, agreement, float(diff.max()), float(diff.mean()))


def _classes(candidate: np.ndarray, original: np.ndarray) -> float:
    return float(np.mean(candidate.argmax(axis=-1) == original.argmax(axis=-1)))


def _boxes(candidate: np.ndarray, original: np.ndarray) -> float:
    def corners(b: np.ndarray) -> tuple[np.ndarray, ...]:
        y1, x1 = np.minimum(b[..., 0], b[..., 2]), np.minimum(b[..., 1], b[..., 3])
        y2, x2 = np.maximum(b[..., 0], b[..., 2]), np.maximum(b[..., 1], b[..., 3])
        return y1, x1, y2, x2

    a, b = corners(candidate.astype(np.float64)), corners(original.astype(np.float64))
    inter_h = np.clip(np.minimum(a[2], b[2]) - np.maximum(a[0], b[0]), 0, None)
    inter_w = np.clip(np.minimum(a[3], b[3]) - np.maximum(a[1], b[1]), 0, None)
    inter = inter_h * inter_w
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    same = np.all(np.isclose(candidate, original), axis=-1)  # also degenerate boxes
    iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return float(np.mean((iou >= BOX_IOU) | same))


def _mask(candidate: np.ndarray, original: np.ndarray) -> float:
    if original.shape[-1] == 1:
        a, b = candidate[..., 0] > 0.5, original[..., 0] > 0.5
        scores = []
        for x, y in zip(a, b, strict=True):
            union = np.logical_or(x, y).sum()
            scores.append(1.0 if union == 0 else np.logical_and(x, y).sum() / union)
        return float(np.mean(scores))
    a, b = candidate.argmax(axis=-1), original.argmax(axis=-1)
    scores = []
    for x, y in zip(a, b, strict=True):
        ious = [
            np.logical_and(x == c, y == c).sum() / np.logical_or(x == c, y == c).sum()
            for c in np.union1d(np.unique(x), np.unique(y))
        ]
        scores.append(float(np.mean(ious)))
    return float(np.mean(scores))


def _values(candidate: np.ndarray, original: np.ndarray) -> float:
    span = float(original.max() - original.min())
    tolerance = VALUES_TOLERANCE * span if span > 0 else 1e-6
    return float(np.mean(np.abs(candidate - original) <= tolerance))


_AGREEMENT = {"classes": _classes, "boxes": _boxes, "mask": _mask, "values": _values}
