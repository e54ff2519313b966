"""The reference profile a release signs: what the model's inputs and outputs looked like on
the evaluation set, so that a device can tell when the world in front of it has drifted.

Signed documents carry no floats, so every real value is an integer at a fixed scale
(`SCALE`, millionths). A profile is a list of *features*, each a histogram over fixed bin
edges (`counts` has one more entry than `edges`; a value `v` falls in the first bin whose edge
is greater than `v`). `shared.features` computes the same features on live data; a device
compares its rolling histograms with these (population stability index).

    {"samples": 500, "scale": 1000000, "drift_threshold_milli": 250,
     "confidence_threshold_pct": 50,
     "channels": [{"channel": 0, "mean": 131000, "std": 301000}],
     "score_quantiles": [...],
     "features": [{"name": "input.c0", "edges": [...], "counts": [...]}, ...]}

`channels` and `score_quantiles` describe the data for people; `features` are what drift is
measured on. Parsing is bounded before anything is kept: at most `MAX_FEATURES` features of at
most `MAX_EDGES` edges each and `MAX_BINS` bins in all, integers within int64, names of a fixed
pattern.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any

from shared.errors import MalformedDocument

__all__ = ["DEFAULT_DRIFT_THRESHOLD_MILLI", "SCALE", "Feature", "ReferenceProfile"]

SCALE = 1_000_000  # real values are signed as round(value * SCALE)
MAX_FEATURES = 64
MAX_EDGES = 1024  # a classifier of up to 1025 classes
MAX_BINS = 2048  # all features' bins together: what a device's rolling window holds per frame
MAX_CHANNELS = 64
DEFAULT_DRIFT_THRESHOLD_MILLI = 250  # PSI 0.25: the usual "significant shift"
DEFAULT_CONFIDENCE_PCT = 50
_INT64 = 2**63 - 1
_FEATURE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _int(value: Any, path: str, minimum: int = -_INT64) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedDocument("expected an integer", path)
    if not minimum <= value <= _INT64:
        raise MalformedDocument(f"must be within [{minimum}, 2**63-1]", path)
    return value


def _ints(value: Any, path: str, max_len: int, minimum: int = -_INT64) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise MalformedDocument("expected a list", path)
    if len(value) > max_len:
        raise MalformedDocument(f"at most {max_len} entries", path)
    return tuple(_int(v, f"{path}[{i}]", minimum) for i, v in enumerate(value))


def _fields(
    value: Any, path: str, required: set[str], optional: frozenset[str] = frozenset()
) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedDocument("expected an object", path)
    for key in value:
        if key not in required and key not in optional:
            raise MalformedDocument("unknown field", f"{path}.{key}")
    for key in sorted(required):
        if key not in value:
            raise MalformedDocument("missing", f"{path}.{key}")
    return value


@dataclass(frozen=True)
class Feature:
    """One histogram: `edges` (scaled, non-decreasing) and `len(edges) + 1` counts."""

    name: str
    edges: tuple[int, ...]
    counts: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "edges": list(self.edges), "counts": list(self.counts)}

    @classmethod
    def parse(cls, value: Any, path: str) -> Feature:
        v = _fields(value, path, {"name", "edges", "counts"})
        name = v["name"]
        if not isinstance(name, str) or not _FEATURE_NAME.match(name):
            raise MalformedDocument(f"not of the form {_FEATURE_NAME.pattern}", f"{path}.name")
        edges = _ints(v["edges"], f"{path}.edges", MAX_EDGES)
        counts = _ints(v["counts"], f"{path}.counts", MAX_EDGES + 1, minimum=0)
        if any(b < a for a, b in itertools.pairwise(edges)):
            raise MalformedDocument("edges must not decrease", f"{path}.edges")
        if len(counts) != len(edges) + 1:
            raise MalformedDocument("one more count than edges", f"{path}.counts")
        if sum(counts) == 0:
            raise MalformedDocument("a histogram of nothing", f"{path}.counts")
        return cls(name, edges, counts)


@dataclass(frozen=True)
class ChannelStats:
    channel: int
    mean: int  # scaled
    std: int  # scaled


@dataclass(frozen=True)
class ReferenceProfile:
    samples: int
    features: tuple[Feature, ...]
    channels: tuple[ChannelStats, ...] = ()
    score_quantiles: tuple[int, ...] = ()  # top-1 score at 10, 25, 50, 75, 90 % (classifiers)
    drift_threshold_milli: int = DEFAULT_DRIFT_THRESHOLD_MILLI  # PSI x 1000
    confidence_threshold_pct: int = DEFAULT_CONFIDENCE_PCT  # capture below this top-1 score
    scale: int = SCALE

    @property
    def drift_threshold(self) -> float:
        return self.drift_threshold_milli / 1000.0

    def feature(self, name: str) -> Feature | None:
        return next((f for f in self.features if f.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "scale": self.scale,
            "drift_threshold_milli": self.drift_threshold_milli,
            "confidence_threshold_pct": self.confidence_threshold_pct,
            "channels": [
                {"channel": c.channel, "mean": c.mean, "std": c.std} for c in self.channels
            ],
            "score_quantiles": list(self.score_quantiles),
            "features": [f.to_dict() for f in self.features],
        }

    @classmethod
    def parse(cls, value: Any, path: str = "reference") -> ReferenceProfile:
        v = _fields(
            value,
            path,
            {"samples", "scale", "features"},
            frozenset(
                {"drift_threshold_milli", "confidence_threshold_pct", "channels", "score_quantiles"}
            ),
        )
        scale = _int(v["scale"], f"{path}.scale", 1)
        if scale != SCALE:
            raise MalformedDocument(f"expected {SCALE}", f"{path}.scale")
        raw = v["features"]
        if not isinstance(raw, list) or not raw or len(raw) > MAX_FEATURES:
            raise MalformedDocument(f"expected 1 to {MAX_FEATURES} features", f"{path}.features")
        features = tuple(Feature.parse(f, f"{path}.features[{i}]") for i, f in enumerate(raw))
        if sum(len(f.counts) for f in features) > MAX_BINS:
            raise MalformedDocument(f"more than {MAX_BINS} bins in all", f"{path}.features")
        if len({f.name for f in features}) != len(features):
            raise MalformedDocument("feature names repeat", f"{path}.features")
        channels = []
        raw_channels = v.get("channels", [])
        if not isinstance(raw_channels, list) or len(raw_channels) > MAX_CHANNELS:
            raise MalformedDocument(f"at most {MAX_CHANNELS} channels", f"{path}.channels")
        for i, c in enumerate(raw_channels):
            p = f"{path}.channels[{i}]"
            cv = _fields(c, p, {"channel", "mean", "std"})
            channels.append(
                ChannelStats(
                    _int(cv["channel"], f"{p}.channel", 0),
                    _int(cv["mean"], f"{p}.mean"),
                    _int(cv["std"], f"{p}.std", 0),
                )
            )
        threshold = _int(
            v.get("drift_threshold_milli", DEFAULT_DRIFT_THRESHOLD_MILLI),
            f"{path}.drift_threshold_milli",
            1,
        )
        confidence = _int(
            v.get("confidence_threshold_pct", DEFAULT_CONFIDENCE_PCT),
            f"{path}.confidence_threshold_pct",
            0,
        )
        if confidence > 100:
            raise MalformedDocument("a percentage (0-100)", f"{path}.confidence_threshold_pct")
        return cls(
            samples=_int(v["samples"], f"{path}.samples", 1),
            features=features,
            channels=tuple(channels),
            score_quantiles=_ints(v.get("score_quantiles", []), f"{path}.score_quantiles", 16),
            drift_threshold_milli=threshold,
            confidence_threshold_pct=confidence,
            scale=scale,
        )
