"""The drift features of a model, computed the same way on the evaluation set (the cloud
builds a release's reference profile) and on live frames (the device measures drift).

Features, by name:

* `input.c<k>`: the values of channel k of the first input (the last axis of an image or a
  `[1, T, C]` sensor window; a `[1, N]` input has one channel), at most `VALUES_PER_FRAME`
  of them per frame (evenly strided);
* for a classifier (one `[1, K]` output): `output.class`, the top class, and `output.score`,
  the top score;
* for other models: `output<j>.mean`, the mean of output j (a compact summary).

Values are real: quantized tensors are dequantized with their signature's scale and zero
point. Drift is the population stability index (PSI) of a live histogram against the
reference's, per feature.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from shared.documents import IOSignature, TensorSpec
from shared.reference import SCALE, ChannelStats, Feature, ReferenceProfile

__all__ = ["FeatureExtractor", "build_reference", "fractions", "psi"]

VALUES_PER_FRAME = 256  # per channel: 300 frames give 76,800 values, plenty for 10 bins
QUANTILES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
SCORE_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
PSI_FLOOR = 1e-4  # an empty bin counts as this share (PSI is infinite otherwise)


def _dequantizer(spec: TensorSpec) -> tuple[float, float] | None:
    if spec.scale is None:
        return None
    return float(spec.scale), float(spec.zero_point or 0)


def _real(value: np.ndarray, q: tuple[float, float] | None) -> np.ndarray:
    if q is None:
        return np.asarray(value, dtype=np.float32)
    return (np.asarray(value, dtype=np.float32) - np.float32(q[1])) * np.float32(q[0])


class FeatureExtractor:
    """The features of one model's I/O signature."""

    def __init__(self, signature: IOSignature) -> None:
        spec = signature.inputs[0]
        self.channels = int(spec.shape[-1]) if len(spec.shape) >= 3 else 1
        self._in_q = _dequantizer(spec)
        self._out_q = [_dequantizer(o) for o in signature.outputs]
        out = signature.outputs[0]
        self.classes = 0
        if (
            len(signature.outputs) == 1
            and len(out.shape) >= 1
            and out.shape[-1] >= 2
            and int(np.prod([max(d, 1) for d in out.shape[:-1]])) == 1
        ):
            self.classes = int(out.shape[-1])
        names = [f"input.c{c}" for c in range(self.channels)]
        if self.classes:
            names += ["output.class", "output.score"]
        else:
            names += [f"output{j}.mean" for j in range(len(signature.outputs))]
        self.names: tuple[str, ...] = tuple(names)

    def batch(self, x: np.ndarray, outputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Each feature's values over `n` samples: `x` is the first input's real values
        [n, ...], `outputs` each output's real values [n, ...]."""
        n = len(x)
        flat = x.reshape(n, -1, self.channels) if self.channels > 1 else x.reshape(n, -1, 1)
        step = max(1, flat.shape[1] // VALUES_PER_FRAME)
        values = [flat[:, ::step, c].reshape(-1) for c in range(self.channels)]
        if self.classes:
            scores = outputs[0].reshape(n, -1)
            values += [np.argmax(scores, axis=1).astype(np.float32), scores.max(axis=1)]
        else:
            values += [o.reshape(n, -1).mean(axis=1) for o in outputs]
        return values

    def frame(
        self, inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        """Each feature's values for one live frame (the model's own tensors, batch of 1)."""
        x = _real(inputs[0], self._in_q)
        real = [_real(o, q) for o, q in zip(outputs, self._out_q, strict=False)]
        return self.batch(x.reshape(1, -1), [r.reshape(1, -1) for r in real])

    def top_score(self, outputs: Sequence[np.ndarray]) -> float | None:
        """A classifier's top score for one frame (None for other models)."""
        if not self.classes:
            return None
        return float(_real(outputs[0], self._out_q[0]).max())


def fractions(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The share of `values` in each bin of `edges` (len(edges) + 1 bins)."""
    if not len(values):
        return np.zeros(len(edges) + 1)
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return counts * (1.0 / len(values))


def psi(live: np.ndarray, reference: np.ndarray) -> float:
    """Population stability index of two histograms (shares; empty bins floored)."""
    p = np.maximum(live, PSI_FLOOR)
    q = np.maximum(reference, PSI_FLOOR)
    return float(np.sum((p - q) * np.log(p / q)))


def _edges(name: str, values: np.ndarray, classes: int) -> tuple[int, ...]:
    if name == "output.class":
        return tuple(round((k + 0.5) * SCALE) for k in range(classes - 1))
    scaled = np.round(np.quantile(values, QUANTILES) * SCALE).astype(np.int64)
    return tuple(int(v) for v in sorted(set(scaled.tolist())))


def build_reference(
    signature: IOSignature,
    x: np.ndarray,
    outputs: Sequence[np.ndarray],
    *,
    drift_threshold_milli: int,
    confidence_threshold_pct: int,
) -> ReferenceProfile:
    """The reference profile of a model from its evaluation set: `x` the first input's real
    values [n, ...], `outputs` the model's real outputs on them."""
    extractor = FeatureExtractor(signature)
    values = extractor.batch(np.asarray(x, dtype=np.float32), outputs)
    features = []
    for name, v in zip(extractor.names, values, strict=True):
        edges = _edges(name, v, extractor.classes)
        bins = np.searchsorted(np.asarray(edges, dtype=np.float64) / SCALE, v, side="right")
        counts = np.bincount(bins, minlength=len(edges) + 1)
        features.append(Feature(name, edges, tuple(int(c) for c in counts)))
    channels = tuple(
        ChannelStats(c, round(float(v.mean()) * SCALE), round(float(v.std()) * SCALE))
        for c, v in enumerate(values[: extractor.channels])
    )
    quantiles: tuple[int, ...] = ()
    if extractor.classes:
        scores = values[extractor.channels + 1]
        quantiles = tuple(round(float(q) * SCALE) for q in np.quantile(scores, SCORE_QUANTILES))
    return ReferenceProfile(
        samples=len(x),
        features=tuple(features),
        channels=channels,
        score_quantiles=quantiles,
        drift_threshold_milli=drift_threshold_milli,
        confidence_threshold_pct=confidence_threshold_pct,
    )
