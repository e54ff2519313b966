"""System figures without psutil: this process's CPU share and resident memory."""

from __future__ import annotations

import os
from pathlib import Path

from agent.system_metrics import SystemMetrics, read_rss_mb


def vm_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise AssertionError("no VmRSS")


def test_cpu_share_and_resident_memory(tmp_path: Path) -> None:
    metrics = SystemMetrics(tmp_path)
    start = os.times()
    while (os.times().user + os.times().system) - (start.user + start.system) < 0.2:
        sum(range(10_000))  # 0.2 s of CPU in this process
    sample = metrics.sample()
    assert sample.cpu_percent > 0
    assert abs(sample.rss_mb - vm_rss_mb()) < 2.0
    assert abs(read_rss_mb() - vm_rss_mb()) < 2.0
    assert sample.disk_free_mb > 0 and sample.uptime_s > 0
