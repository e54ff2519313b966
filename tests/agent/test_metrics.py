"""Hot-path metrics: bounded windows, percentiles, rates."""

from __future__ import annotations

import numpy as np
import pytest

from agent.metrics import LatencyWindow, LoopMetrics, RateWindow


def test_percentiles_over_the_most_recent_values_only() -> None:
    window = LatencyWindow(size=100)
    for v in range(1000):  # only 900..999 remain
        window.add(float(v))
    assert len(window) == 100
    p50, p95, p99 = window.percentiles(50, 95, 99)
    assert p50 == pytest.approx(np.percentile(np.arange(900, 1000), 50))
    assert p95 == pytest.approx(np.percentile(np.arange(900, 1000), 95))
    assert 990 <= p99 <= 999


def test_empty_window_reports_zero() -> None:
    assert LatencyWindow(8).percentiles(50, 99) == (0.0, 0.0)
    assert RateWindow(8).rate(now=5.0) == 0.0


def test_rate_from_completion_times_and_decay_when_idle() -> None:
    rate = RateWindow(size=64, horizon_s=10.0)
    for i in range(50):
        rate.add(100.0 + i * 0.02)  # 50 Hz
    assert rate.rate(now=100.98) == pytest.approx(50.0, rel=0.01)
    assert rate.rate(now=104.0) < 20.0  # nothing new for 3 s: the rate falls
    assert rate.rate(now=200.0) == 0.0  # beyond the horizon


def test_new_model_clears_latencies_but_keeps_counters() -> None:
    metrics = LoopMetrics(window=16)
    for i in range(10):
        metrics.record(2.0, 5.0, float(i))
    metrics.errors += 1
    metrics.new_model()
    assert metrics.inferences == 10 and metrics.errors == 1
    assert metrics.invoke_ms.percentiles(50) == (0.0,)
    metrics.record(7.0, 9.0, 11.0)
    assert metrics.invoke_ms.percentiles(50) == (7.0,)
    assert metrics.e2e_ms.percentiles(50) == (9.0,)
