"""A device row's drift (`devices.drift`, `devices.drifting`): the text it holds and when it
stands. Ingest (`cloud.store.devices.apply_drift`) and migration 0005, which fills the columns
from the records a store already holds, both decide and write through here, so the two agree.

`drift` is the JSON of the device's newest (by the record's ts) drift summary: the record's
`DriftSummary` (score, feature, threshold, samples), its `ts`, and `model_sha256`, the model
it was measured on (null when the record named none); '' when nothing stands. `drifting` is 1
when that score is over its threshold.

Drift belongs to a model. When the device's newest record or state (by ts) is newer than the
drift and names another model, the figures are of a model the device no longer runs: the row's
drift is cleared ('' and not drifting) until records of the new model bring figures of their
own (a model with no reference profile brings none). A newer record of the same model, or one
naming no model, leaves them in place. Once cleared, a late resend of an older record with
figures is held back by the device's state when that names the new model, else by the next
record of the new model.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, NamedTuple

__all__ = ["Drift", "ModelSeen", "held_drift", "settle"]


class Drift(NamedTuple):
    """One record's drift figures: its ts, its summary (score, feature, threshold, samples),
    and the sha256 of the model it names."""

    ts: float
    summary: dict[str, Any]
    model_sha256: str | None

    def text(self) -> str:
        """The JSON `devices.drift` holds."""
        return json.dumps(
            {**self.summary, "ts": self.ts, "model_sha256": self.model_sha256},
            separators=(",", ":"),
        )

    def drifting(self) -> int:
        """`devices.drifting`: 1 when the score is over its threshold."""
        score, threshold = self.summary.get("score"), self.summary.get("threshold")
        if isinstance(score, int | float) and isinstance(threshold, int | float):
            return int(score > threshold)
        return 0


class ModelSeen(NamedTuple):
    """A record or state of a device naming the model it runs, at its ts."""

    ts: float
    sha256: str


def held_drift(text: str) -> Drift | None:
    """The drift a row holds; None when there is none (or it is unreadable)."""
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    summary = dict(value)
    ts, model = summary.pop("ts", None), summary.pop("model_sha256", None)
    if not isinstance(ts, int | float):
        return None
    return Drift(float(ts), summary, model if isinstance(model, str) else None)


def settle(held: Drift | None, new: Drift | None, seen: Iterable[ModelSeen]) -> Drift | None:
    """The drift a row should hold: the newer of `held` and `new` (a tie goes to `new`, the
    later arrival), unless the newest of `seen` is newer than it and names another model."""
    current = new if new is not None and (held is None or held.ts <= new.ts) else held
    latest: ModelSeen | None = None
    for s in seen:
        if latest is None or s.ts >= latest.ts:
            latest = s
    if current is None or latest is None:
        return current
    if latest.ts > current.ts and latest.sha256 != current.model_sha256:
        return None
    return current
