"""Device profiles: one TOML document per hardware class (see `device_profiles/`).

Parsing collects every problem rather than stopping at the first, so `check-config` can
print one line per mistake.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from localio.tomlcheck import POSITIVE, Paths, Problems, Required, TableReader, read

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
    "float32",
    "float16",
    "weight_only_int8",
    "dynamic_int8",
    "int8",
    "prune",
    "distill",
    "qat",
)


class ProfileInvalid(Problems):
    """A profile with problems; `problems` has one human line per mistake."""


Positive = Annotated[int, POSITIVE]


@dataclass(frozen=True)
class RuntimeSettings:
    threads: Positive = 2
    delegates: tuple[str, ...] = ()  # external delegate libraries, tried in order


@dataclass(frozen=True)
class Budget:
    max_model_bytes: Positive = 16 * 1024 * 1024
    memory_mb: Positive = 512
    max_latency_ms: Annotated[float | None, POSITIVE] = None
    max_accuracy_drop: float = 0.01


@dataclass(frozen=True)
class CameraDefaults:
    width: Positive = 640
    height: Positive = 480
    fps: Positive = 30


@dataclass(frozen=True)
class DeviceProfile:
    name: Annotated[str, Required()]
    arch: Annotated[str, Required()]
    description: str = ""
    accelerators: tuple[str, ...] = ()
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    quantizations: tuple[str, ...] = ("dynamic_int8", "float16")
    budget: Budget = field(default_factory=Budget)
    telemetry_interval_s: float = 10.0
    camera: CameraDefaults = field(default_factory=CameraDefaults)


@dataclass(frozen=True)
class _Telemetry:
    """The profile's `[telemetry]` table (`DeviceProfile.telemetry_interval_s`)."""

    interval_s: Annotated[float, POSITIVE] = 10.0


def parse_profile(text: str, source: str = "profile") -> DeviceProfile:
    """Parse a profile's TOML text; raise `ProfileInvalid` listing every problem.

    Each table is read by `localio.tomlcheck.read` from the dataclasses above."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ProfileInvalid([f"{source}: not valid TOML: {e}"]) from e
    r = TableReader(source)
    paths = Paths(Path.cwd())  # a profile names no files

    def section(key: str) -> dict[str, Any]:
        table: dict[str, Any] = r.get(doc, key, dict, {})
        return table

    top = read(
        r,
        DeviceProfile,
        doc,
        "",
        paths,
        skip={"runtime", "budget", "camera"},
        extra_keys={"telemetry"},
        not_keys={"telemetry_interval_s"},
    )
    for q in top["quantizations"]:
        if q not in QUANTIZATIONS:
            r.problem("quantizations", f"unknown method {q!r} (one of {', '.join(QUANTIZATIONS)})")
    runtime = read(r, RuntimeSettings, section("runtime"), "runtime.", paths)
    if not all(isinstance(d, str) for d in runtime["delegates"]):
        r.problem("runtime.delegates", "expected a list of library names")
        runtime["delegates"] = ()
    budget = read(r, Budget, section("budget"), "budget.", paths)
    telemetry = read(r, _Telemetry, section("telemetry"), "telemetry.", paths)
    camera = read(r, CameraDefaults, section("camera"), "camera.", paths)
    if r.problems:
        raise ProfileInvalid(r.problems)
    return DeviceProfile(
        **top,
        runtime=RuntimeSettings(**runtime),
        budget=Budget(**budget),
        telemetry_interval_s=telemetry["interval_s"],
        camera=CameraDefaults(**camera),
    )
