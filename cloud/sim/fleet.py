"""N simulated devices in one process: ramp-up, faults, a bounded run, a clean stop.

One thread runs an asyncio event loop with every device's MQTT client on it (paho's
external-loop interface, `cloud.sim.network`); downloads and model rebuilding run on a small
worker pool (`cloud.sim.update.Downloads`). Devices connect at a bounded rate so a fleet of
thousands does not hit the broker at once.

At the end each device waits (bounded) for its outbox to be acknowledged, publishes its
retained `online: false` state and disconnects cleanly.
"""

from __future__ import annotations

import asyncio
import logging
import random
import resource
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from cloud.config import MqttConfig
from cloud.sim.device import DeviceEnv, DeviceFaults, SimDevice
from cloud.sim.network import Reactor
from cloud.sim.trust import RootChains, Trust
from cloud.sim.update import Downloads, ModelCache
from shared.messages import ModelIdentity
from shared.root import TrustedRoot

__all__ = ["Fleet", "SimOptions", "device_ids", "raise_file_limit"]

log = logging.getLogger(__name__)

FDS_PER_PROCESS = 64  # files, the event loop, worker sockets: beyond one socket per device
DRAIN_S = 15.0  # at stop, how long devices may take to deliver what their outboxes hold
REPORT_EVERY_S = 10.0


