"""Measuring a model: size, zstd size, quality, fidelity per output against the original,
latency."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from cloud.compress.fidelity import OutputFidelity, compare
from cloud.compress.litert import TFLiteModel, weight_stats
from cloud.compress.options import CompressOptions
from shared.codec import compress as zstd_compress

__all__ = ["Measurement", "measure"]


@dataclass(frozen=True)
class Measurement:
    """One model's figures. `accuracy` is None when the evaluation data has no labels; then
    `agreement` (the lowest per-output agreement with the original, see `fidelity`) is the
    quality figure. `no_effect` says why a candidate is not really compressed (its size did not
    move); `io_change` how its inputs or outputs differ from what the application expects."""

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
    outputs: tuple[OutputFidelity, ...] = ()
    io: str = ""
    io_change: str | None = None
    no_effect: str | None = None
    fits_budget: bool = True
    misses: tuple[str, ...] = field(default_factory=tuple)

    @property
    def quality(self) -> float:
        return self.accuracy if self.accuracy is not None else self.agreement

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["misses"] = list(self.misses)
        d["outputs"] = [o.to_dict() for o in self.outputs]
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
    inputs: list[np.ndarray],
    labels: np.ndarray | None,
    reference: list[np.ndarray] | None,
    threads: int,
    options: CompressOptions,
    build_seconds: float,
) -> tuple[Measurement, list[np.ndarray]]:
    """Measure `blob` on `inputs` (one [N, ...] array per model input); return the figures and
    the model's outputs.

    `reference` is the original model's outputs on the same inputs (None for the original
    itself, which then agrees with itself exactly). `labels` score the first output's top-1.
    """
    stats = weight_stats(blob)
    runner = TFLiteModel(blob, threads=1)
    outputs = runner.predict(inputs)
    accuracy = None
    if labels is not None:
        top1 = outputs[0].reshape(len(outputs[0]), -1).argmax(axis=1)
        accuracy = float(np.mean(top1 == labels))
    names = [o.name for o in runner.outputs]
    fidelity = tuple(
        compare(name, out, out if reference is None else ref)
        for name, out, ref in zip(names, outputs, reference or outputs, strict=True)
    )
    agreement = min(f.agreement for f in fidelity)
    max_err = max(f.max_abs_error for f in fidelity)
    mean_err = float(np.mean([f.mean_abs_error for f in fidelity]))
    timed = TFLiteModel(blob, threads=threads)
    p50, p95 = timed.latency_ms(
        [x[0] for x in inputs], options.latency_warmup, options.latency_runs
    )
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
            outputs=fidelity,
        ),
        outputs,
    )
