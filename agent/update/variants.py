"""Which of a release's variants this device activates: the fastest it measures.

A release may carry several variants of its model for the profile (`shared.variants`). Before
the update is installed, `VariantChooser.choose` takes each candidate within the release's
quality budget, retrieves it (full artifact, size-capped decompression, hash check, exactly as
the target), loads it off the inference loop (the current model keeps serving) and times it on
the loop's recent real inputs for at most its share of `max_bench_ms`. The release that goes on
through the update pipeline is the fastest candidate's (its target and artifact; deltas only
if it is the release's own target). The figures and the reason are reported (an event
`variant`, which the cloud shows in `litefleet devices --json`). A candidate that cannot be
retrieved or loaded is left out, and the report says why; with none measured, the release's
own target goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from agent.config import AgentConfig
from agent.update.fetch import Fetcher, Transfer
from agent.update.modelstore import ACTIVE, PREVIOUS, ModelStore
from agent.update.retrieval import Pace, TargetRetriever
from shared.documents import Artifact, Release, Target
from shared.errors import Rejected, Unavailable
from shared.variants import Variant

__all__ = ["VariantChooser"]

log = logging.getLogger(__name__)

MIN_RUNS = 5
MAX_RUNS = 200


def as_release(release: Release, variant: Variant) -> Release:
    """`release` with `variant` as its target."""
    if variant.sha256 == release.target.sha256:
        return release
    return replace(
        release,
        target=Target(variant.sha256, variant.size),
        artifact=Artifact(variant.url, variant.artifact_sha256, variant.artifact_size),
        deltas=(),
    )


def _bench(model: Any, inputs: Sequence[list[np.ndarray]], budget_s: float) -> float:
    """Median invoke time in ms over the inputs (round robin) within `budget_s`."""
    model.invoke(inputs[0])  # the first invoke allocates and packs weights: not timed
    times: list[float] = []
    deadline = time.monotonic() + budget_s
    while len(times) < MAX_RUNS and (len(times) < MIN_RUNS or time.monotonic() < deadline):
        start = time.perf_counter()
        model.invoke(inputs[len(times) % len(inputs)])
        times.append((time.perf_counter() - start) * 1000.0)
    return float(np.median(times))


class VariantChooser:
    def __init__(
        self,
        config: AgentConfig,
        downloads: Path,
        fetchers: Callable[[str], Fetcher],
        pace: Pace,
        load: Callable[[Path, int, tuple[str, ...]], Any],
    ) -> None:
        self.config = config
        self._downloads = downloads
        self._fetchers = fetchers
        self._pace = pace
        self._load = load
        self._store = ModelStore(config.state_dir, config.model.name)
        self.report: Callable[[dict[str, Any]], None] | None = None  # the daemon's event sink
        self.last: dict[str, Any] | None = None

    def choose(self, release: Release, dirs: Sequence[Path], loop: Any) -> Release:
        variants = release.variants
        if variants is None:
            return release
        fitting = variants.fitting()
        figures: dict[str, dict[str, Any]] = {
            v.name: {"quality_ppm": v.quality_ppm, "skipped": "under the quality budget"}
            for v in variants.candidates
            if v not in fitting
        }
        inputs = self._inputs(loop)
        budget_s = variants.max_bench_ms / 1000.0 / max(1, len(fitting))
        for variant in fitting:
            figures[variant.name] = self._measure(release, variant, dirs, inputs, budget_s)
        measured = [v for v in fitting if "p50_ms" in figures[v.name]]
        chosen: Variant | None
        if measured:
            chosen = min(measured, key=lambda v: figures[v.name]["p50_ms"])
            reason = (
                f"{chosen.name} is the fastest here ({figures[chosen.name]['p50_ms']:.3f} "
                f"ms p50) of {len(measured)} measured within the quality budget "
                f"({variants.min_quality_ppm / 10_000:g} %)"
            )
        else:
            chosen = variants.by_sha256(release.target.sha256)  # parse guarantees it exists
            if chosen is None:
                return release
            reason = (
                "no candidate could be measured within the quality budget: the "
                f"release's own target ({chosen.name})"
            )
        for variant in fitting:  # the losers' files go; the chosen one stays for the install
            if variant is not chosen and variant.sha256 not in self._protected():
                self._store.remove(variant.sha256)
        self.last = {
            "release": f"{release.name}@{release.version}",
            "chosen": chosen.name,
            "sha256": chosen.sha256,
            "reason": reason,
            "figures": figures,
        }
        log.info("variant of %s@%s: %s", release.name, release.version, reason)
        if self.report is not None:
            self.report(self.last)
        return as_release(release, chosen)

    def _protected(self) -> tuple[str, ...]:
        return tuple(s for s in (self._store.link(ACTIVE), self._store.link(PREVIOUS)) if s)

    def _inputs(self, loop: Any) -> list[list[np.ndarray]]:
        recent: list[list[np.ndarray]] = loop.recent_inputs() if loop is not None else []
        if recent:
            return recent
        if loop is not None:
            sample: list[np.ndarray] = loop.model.sample_input()
            return [sample]
        return []

    def _measure(
        self,
        release: Release,
        variant: Variant,
        dirs: Sequence[Path],
        inputs: list[list[np.ndarray]],
        budget_s: float,
    ) -> dict[str, Any]:
        out: dict[str, Any] = {"quality_ppm": variant.quality_ppm}
        try:
            if self._store.verified_path(variant.sha256) is None:
                retriever = TargetRetriever(
                    self._downloads, self._fetchers, lambda *_: None, dirs, Transfer(), self._pace
                )
                candidate = replace(as_release(release, variant), deltas=())
                data = retriever.obtain(candidate, None).data
                self._store.install(data, variant.sha256)
                retriever.discard(candidate)
            runtime = self.config.profile.runtime
            model = self._load(
                self._store.path_of(variant.sha256), runtime.threads, runtime.delegates
            )
        except (Rejected, Unavailable) as e:
            out["skipped"] = f"{e.reason}: {e}"[:200]
            return out
        try:
            if not inputs:
                inputs = [model.sample_input()]
            out["p50_ms"] = round(_bench(model, inputs, budget_s), 4)
        except Exception as e:  # a model that fails on real inputs is not a candidate
            out["skipped"] = f"failed on this device's inputs: {e}"[:200]
        finally:
            model.close()
        return out
