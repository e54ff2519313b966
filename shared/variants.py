"""The variants a release may carry for its profile: the same model compressed several ways
(for example float16, dynamic_int8, int8, all with the release's I/O), of which each device
activates the fastest it measures among those within the release's quality budget.

    "variants": {"min_quality_ppm": 990000, "max_bench_ms": 20000,
                 "candidates": [{"name": "float16", "quality_ppm": 998000,
                                 "target": {"sha256": ..., "size": ...},
                                 "artifact": {"url": ..., "sha256": ..., "size": ...,
                                              "codec": "zstd"}}, ...]}

`quality_ppm` is the candidate's quality on the evaluation set (accuracy, or agreement with the
original without labels) in millionths, 0 when unknown; `min_quality_ppm` the budget. The
release's own target is one of the candidates (older agents install it and ignore the rest).
Bounded: at most `MAX_CANDIDATES`, names of a fixed pattern, integers in range.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from shared.errors import MalformedDocument

__all__ = ["MAX_CANDIDATES", "Variant", "VariantSet"]

MAX_CANDIDATES = 8
MAX_BENCH_MS = 600_000
PPM = 1_000_000
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_INT64 = 2**63 - 1


def _obj(value: Any, path: str, keys: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedDocument("expected an object", path)
    for key in value:
        if key not in keys:
            raise MalformedDocument("unknown field", f"{path}.{key}")
    for key in sorted(keys):
        if key not in value:
            raise MalformedDocument("missing", f"{path}.{key}")
    return value


def _int(value: Any, path: str, low: int, high: int = _INT64) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise MalformedDocument(f"expected an integer in [{low}, {high}]", path)
    return value


def _text(
    value: Any, path: str, pattern: re.Pattern[str] | None = None, max_len: int = 4096
) -> str:
    if (
        not isinstance(value, str)
        or len(value) > max_len
        or (pattern is not None and not pattern.match(value))
    ):
        raise MalformedDocument(
            "expected a string" + (f" of the form {pattern.pattern}" if pattern else ""), path
        )
    return value


@dataclass(frozen=True)
class Variant:
    name: str
    quality_ppm: int
    sha256: str  # the decompressed .tflite
    size: int
    url: str  # the zstd artifact
    artifact_sha256: str
    artifact_size: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "quality_ppm": self.quality_ppm,
            "target": {"sha256": self.sha256, "size": self.size},
            "artifact": {
                "url": self.url,
                "sha256": self.artifact_sha256,
                "size": self.artifact_size,
                "codec": "zstd",
            },
        }

    @classmethod
    def parse(cls, value: Any, path: str) -> Variant:
        v = _obj(value, path, {"name", "quality_ppm", "target", "artifact"})
        t = _obj(v["target"], f"{path}.target", {"sha256", "size"})
        a = _obj(v["artifact"], f"{path}.artifact", {"url", "sha256", "size", "codec"})
        if a["codec"] != "zstd":
            raise MalformedDocument("expected 'zstd'", f"{path}.artifact.codec")
        return cls(
            name=_text(v["name"], f"{path}.name", _NAME),
            quality_ppm=_int(v["quality_ppm"], f"{path}.quality_ppm", 0, PPM),
            sha256=_text(t["sha256"], f"{path}.target.sha256", _SHA256),
            size=_int(t["size"], f"{path}.target.size", 1),
            url=_text(a["url"], f"{path}.artifact.url"),
            artifact_sha256=_text(a["sha256"], f"{path}.artifact.sha256", _SHA256),
            artifact_size=_int(a["size"], f"{path}.artifact.size", 1),
        )


@dataclass(frozen=True)
class VariantSet:
    candidates: tuple[Variant, ...]
    min_quality_ppm: int = 0
    max_bench_ms: int = 20_000  # all candidates' benchmarks together, at most

    def fitting(self) -> tuple[Variant, ...]:
        return tuple(v for v in self.candidates if v.quality_ppm >= self.min_quality_ppm)

    def by_sha256(self, sha256: str) -> Variant | None:
        return next((v for v in self.candidates if v.sha256 == sha256), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "min_quality_ppm": self.min_quality_ppm,
            "max_bench_ms": self.max_bench_ms,
            "candidates": [v.to_dict() for v in self.candidates],
        }

    @classmethod
    def parse(cls, value: Any, path: str = "variants") -> VariantSet:
        v = _obj(value, path, {"min_quality_ppm", "max_bench_ms", "candidates"})
        raw = v["candidates"]
        if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_CANDIDATES:
            raise MalformedDocument(f"1 to {MAX_CANDIDATES} candidates", f"{path}.candidates")
        candidates = tuple(Variant.parse(c, f"{path}.candidates[{i}]") for i, c in enumerate(raw))
        if len({c.name for c in candidates}) != len(candidates) or len(
            {c.sha256 for c in candidates}
        ) != len(candidates):
            raise MalformedDocument("candidate names and models must differ", f"{path}.candidates")
        return cls(
            candidates,
            _int(v["min_quality_ppm"], f"{path}.min_quality_ppm", 0, PPM),
            _int(v["max_bench_ms"], f"{path}.max_bench_ms", 1, MAX_BENCH_MS),
        )
