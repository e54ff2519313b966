"""Choosing the candidate to ship: the profile's budget first, then its preference order.

A candidate fits when its size is within `budget.max_model_bytes`, its p95 latency (measured on
this machine) within `budget.max_latency_ms` when the profile sets one, and its quality drop
against the original within `budget.max_accuracy_drop`. Quality is accuracy on labelled
evaluation data, or without labels the agreement with the original model (`fidelity`: the lowest
of its outputs' agreements).

Among the candidates that fit, the first in the profile's `quantizations` order wins; methods
the profile does not list come after, smallest first. The original float32 model is a candidate
only when the profile lists `float32`.

A candidate marked "no effect" (it compressed nothing) or one that changes the application's
I/O never fits. When candidates were built and none of them compressed anything, the choice is
`original`: the input model, kept as it is, when it fits the budget.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from cloud.compress.measure import Measurement
from device_profiles.profile import DeviceProfile

__all__ = ["ORIGINAL", "Choice", "choose"]

ORIGINAL = "original"


@dataclass(frozen=True)
class Choice:
    method: str | None
    reason: str
    candidates: tuple[Measurement, ...]  # the candidates with fits_budget and misses filled in


def _misses(m: Measurement, baseline: Measurement, profile: DeviceProfile) -> tuple[str, ...]:
    budget = profile.budget
    misses = [why for why in (m.no_effect, m.io_change) if why is not None]
    if m.bytes > budget.max_model_bytes:
        misses.append(f"{m.bytes:,} B over the {budget.max_model_bytes:,} B budget")
    if budget.max_latency_ms is not None and m.latency_p95_ms > budget.max_latency_ms:
        misses.append(f"p95 {m.latency_p95_ms:.3f} ms over {budget.max_latency_ms:g} ms")
    drop = baseline.quality - m.quality
    if drop > budget.max_accuracy_drop + 1e-12:
        misses.append(
            f"{_quality_name(baseline)} drop {drop * 100:.2f} pt over "
            f"{budget.max_accuracy_drop * 100:.2f} pt"
        )
    return tuple(misses)


def _quality_name(m: Measurement) -> str:
    return "accuracy" if m.accuracy is not None else "agreement"


def choose(baseline: Measurement, candidates: list[Measurement], profile: DeviceProfile) -> Choice:
    """Mark each candidate's fit and pick one; `reason` says why in a sentence or two."""
    marked = []
    for c in candidates:
        misses = _misses(c, baseline, profile)
        marked.append(replace(c, fits_budget=not misses, misses=misses))
    pool = list(marked)
    if "float32" in profile.quantizations:
        misses = _misses(baseline, baseline, profile)
        pool.append(replace(baseline, fits_budget=not misses, misses=misses))

    preferred = list(profile.quantizations)
    ranked = sorted(
        pool,
        key=lambda m: (
            preferred.index(m.method) if m.method in preferred else len(preferred),
            m.bytes,
        ),
    )
    order = ", ".join(preferred) or "none"
    fitting = [m for m in ranked if m.fits_budget]
    if not fitting and marked and all(c.no_effect is not None for c in marked):
        return _keep_original(baseline, profile, tuple(marked))
    if not fitting:
        detail = "; ".join(_missed(m) for m in ranked) or "no candidates were built"
        return Choice(
            None, f"nothing fits profile {profile.name}'s budget: {detail}", tuple(marked)
        )

    best = fitting[0]
    quality = _quality_name(baseline)
    drop = (baseline.quality - best.quality) * 100
    figures = (
        f"{best.bytes:,} B ({best.bytes / baseline.bytes:.2f}x the original) <= "
        f"{profile.budget.max_model_bytes:,} B; p95 {best.latency_p95_ms:.3f} ms"
        + (
            f" <= {profile.budget.max_latency_ms:g} ms"
            if profile.budget.max_latency_ms is not None
            else " (no latency budget)"
        )
        + f"; {quality} {best.quality:.4f}, drop {drop:.2f} pt <= "
        f"{profile.budget.max_accuracy_drop * 100:.2f} pt"
    )
    if best.method in preferred:
        why = (
            f"{best.method} is the first candidate in profile {profile.name}'s preference "
            f"order ({order}) that fits its budget: {figures}"
        )
    else:
        why = (
            f"none of profile {profile.name}'s preferred methods ({order}) fits; {best.method} "
            f"is the smallest candidate that does: {figures}"
        )
    passed_over = ranked[: ranked.index(best)]
    if passed_over:
        why += ". Passed over: " + "; ".join(_missed(m) for m in passed_over)
    return Choice(best.method, why + ".", tuple(marked))


def _keep_original(
    baseline: Measurement, profile: DeviceProfile, marked: tuple[Measurement, ...]
) -> Choice:
    methods = ", ".join(c.method for c in marked)
    misses = [
        why for why in _misses(baseline, baseline, profile) if not why.startswith("changes I/O")
    ]
    if baseline.io_change is not None or misses:
        detail = "; ".join(misses) or baseline.io_change or ""
        return Choice(
            None,
            f"nothing compressed this model ({methods}: no effect), and the original does not "
            f"fit profile {profile.name}'s budget: {detail}",
            marked,
        )
    return Choice(
        ORIGINAL,
        f"nothing compressed this model ({methods}: no effect, see each candidate); keeping "
        f"the original, {baseline.bytes:,} B, unchanged.",
        marked,
    )


def _missed(m: Measurement) -> str:
    return f"{m.method} ({'; '.join(m.misses)})"