@dataclass(frozen=True)
class SimOptions:
    devices: int
    id_prefix: str = "sim"
    profile: str = "x86-gateway"
    model_name: str = "digits"
    telemetry_interval_s: float = 10.0
    fail_probation_pct: float = 0.0
    offline_pct: float = 0.0
    offline_s: float = 5.0
    restart_pct: float = 0.0
    restart_within_s: float = 60.0  # each restarting device restarts once, this soon after start
    duration_s: float = 0.0  # 0: until stopped
    probation_s: float = 2.0
    connect_rate: float = 200.0  # new connections per second during ramp-up
    downloads: int = 32  # concurrent transfers for the whole fleet
    cached_models: int = 8
    download_timeout_s: float = 30.0
    session_expiry_s: int = 3600
    keepalive_s: int = 60
    outbox_max: int = 1_000  # records per device kept while it is away; older ones dropped
    seed: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.devices <= 20_000:
            raise ValueError(f"--devices {self.devices}: between 1 and 20000")
        for name in ("fail_probation_pct", "offline_pct", "restart_pct"):
            if not 0 <= getattr(self, name) <= 100:
                raise ValueError(
                    f"{name.removesuffix('_pct').replace('_', '-')} must be a share "
                    "between 0 and 100"
                )
        for name in (
            "telemetry_interval_s",
            "connect_rate",
            "probation_s",
            "offline_s",
            "restart_within_s",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.duration_s < 0 or self.downloads < 1 or self.cached_models < 1:
            raise ValueError("duration, downloads and cached models must not be negative")


def device_ids(prefix: str, n: int) -> list[str]:
    width = max(4, len(str(n - 1)))
    return [f"{prefix}-{i:0{width}d}" for i in range(n)]


def raise_file_limit(devices: int) -> str | None:
    """Raise the open-file limit's soft value to the hard one; a sentence if still too low."""
    need = devices + FDS_PER_PROCESS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        log.info("open-file limit raised from %s to %s", soft, hard)
        soft = hard
    if soft != resource.RLIM_INFINITY and soft < need:
        return (
            f"{devices} devices need about {need} open files, and this process may open "
            f"{soft} (ulimit -n); raise the hard limit (ulimit -Hn, LimitNOFILE=) or run "
            "fewer devices"
        )
    return None


def _pick(rng: random.Random, n: int, pct: float) -> set[int]:
    return set(rng.sample(range(n), round(n * pct / 100)))


class Fleet:
    def __init__(
        self,
        options: SimOptions,
        mqtt: MqttConfig,
        root: TrustedRoot,
        *,
        max_model_bytes: int,
        initial: tuple[ModelIdentity, bytes] | None,
    ) -> None:
        self.options = options
        self.mqtt = mqtt
        self.root = root
        self.max_model_bytes = max_model_bytes
        self.initial = initial
        self.ids = device_ids(options.id_prefix, options.devices)
        self.devices: list[SimDevice] = []
        self.outcomes: Counter[str] = Counter()
        self.chains = RootChains()

    def faults(self) -> list[DeviceFaults]:
        o = self.options
        rng = random.Random(o.seed)
        failing = _pick(rng, o.devices, o.fail_probation_pct)
        offline = _pick(rng, o.devices, o.offline_pct)
        restarting = _pick(rng, o.devices, o.restart_pct)
        return [
            DeviceFaults(
                i in failing,
                i in offline,
                rng.uniform(0.5, o.restart_within_s) if i in restarting else None,
            )
            for i in range(o.devices)
        ]

    def run(self, stop: threading.Event) -> dict[str, Any]:
        """Run until `stop` is set or the duration passes; return the summary."""
        return asyncio.run(self._run(stop))

    async def _run(self, stop: threading.Event) -> dict[str, Any]:
        o = self.options
        loop = asyncio.get_running_loop()
        reactor = Reactor(loop)
        downloads = Downloads(loop, o.downloads, o.download_timeout_s)
        cache = ModelCache(o.cached_models)
        if self.initial is not None:
            cache.pin(self.initial[0].sha256, self.initial[1])
        env = DeviceEnv(
            mqtt=self.mqtt,
            reactor=reactor,
            downloads=downloads,
            cache=cache,
            trust=Trust.of(self.root),
            chains=self.chains,
            profile=o.profile,
            model_name=o.model_name,
            max_model_bytes=self.max_model_bytes,
            initial=self.initial[0] if self.initial else None,
            telemetry_interval_s=o.telemetry_interval_s,
            probation_s=o.probation_s,
            offline_s=o.offline_s,
            session_expiry_s=o.session_expiry_s,
            outbox_max=o.outbox_max,
            keepalive_s=o.keepalive_s,
            outcomes=self.outcomes,
        )
        self.devices = [SimDevice(d, env, f) for d, f in zip(self.ids, self.faults(), strict=True)]
        misc = asyncio.create_task(reactor.run_misc())
        started = time.monotonic()
        try:
            await self._ramp_up(stop)
            log.info("%s devices started in %.1f s", len(self.devices), time.monotonic() - started)
            last_report = time.monotonic()
            while not stop.is_set():
                if o.duration_s and time.monotonic() - started >= o.duration_s:
                    break
                await asyncio.sleep(0.2)
                if time.monotonic() - last_report >= REPORT_EVERY_S:
                    last_report = time.monotonic()
                    log.info("%s", self._progress())
        finally:
            await self._stop_all()
            misc.cancel()
            downloads.close()
        return self.summary(time.monotonic() - started)

    async def _ramp_up(self, stop: threading.Event) -> None:
        gap = 1.0 / self.options.connect_rate
        begin = time.monotonic()
        for i, device in enumerate(self.devices):
            if stop.is_set():
                return
            device.start()
            delay = begin + (i + 1) * gap - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif i % 50 == 0:
                await asyncio.sleep(0)  # let the loop read CONNACKs while we are behind

    async def _stop_all(self) -> None:
        deadline = time.monotonic() + DRAIN_S
        while time.monotonic() < deadline and any(
            d.link.pending and d.link.connected for d in self.devices
        ):
            await asyncio.sleep(0.1)
        for device in self.devices:
            device.stop()
        await asyncio.sleep(0.5)  # let the loop write the offline states and DISCONNECTs

    def _progress(self) -> str:
        connected = sum(1 for d in self.devices if d.link.connected)
        pending = sum(d.link.pending for d in self.devices)
        done = ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items())) or "no updates"
        return f"{connected}/{len(self.devices)} connected, {pending} unacknowledged; {done}"

    def summary(self, elapsed_s: float) -> dict[str, Any]:
        return {
            "devices": len(self.devices),
            "elapsed_s": round(elapsed_s, 1),
            "records_sent": sum(d.link.seq for d in self.devices),
            "unacknowledged": sum(d.link.pending for d in self.devices),
            "outbox_dropped": sum(d.link.dropped for d in self.devices),
            "connects": sum(d.link.connects for d in self.devices),
            "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "models": dict(
                Counter(
                    f"{d.model.name}@{d.model.version}" if d.model else "-" for d in self.devices
                )
            ),
            "roots": dict(Counter(f"v{d.trust.version}" for d in self.devices)),
            "root_walks": self.chains.walks,
            "outcomes": dict(sorted(self.outcomes.items())),
        }
