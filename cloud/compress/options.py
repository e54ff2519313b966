"""Tunables of the compression worker, with the defaults it runs with."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CompressOptions"]


@dataclass(frozen=True)
class CompressOptions:
    seed: int = 0
    # measuring
    latency_warmup: int = 10
    latency_runs: int = 100
    calibration_samples: int = 200
    max_eval_samples: int = 2000
    # magnitude pruning
    prune_sparsity: float = 0.75
    prune_epochs: int = 8
    prune_learning_rate: float = 5e-4
    # distillation
    distill_width: float = 0.5
    distill_temperature: float = 4.0
    distill_alpha: float = 0.3  # weight of the hard-label loss; the soft targets get 1 - alpha
    distill_epochs: int = 40
    distill_learning_rate: float = 2e-3
    # quantization-aware training
    qat_epochs: int = 3
    qat_learning_rate: float = 2e-4
    batch_size: int = 32

    def __post_init__(self) -> None:
        problems = []
        if not 0.0 < self.prune_sparsity < 1.0:
            problems.append(f"prune_sparsity must be in (0, 1), got {self.prune_sparsity}")
        if not 0.0 < self.distill_width <= 1.0:
            problems.append(f"distill_width must be in (0, 1], got {self.distill_width}")
        if self.distill_temperature <= 0:
            problems.append(f"distill_temperature must be positive, got {self.distill_temperature}")
        if not 0.0 <= self.distill_alpha <= 1.0:
            problems.append(f"distill_alpha must be in [0, 1], got {self.distill_alpha}")
        for name in (
            "latency_runs",
            "calibration_samples",
            "max_eval_samples",
            "prune_epochs",
            "distill_epochs",
            "qat_epochs",
            "batch_size",
        ):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.latency_warmup < 0:
            problems.append(f"latency_warmup must not be negative, got {self.latency_warmup}")
        if problems:
            raise ValueError("; ".join(problems))
