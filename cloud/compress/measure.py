"""Measuring a model: size, zstd size, quality, output error against the original, latency."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from cloud.compress.data import Dataset
from cloud.compress.litert import TFLiteModel, weight_stats
from cloud.compress.options import CompressOptions
from shared.codec import compress as zstd_compress

__all__ = ["Measurement", "measure"]


@dataclass(frozen=True)
class Measurement:
    """One model's figures. `accuracy` is None when the evaluation data has no labels; then
    `agreement` (top-1 agreement with the original model) is the quality figure."""

    method: str
    path: str
    recipe: str
    bytes: int
    zstd_bytes: int
    sha256: str
    params: int
    nonzero_params: int
    accuracy: float | None
    agreement: float
    max_abs_error: float
    mean_abs_error: float
    latency_p50_ms: float
    latency_p95_ms: float
    build_seconds: float
    input_dtype: str
    fits_budget: bool = True
    misses: tuple[str, ...] = field(default_factory=tuple)

    @property
    def quality(self) -> float:
        return self.accuracy if self.accuracy is not None else self.agreement

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["misses"] = list(self.misses)
        for key in ("agreement", "max_abs_error", "mean_abs_error"):
            d[key] = round(d[key], 6)
        if d["accuracy"] is not None:
            d["accuracy"] = round(d["accuracy"], 6)
        for key in ("latency_p50_ms", "latency_p95_ms", "build_seconds"):
            d[key] = round(d[key], 4)
        return d


def measure(
    blob: bytes,
    *,
    method: str,
    path: str,
    recipe: str,
    eval_data: Dataset,
    reference: np.ndarray | None,
    threads: int,
    options: CompressOptions,
    build_seconds: float,
) -> tuple[Measurement, np.ndarray]:
    """Measure `blob` on `eval_data`; return the figures and the model's outputs.

    `reference` is the original model's outputs on the same data (None for the original
    itself, which then agrees with itself exactly).
    """
    stats = weight_stats(blob)
    runner = TFLiteModel(blob, threads=1)
    outputs = runner.predict(eval_data.x)
    top1 = outputs.reshape(len(outputs), -1).argmax(axis=1)
    accuracy = None
    if eval_data.y is not None:
        accuracy = float(np.mean(top1 == eval_data.y))
    if reference is None:
        agreement, max_err, mean_err = 1.0, 0.0, 0.0
    else:
        ref_top1 = reference.reshape(len(reference), -1).argmax(axis=1)
        agreement = float(np.mean(top1 == ref_top1))
        diff = np.abs(outputs.astype(np.float64) - reference.astype(np.float64))
        max_err, mean_err = float(diff.max()), float(diff.mean())
    timed = TFLiteModel(blob, threads=threads)
    p50, p95 = timed.latency_ms(eval_data.x[0], options.latency_warmup, options.latency_runs)
    return (
        Measurement(
            method=method,
            path=path,
            recipe=recipe,
            bytes=len(blob),
            zstd_bytes=len(zstd_compress(blob)),
            sha256=hashlib.sha256(blob).hexdigest(),
            params=stats.params,
            nonzero_params=stats.nonzero_params,
            accuracy=accuracy,
            agreement=agreement,
            max_abs_error=max_err,
            mean_abs_error=mean_err,
            latency_p50_ms=p50,
            latency_p95_ms=p95,
            build_seconds=build_seconds,
            input_dtype=runner.input.dtype.name,
        ),
        outputs,
    )
