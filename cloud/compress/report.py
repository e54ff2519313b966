"""The worker's result and its three renderings: `report.json`, `report.md`, `report.png`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloud.compress.measure import Measurement
from localio.atomic import write_atomic

__all__ = ["SCHEMA", "Report", "Skipped"]

SCHEMA = "litefleet.compress-report/2"  # 2: fidelity per output, provenances, I/O


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
    generated_inputs: bool  # no data given: the figures come from generated inputs
    expected_io: str  # the I/O signature candidates must keep
    baseline: Measurement
    candidates: tuple[Measurement, ...]
    skipped: tuple[Skipped, ...]
    chosen: str | None
    chosen_path: str | None
    reason: str
    parent_sha256: str
    provenance: dict[str, Any] | None  # the chosen one's; strings and integers only
    provenances: dict[str, dict[str, Any]]  # every releasable candidate's, by method
    seconds: float

    def is_chosen(self, m: Measurement) -> bool:
        return m.method == self.chosen or (m is self.baseline and self.chosen == "original")

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
                "generated": self.generated_inputs,
                "quality": "accuracy" if self.labelled else "agreement",
            },
            "expected_io": self.expected_io,
            "baseline": self.baseline.to_dict(),
            "candidates": [c.to_dict() for c in self.candidates],
            "skipped": [{"method": s.method, "reason": s.reason} for s in self.skipped],
            "chosen": self.chosen,
            "chosen_path": self.chosen_path,
            "reason": self.reason,
            "parent_sha256": self.parent_sha256,
            "provenance": self.provenance,
            "provenances": self.provenances,
            "seconds": round(self.seconds, 2),
        }

    def write(self, out_dir: Path) -> None:
        """Write report.json, report.md and report.png into `out_dir`."""
        write_atomic(
            out_dir / "report.json", (json.dumps(self.to_dict(), indent=2) + "\n").encode("utf-8")
        )
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
            name = "original" if m is b else m.method  # float32 or not: the input model
            name = f"**{name}**" if self.is_chosen(m) else name
            fits = "yes" if m.fits_budget else "no: " + "; ".join(m.misses)
            if m is b and self.chosen == "original":
                fits = "kept: nothing compressed it"
            elif m is b and self.chosen != "float32":
                fits = "-"
            rows.append(
                f"| {name} | {m.bytes:,} | {m.bytes / b.bytes:.2f} | {m.zstd_bytes:,} | "
                f"{m.zstd_bytes / b.zstd_bytes:.2f} | {m.quality:.4f} | "
                f"{(b.quality - m.quality) * 100:.2f} | {m.max_abs_error:.4g} | "
                f"{m.mean_abs_error:.4g} | {m.latency_p50_ms:.3f} | {m.latency_p95_ms:.3f} | "
                f"{m.params:,} | {m.nonzero_params:,} | {fits} |"
            )
        return head + "\n".join(rows) + "\n"

    def outputs_table(self) -> str:
        """Fidelity per output of every candidate against the original."""
        head = (
            "| method | output | kind | agreement | max abs err | mean abs err |\n"
            "|---|---|---|--:|--:|--:|\n"
        )
        rows = [
            f"| {m.method} | `{o.name}` | {o.kind} | {o.agreement:.4f} | "
            f"{o.max_abs_error:.4g} | {o.mean_abs_error:.4g} |"
            for m in self.candidates
            for o in m.outputs
        ]
        return head + "\n".join(rows) + "\n"

    def markdown(self) -> str:
        if self.labelled:
            quality = "."
        else:
            quality = (
                " without labels: quality is agreement with the original model, output by "
                "output (see below), the lowest counting."
            )
        generated = (
            "**The figures come from generated inputs** (no data given), not from real data. "
            if self.generated_inputs
            else ""
        )
        parts = [
            f"# Compression report: {Path(self.model).name}\n",
            f"Profile `{self.profile}` ({self.threads} threads). Evaluated on "
            f"{self.eval_samples} samples from `{self.eval_source}`{quality} {generated}"
            f"Latency is LiteRT on the machine that ran the worker. Candidates keep the "
            f"application's I/O: `{self.expected_io}`.\n",
            self.table(),
            "## Fidelity per output\n\n" + self.outputs_table(),
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
            ("original" if m is self.baseline else m.method)
            + (" [chosen]" if self.is_chosen(m) else "")
            for m in models
        ]
        sizes = [m.bytes / 1024 for m in models]
        quality = [m.quality * 100 for m in models]
        latency = [m.latency_p50_ms for m in models]
        edges = ["red" if self.is_chosen(m) else "black" for m in models]
        widths = [2.5 if self.is_chosen(m) else 0.8 for m in models]
        quality_name = "accuracy (%)" if self.labelled else "agreement with original (%)"

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
