"""What a `.tflite` file expects and produces, read with LiteRT's interpreter.

The signature is expressed as `shared.documents.IOSignature` so that it can be signed into a
release: shapes as integers, dtypes by name, and quantization scales as `repr(float)` strings
(signed documents carry no floats).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shared.documents import IOSignature, TensorSpec
from shared.errors import InvalidModel

__all__ = ["read_io_signature"]


def _spec(detail: dict[str, Any]) -> TensorSpec:
    dtype = np.dtype(detail["dtype"]).name
    scale, zero_point = detail.get("quantization", (0.0, 0))
    quantized = float(scale) != 0.0
    return TensorSpec(
        name=str(detail["name"]),
        shape=tuple(int(d) for d in detail["shape"]),
        dtype=dtype,
        scale=repr(float(scale)) if quantized else None,
        zero_point=int(zero_point) if quantized else None,
    )


def read_io_signature(path: Path) -> IOSignature:
    """The model's inputs and outputs; `InvalidModel` for anything LiteRT will not load."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    try:
        interpreter = Interpreter(
            model_path=str(path),
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        interpreter.allocate_tensors()
        inputs = tuple(_spec(d) for d in interpreter.get_input_details())
        outputs = tuple(_spec(d) for d in interpreter.get_output_details())
    except (ValueError, RuntimeError) as e:
        raise InvalidModel(f"{path}: LiteRT cannot load it: {e}") from e
    if not inputs or not outputs:
        raise InvalidModel(f"{path}: a model has at least one input and one output")
    return IOSignature(inputs, outputs)
