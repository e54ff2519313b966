"""From output tensors to what an operator reads: top classes, detections, or a summary.

The kind of model is read from its output signature: one `[1, K]` output is a classifier (top-k
with labels); boxes/classes/scores(/count) outputs in the TFLite detection layout are a
detector; anything else gets a compact per-output summary. `OutputSummary` accumulates results
between two telemetry records and stays small whatever the traffic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent.processing.quantize import dequantize
from shared.documents import IOSignature
from shared.fields import FreeObject

__all__ = ["Interpretation", "OutputSummary", "Postprocess", "load_labels", "output_kind"]

MAX_LABELS = 10_000
MAX_SUMMARY_LABELS = 10  # per telemetry record
MAX_DETECTIONS = 20  # per frame, in events


def load_labels(path: Path | None) -> list[str]:
    if path is None:
        return []
    lines = path.read_text(encoding="utf-8").splitlines()[:MAX_LABELS]
    return [line.strip() for line in lines]


def output_kind(signature: IOSignature) -> str:
    """ "classification", "detection" or "generic"."""
    outs = signature.outputs
    if len(outs) == 1:
        shape = outs[0].shape
        if 1 <= len(shape) <= 2 and shape[-1] > 1 and int(np.prod(shape)) == shape[-1]:
            return "classification"
    if len(outs) in (3, 4):
        boxes = [o for o in outs if len(o.shape) == 3 and o.shape[-1] == 4]
        lists = [o for o in outs if len(o.shape) == 2]
        if len(boxes) == 1 and len(lists) == 2:
            return "detection"
    return "generic"


@dataclass
class Interpretation:
    top: list[tuple[int, str, float]] = field(default_factory=list)  # (class, label, score)
    detections: list[dict[str, Any]] = field(default_factory=list)
    values: list[dict[str, Any]] = field(default_factory=list)  # generic: per-output stats


class Postprocess:
    """Interprets one model's outputs; built per model (labels, top-k, threshold)."""

    def __init__(
        self, signature: IOSignature, labels: list[str], top_k: int = 3, threshold: float = 0.5
    ) -> None:
        self.signature = signature
        self.kind = output_kind(signature)
        self.labels = labels
        self.top_k = top_k
        self.threshold = threshold
        if self.kind == "detection":
            self._layout = self._detection_layout()

    def label(self, index: int) -> str:
        return self.labels[index] if 0 <= index < len(self.labels) else str(index)

    def _detection_layout(self) -> tuple[int, int, int]:
        outs = self.signature.outputs
        boxes = next(i for i, o in enumerate(outs) if len(o.shape) == 3)
        lists = [i for i, o in enumerate(outs) if len(o.shape) == 2]
        named = {i: outs[i].name.lower() for i in lists}
        scores = next((i for i in lists if "score" in named[i]), None)
        classes = next((i for i in lists if "class" in named[i]), None)
        if scores is None or classes is None or scores == classes:
            classes, scores = lists  # TFLite_Detection_PostProcess order: classes, then scores
        return boxes, classes, scores

    def __call__(self, outputs: list[np.ndarray]) -> Interpretation:
        specs = self.signature.outputs
        if self.kind == "classification":
            scores = dequantize(outputs[0], specs[0]).ravel()
            k = min(self.top_k, scores.size)
            best = np.argpartition(-scores, k - 1)[:k]
            best = best[np.argsort(-scores[best])]
            return Interpretation(
                top=[(int(i), self.label(int(i)), float(scores[i])) for i in best]
            )
        if self.kind == "detection":
            b, c, s = self._layout
            boxes = dequantize(outputs[b], specs[b])[0]
            classes = dequantize(outputs[c], specs[c])[0]
            scores = dequantize(outputs[s], specs[s])[0]
            keep = np.flatnonzero(scores >= self.threshold)[:MAX_DETECTIONS]
            return Interpretation(
                detections=[
                    {
                        "class": int(classes[i]),
                        "label": self.label(int(classes[i])),
                        "score": round(float(scores[i]), 4),
                        "box": [round(float(v), 4) for v in boxes[i]],
                    }
                    for i in keep
                ]
            )
        return self._generic(outputs)

    def batch(self, outputs: list[list[np.ndarray]]) -> list[Interpretation]:
        """`[self(o) for o in outputs]`, with one vectorised top-k for a classifier's batch.

        Interpreting frame by frame costs a dozen small numpy calls each; on a fast loop that
        is a busy Python thread taking the GIL from the capture and inference threads.
        """
        if self.kind != "classification" or len(outputs) < 2:
            return [self(o) for o in outputs]
        scores = dequantize(
            np.stack([o[0].reshape(-1) for o in outputs]), self.signature.outputs[0]
        )
        k = min(self.top_k, scores.shape[1])
        best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        picked = np.take_along_axis(scores, best, axis=1)
        order = np.argsort(-picked, axis=1)
        classes = np.take_along_axis(best, order, axis=1).tolist()
        values = np.take_along_axis(picked, order, axis=1).tolist()
        label = self.label
        return [
            Interpretation(top=[(c, label(c), v) for c, v in zip(cs, vs, strict=True)])
            for cs, vs in zip(classes, values, strict=True)
        ]

    def top1(self, outputs: list[list[np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        """A classifier's best class and its score for each frame of a batch, as two arrays.

        What the running summary and the events need, in a handful of numpy calls for the
        whole batch: no per-frame Python objects.
        """
        if self.kind != "classification":
            raise ValueError(f"top1 is for classifiers, not {self.kind} models")
        first = [o[0] for o in outputs]
        stacked = np.concatenate(first) if first[0].ndim == 2 else np.stack(first)
        scores = dequantize(stacked.reshape(len(outputs), -1), self.signature.outputs[0])
        classes = scores.argmax(axis=1)
        return classes, scores[np.arange(len(outputs)), classes]

    def _generic(self, outputs: list[np.ndarray]) -> Interpretation:
        values = []
        for out, spec in zip(outputs, self.signature.outputs, strict=True):
            real = dequantize(out, spec)
            values.append(
                {
                    "name": spec.name,
                    "shape": list(spec.shape),
                    "mean": round(float(real.mean()), 6),
                    "min": round(float(real.min()), 6),
                    "max": round(float(real.max()), 6),
                }
            )
        return Interpretation(values=values)


class OutputSummary:
    """A bounded summary of the interpretations since the last `take()`."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._reset()

    def _reset(self) -> None:
        self._count = 0
        self._top1: dict[str, int] = {}
        self._confidence = 0.0
        self._detections: dict[str, int] = {}
        self._last_values: list[dict[str, Any]] = []

    def add(self, result: Interpretation) -> None:
        self._count += 1
        if result.top:
            _, label, score = result.top[0]
            if label in self._top1 or len(self._top1) < MAX_LABELS:
                self._top1[label] = self._top1.get(label, 0) + 1
            self._confidence += score
        for d in result.detections:
            self._detections[d["label"]] = self._detections.get(d["label"], 0) + 1
        if result.values:
            self._last_values = result.values

    def add_top1(
        self, classes: np.ndarray, scores: np.ndarray, label: Callable[[int], str]
    ) -> None:
        """Many classifier frames at once: `Postprocess.top1`'s arrays and its `label`."""
        self._count += int(classes.size)
        self._confidence += float(scores.sum())
        counts = np.bincount(classes)
        for cls in np.flatnonzero(counts).tolist():
            name = label(cls)
            if name in self._top1 or len(self._top1) < MAX_LABELS:
                self._top1[name] = self._top1.get(name, 0) + int(counts[cls])

    def peek(self) -> FreeObject:
        summary: dict[str, Any] = {"kind": self.kind, "count": self._count}
        if self.kind == "classification" and self._count:
            top = sorted(self._top1.items(), key=lambda kv: -kv[1])[:MAX_SUMMARY_LABELS]
            summary["top"] = [{"label": k, "count": v} for k, v in top]
            summary["mean_confidence"] = round(self._confidence / self._count, 4)
        elif self.kind == "detection":
            top = sorted(self._detections.items(), key=lambda kv: -kv[1])[:MAX_SUMMARY_LABELS]
            summary["detections"] = [{"label": k, "count": v} for k, v in top]
        elif self._last_values:
            summary["outputs"] = self._last_values[:8]
        return summary

    def take(self) -> FreeObject:
        summary = self.peek()
        self._reset()
        return summary
