"""A model's input/output signature, read from the interpreter, as `shared.documents` types."""

from __future__ import annotations

from typing import Any

import numpy as np

from shared.documents import IOSignature, TensorSpec

__all__ = ["io_signature", "tensor_spec"]


def tensor_spec(detail: dict[str, Any]) -> TensorSpec:
    """One interpreter tensor detail as a `TensorSpec` (scale as the repr of the float)."""
    scale, zero_point = detail.get("quantization", (0.0, 0))
    quantized = float(scale) != 0.0
    return TensorSpec(
        name=str(detail["name"]),
        shape=tuple(int(d) for d in detail["shape"]),
        dtype=np.dtype(detail["dtype"]).name,
        scale=repr(float(scale)) if quantized else None,
        zero_point=int(zero_point) if quantized else None,
    )


def io_signature(interpreter: Any) -> IOSignature:
    return IOSignature(
        inputs=tuple(tensor_spec(d) for d in interpreter.get_input_details()),
        outputs=tuple(tensor_spec(d) for d in interpreter.get_output_details()),
    )
