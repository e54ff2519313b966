"""Pre- and postprocessing derived from the model's input/output signature."""

from __future__ import annotations

from agent.processing.outputs import OutputStream
from agent.processing.postprocess import (
    Interpretation,
    OutputSummary,
    Postprocess,
    load_labels,
    output_kind,
)
from agent.processing.preprocess import (
    ImagePrep,
    InputMismatch,
    PrepOptions,
    SensorPrep,
    input_kind,
    pixel_table,
    prep_for,
)
from agent.processing.quantize import dequantize, quantize, real_range
from agent.processing.window import Windower

__all__ = [
    "ImagePrep",
    "InputMismatch",
    "Interpretation",
    "OutputStream",
    "OutputSummary",
    "Postprocess",
    "PrepOptions",
    "SensorPrep",
    "Windower",
    "dequantize",
    "input_kind",
    "load_labels",
    "output_kind",
    "pixel_table",
    "prep_for",
    "quantize",
    "real_range",
]
