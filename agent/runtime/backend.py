"""Which TFLite interpreter this device has: LiteRT first, `tflite_runtime` as the fallback.

LiteRT (`ai-edge-litert`) is the runtime the project is built and tested against. Where it has
no wheel (older ARM boards, numpy<2 images), the `tflite-runtime` package offers the same
`Interpreter` and `load_delegate` API. Both bring XNNPACK, which they apply by default.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["Backend", "NoRuntime", "backend"]

_CANDIDATES = (
    ("litert", "ai_edge_litert.interpreter"),
    ("tflite_runtime", "tflite_runtime.interpreter"),
)


class NoRuntime(RuntimeError):
    """Neither LiteRT nor tflite-runtime is importable: the agent cannot run models."""


@dataclass(frozen=True)
class Backend:
    name: str  # "litert" | "tflite_runtime"
    interpreter: Any  # the Interpreter class
    load_delegate: Any  # the load_delegate function


_cached: Backend | None = None


def backend(prefer: str | None = None) -> Backend:
    """The first importable backend (or `prefer` when it is importable)."""
    global _cached
    if prefer is None and _cached is not None:
        return _cached
    candidates = sorted(_CANDIDATES, key=lambda c: c[0] != prefer)
    problems = []
    for name, module_name in candidates:
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            problems.append(f"{module_name}: {e}")
            continue
        found = Backend(name, module.Interpreter, module.load_delegate)
        if prefer is None:
            _cached = found
            if name != _CANDIDATES[0][0]:
                logger.warning("LiteRT is not installed; using the %s fallback", name)
        return found
    raise NoRuntime(
        "no TFLite runtime: install ai-edge-litert (or tflite-runtime where LiteRT "
        "has no wheel); " + "; ".join(problems)
    )
