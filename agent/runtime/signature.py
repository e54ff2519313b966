"""A model's input/output signature, read from the interpreter, as `shared.documents` types."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from shared.documents import IOSignature, TensorSpec

__all__ = ["Interpreter", "io_signature", "tensor_spec"]


class Interpreter(Protocol):
    """What is read of a LiteRT (or tflite-runtime) interpreter: its tensor details."""

    def get_input_details(self) -> Sequence[Mapping[str, Any]]: ...
    def get_output_details(self) -> Sequence[Mapping[str, Any]]: ...
    def set_tensor(self, index: int, value: np.ndarray) -> None: ...
    def invoke(self) -> None: ...
    def get_tensor(self, index: int) -> np.ndarray: ...


def tensor_spec(detail: Mapping[str, Any]) -> TensorSpec:
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


def io_signature(interpreter: Interpreter) -> IOSignature:
    return IOSignature(
        inputs=tuple(tensor_spec(d) for d in interpreter.get_input_details()),
        outputs=tuple(tensor_spec(d) for d in interpreter.get_output_details()),
    )
