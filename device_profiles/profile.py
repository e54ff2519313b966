"""Device profiles: one TOML document per hardware class (see `device_profiles/`).

Parsing collects every problem rather than stopping at the first, so `check-config` can
print one line per mistake.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field

from localio.tomlcheck import Problems, TableReader

__all__ = [
    "QUANTIZATIONS",
    "Budget",
    "CameraDefaults",
    "DeviceProfile",
    "ProfileInvalid",
    "RuntimeSettings",
    "parse_profile",
]

QUANTIZATIONS = (
    "float32", "float16", "weight_only_int8", "dynamic_int8", "int8", "prune", "distill", "qat",
)


class ProfileInvalid(Problems):
    """A profile with problems; `problems` has one human line per mistake."""


@dataclass(frozen=True)
class RuntimeSettings:
    threads: int = 2
    delegates: tuple[str, ...] = ()  # external delegate libraries, tried in order


@dataclass(frozen=True)
class Budget:
    max_model_bytes: int = 16 * 1024 * 1024
    memory_mb: int = 512
    max_latency_ms: float | None = None
    max_accuracy_drop: float = 0.01


@dataclass(frozen=True)
class CameraDefaults:
    width: int = 640
    height: int = 480
    fps: int = 30


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    arch: str
    description: str = ""
    accelerators: tuple[str, ...] = ()
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    quantizations: tuple[str, ...] = ("dynamic_int8", "float16")
    budget: Budget = field(default_factory=Budget)
    telemetry_interval_s: float = 10.0
    camera: CameraDefaults = field(default_factory=CameraDefaults)


def parse_profile(text: str, source: str = "profile") -> DeviceProfile:
    """Parse a profile's TOML text; raise `ProfileInvalid` listing every problem."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ProfileInvalid([f"{source}: not valid TOML: {e}"]) from e
    r = TableReader(source)
    r.unknown(doc, {"name", "arch", "description", "accelerators", "runtime", "quantizations",
                    "budget", "telemetry", "camera"})
    name = r.get(doc, "name", str, None)
    if name is None:
        r.problem("name", "missing")
    arch = r.get(doc, "arch", str, None)
    if arch is None:
        r.problem("arch", "missing")
    accelerators = r.get(doc, "accelerators", list, [])
    quantizations = r.get(doc, "quantizations", list, ["dynamic_int8", "float16"])
    for q in quantizations:
        if q not in QUANTIZATIONS:
            r.problem("quantizations", f"unknown method {q!r} (one of {', '.join(QUANTIZATIONS)})")

    rt = r.get(doc, "runtime", dict, {})
    r.unknown(rt, {"threads", "delegates"}, "runtime.")
    threads = r.positive("runtime.threads", r.get(rt, "threads", int, 2, "runtime."), 2)
    delegates = r.get(rt, "delegates", list, [], "runtime.")
    if not all(isinstance(d, str) for d in delegates):
        r.problem("runtime.delegates", "expected a list of library names")
        delegates = []

    b = r.get(doc, "budget", dict, {})
    r.unknown(b, {"max_model_bytes", "memory_mb", "max_latency_ms", "max_accuracy_drop"}, "budget.")
    budget = Budget(
        max_model_bytes=r.positive(
            "budget.max_model_bytes", r.get(b, "max_model_bytes", int, Budget.max_model_bytes,
                                            "budget."), Budget.max_model_bytes),
        memory_mb=r.positive("budget.memory_mb", r.get(b, "memory_mb", int, Budget.memory_mb,
                                                        "budget."), Budget.memory_mb),
        max_latency_ms=r.positive("budget.max_latency_ms",
                                  r.get(b, "max_latency_ms", (int, float), None, "budget."), None),
        max_accuracy_drop=float(r.get(b, "max_accuracy_drop", (int, float), 0.01, "budget.")),
    )

    t = r.get(doc, "telemetry", dict, {})
    r.unknown(t, {"interval_s"}, "telemetry.")
    interval = r.positive("telemetry.interval_s",
                          r.get(t, "interval_s", (int, float), 10.0, "telemetry."), 10.0)

    c = r.get(doc, "camera", dict, {})
    r.unknown(c, {"width", "height", "fps"}, "camera.")
    camera = CameraDefaults(
        width=r.positive("camera.width", r.get(c, "width", int, 640, "camera."), 640),
        height=r.positive("camera.height", r.get(c, "height", int, 480, "camera."), 480),
        fps=r.positive("camera.fps", r.get(c, "fps", int, 30, "camera."), 30),
    )
    if r.problems:
        raise ProfileInvalid(r.problems)
    return DeviceProfile(
        name=name,
        arch=arch,
        description=r.get(doc, "description", str, ""),
        accelerators=tuple(accelerators),
        runtime=RuntimeSettings(threads=threads, delegates=tuple(delegates)),
        quantizations=tuple(quantizations),
        budget=budget,
        telemetry_interval_s=float(interval),
        camera=camera,
    )
