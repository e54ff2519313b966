"""The worker's result and its three renderings: `report.json`, `report.md`, `report.png`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloud.compress.measure import Measurement
from shared.atomic import write_atomic

__all__ = ["SCHEMA", "Report", "Skipped"]

SCHEMA = "litefleet.compress-report/1"


@dataclass(frozen=True)
class Skipped:
    method: str
    reason: str


@dataclass(frozen=True)
class Report:
    model: str
    input_kind: str  # "tflite" | "keras" | "saved_model"
    profile: str
    threads: int
    eval_source: str
    eval_samples: int
    labelled: bool
    baseline: Measurement
    candidates: tuple[Measurement, ...]
    skipped: tuple[Skipped, ...]
    chosen: str | None
    chosen_path: str | None
    reason: str
    provenance: dict[str, Any] | None  # strings and integers only: it goes into a release
    seconds: float

    def candidate(self, method: str) -> Measurement:
        return next(c for c in self.candidates if c.method == method)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "model": self.model,
            "input_kind": self.input_kind,
            "profile": self.profile,
            "threads": self.threads,
            "eval": {
                "source": self.eval_source,
                "samples": self.eval_samples,
                "labelled": self.labelled,
                "quality": "accuracy" if self.labelled else "agreement",
            },
            "baseline": self.baseline.to_dict(),
            "candidates": [c.to_dict() for c in self.candidates],
            "skipped": [{"method": s.method, "reason": s.reason} for s in self.skipped],
            "chosen": self.chosen,
            "chosen_path": self.chosen_path,
            "reason": self.reason,
            "provenance": self.provenance,
            "seconds": round(self.seconds, 2),
        }

    def write(self, out_dir: Path) -> None:
        """Write report.json, report.md and report.png into `out_dir`."""
        write_atomic(out_dir / "report.json",
                     (json.dumps(self.to_dict(), indent=2) + "\n").encode("utf-8"))
        write_atomic(out_dir / "report.md", self.markdown().encode("utf-8"))
        self.plot(out_dir / "report.png")

    def table(self) -> str:
        """The figures as a Markdown table, original first."""
        quality = "accuracy" if self.labelled else "agreement"
        head = (
            f"| method | bytes | x orig | zstd bytes | x orig | {quality} | drop (pt) "
            "| max abs err | mean abs err | p50 ms | p95 ms | params | nonzero | fits |\n"
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n"
        )
        b = self.baseline
        rows = []
        for m in (b, *self.candidates):
            name = f"**{m.method}**" if m.method == self.chosen else m.method
            if m is b:
                name += " (original)"
            fits = "yes" if m.fits_budget else "no: " + "; ".join(m.misses)
            if m is b and self.chosen != "float32":
                fits = "-"
            rows.append(
                f"| {name} | {m.bytes:,} | {m.bytes / b.bytes:.2f} | {m.zstd_bytes:,} | "
                f"{m.zstd_bytes / b.zstd_bytes:.2f} | {m.quality:.4f} | "
                f"{(b.quality - m.quality) * 100:.2f} | {m.max_abs_error:.4g} | "
                f"{m.mean_abs_error:.4g} | {m.latency_p50_ms:.3f} | {m.latency_p95_ms:.3f} | "
                f"{m.params:,} | {m.nonzero_params:,} | {fits} |"
            )
        return head + "\n".join(rows) + "\n"

    def markdown(self) -> str:
        parts = [
            f"# Compression report: {Path(self.model).name}\n",
            f"Profile `{self.profile}` ({self.threads} threads). Evaluated on "
            f"{self.eval_samples} samples from `{self.eval_source}`"
            + (
                "."
                if self.labelled
                else " without labels: quality is top-1 agreement with the original model."
            )
            + " Latency is LiteRT on the machine that ran the worker.\n",
            self.table(),
            f"**Chosen:** {self.chosen or 'none'}"
            + (f" (`{self.chosen_path}`)" if self.chosen_path else "")
            + f"\n\n{self.reason}\n",
        ]
        recipes = "\n".join(
            f"- `{m.method}`: {m.recipe}" for m in (self.baseline, *self.candidates)
        )
        parts.append(f"## Recipes\n\n{recipes}\n")
        if self.skipped:
            skipped = "\n".join(f"- `{s.method}`: {s.reason}" for s in self.skipped)
            parts.append(f"## Skipped\n\n{skipped}\n")
        return "\n".join(parts)

    def plot(self, path: Path) -> None:
        """Size against quality (left) and against p50 latency (right), coloured by the other
        figure, one labelled point per model; the chosen one ringed in red."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        models = (self.baseline, *self.candidates)
        labels = [
            m.method
            + (" (original)" if m is self.baseline else "")
            + (" [chosen]" if m.method == self.chosen else "")
            for m in models
        ]
        sizes = [m.bytes / 1024 for m in models]
        quality = [m.quality * 100 for m in models]
        latency = [m.latency_p50_ms for m in models]
        edges = ["red" if m.method == self.chosen else "black" for m in models]
        widths = [2.5 if m.method == self.chosen else 0.8 for m in models]
        quality_name = "accuracy (%)" if self.labelled else "top-1 agreement with original (%)"

        fig = Figure(figsize=(13, 5.5), dpi=100)
        FigureCanvasAgg(fig)
        left, right = fig.subplots(1, 2)
        panels = (
            (left, quality, latency, quality_name, "latency p50 (ms)", "viridis"),
            (right, latency, quality, "LiteRT latency p50 (ms)", quality_name, "plasma"),
        )
        for ax, ys, colours, ylabel, clabel, cmap in panels:
            points = ax.scatter(
                sizes, ys, c=colours, cmap=cmap, s=90, edgecolors=edges, linewidths=widths
            )
            for k, (label, x, y) in enumerate(zip(labels, sizes, ys, strict=True)):
                # stagger the labels so that models of nearly equal size stay readable
                ax.annotate(
                    label,
                    (x, y),
                    textcoords="offset points",
                    xytext=(8, 14 * (k % 4) - 18),
                    fontsize=8,
                    arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.6},
                )
            fig.colorbar(points, ax=ax).set_label(clabel)
            ax.set_xlabel("model size (KiB)")
            ax.set_ylabel(ylabel)
            ax.grid(True, alpha=0.3)
            ax.margins(y=0.25)
            ax.set_xlim(0, max(sizes) * 1.4)  # room for the labels right of the largest
        low, high = min(quality), max(quality)
        if high - low < 2.0:
            left.set_ylim(low - 1.0, high + 1.0)
        fig.suptitle(f"{Path(self.model).name} for profile {self.profile}")
        fig.tight_layout()
        tmp = path.with_name(f".{path.name}.tmp")
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)


