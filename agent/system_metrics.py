"""System figures for telemetry: CPU, memory, temperature, free disk, uptime.

CPU is this process's share since the previous sample (`os.times`, every thread), so a
telemetry interval sees the agent's own load; memory is its resident set (`/proc/self/statm`). Temperature is the hottest `/sys/class/thermal/thermal_zone*/temp`, or
None where the kernel has no thermal zones (containers, most x86 VMs).
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SystemMetrics", "SystemSample", "read_rss_mb", "read_temperature_c"]

log = logging.getLogger(__name__)

THERMAL_ROOT = Path("/sys/class/thermal")


@dataclass(frozen=True)
class SystemSample:
    cpu_percent: float
    rss_mb: float
    temperature_c: float | None
    disk_free_mb: float
    uptime_s: float


def read_temperature_c(root: Path = THERMAL_ROOT) -> float | None:
    """The hottest thermal zone in degrees Celsius, or None when there is none to read."""
    hottest: float | None = None
    for zone in sorted(root.glob("thermal_zone*/temp")):
        try:
            millidegrees = int(zone.read_text().strip())
        except (OSError, ValueError):
            continue
        celsius = millidegrees / 1000.0
        if -50.0 < celsius < 200.0 and (hottest is None or celsius > hottest):
            hottest = celsius
    return hottest


def read_rss_mb() -> float:
    """This process's resident set size in MB (its peak where /proc is not mounted)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


class SystemMetrics:
    def __init__(self, disk_path: Path, thermal_root: Path = THERMAL_ROOT) -> None:
        self.disk_path = disk_path
        self.thermal_root = thermal_root
        self._started = time.monotonic()
        self._cpu = (_cpu_seconds(), self._started)  # the baseline of the first sample

    def sample(self) -> SystemSample:
        try:
            disk_free = shutil.disk_usage(self.disk_path).free / 1e6
        except OSError as e:
            log.debug("free disk of %s unknown: %s", self.disk_path, e)
            disk_free = 0.0
        now, cpu = time.monotonic(), _cpu_seconds()
        last_cpu, last = self._cpu
        self._cpu = (cpu, now)
        return SystemSample(
            cpu_percent=100.0 * (cpu - last_cpu) / (now - last) if now > last else 0.0,
            rss_mb=read_rss_mb(),
            temperature_c=read_temperature_c(self.thermal_root),
            disk_free_mb=disk_free,
            uptime_s=time.monotonic() - self._started,
        )
