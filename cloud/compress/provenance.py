"""What a release records about where its model came from: strings and integers only.

The worker writes one provenance per candidate that may be released (not one with no effect,
nor one that changes the application's I/O); `litefleet release --from-report` takes the
chosen one, or the one named, and only for the file whose sha256 it names.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from cloud.compress.measure import Measurement
from device_profiles.profile import DeviceProfile

__all__ = ["provenance", "sha256_of"]


def sha256_of(path: Path) -> str:
    """The file's sha256, or for a SavedModel folder the sha256 of its sorted file list with
    each file's sha256 (one `<sha256>  <relative path>` line per file)."""
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    lines = "".join(
        f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {f.relative_to(path).as_posix()}\n"
        for f in sorted(path.rglob("*"))
        if f.is_file()
    )
    return hashlib.sha256(lines.encode()).hexdigest()


def provenance(
    parent_sha256: str, profile: DeviceProfile, baseline: Measurement, chosen: Measurement
) -> dict[str, Any]:
    metrics: dict[str, str | int] = {
        "method": chosen.method,
        "profile": profile.name,
        "sha256": chosen.sha256,
        "bytes": chosen.bytes,
        "zstd_bytes": chosen.zstd_bytes,
        "params": chosen.params,
        "nonzero_params": chosen.nonzero_params,
        "agreement": f"{chosen.agreement:.4f}",
        "max_abs_error": f"{chosen.max_abs_error:.6g}",
        "mean_abs_error": f"{chosen.mean_abs_error:.6g}",
        "latency_p50_us": round(chosen.latency_p50_ms * 1000),
        "latency_p95_us": round(chosen.latency_p95_ms * 1000),
        "threads": profile.runtime.threads,
        "baseline_sha256": baseline.sha256,
        "baseline_bytes": baseline.bytes,
    }
    for k, out in enumerate(chosen.outputs if len(chosen.outputs) > 1 else ()):
        metrics[f"output_{k}_{out.kind}_agreement"] = f"{out.agreement:.4f}"
    if chosen.accuracy is not None and baseline.accuracy is not None:
        metrics["accuracy"] = f"{chosen.accuracy:.4f}"
        metrics["baseline_accuracy"] = f"{baseline.accuracy:.4f}"
    return {"parent_sha256": parent_sha256, "recipe": chosen.recipe, "metrics": metrics}
