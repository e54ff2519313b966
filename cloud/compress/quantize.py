"""Quantizing a float `.tflite` without TensorFlow, with ai-edge-quantizer.

| method | recipe | weights | activations |
|---|---|---|---|
| `weight_only_int8` | `weight_only_wi8_afp32` | int8 per channel, dequantized before each op | float32 |
| `dynamic_int8` | `dynamic_wi8_afp32` | int8 per channel | quantized on the fly by the kernels |
| `int8` | `static_wi8_ai8` | int8 per channel | int8, ranges from calibration data; the model's inputs and outputs stay float32 (quantized and dequantized inside) unless `int8_io` |
| `float16` | float casting of FULLY_CONNECTED, CONV_2D, DEPTHWISE_CONV_2D, CONV_2D_TRANSPOSE weights | float16, dequantized before each op | float32 |

The quantizer starts from a float32 graph: a model whose weights are float16 behind `DEQUANTIZE`
ops is folded to float32 first by the caller (`cloud.compress.graph`). Calibration runs a
signature; a model without one gets `serving_default` added for it (`graph.with_signature`).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from cloud.compress.errors import MethodUnavailable
from cloud.compress.graph import copy_io_names, with_signature

__all__ = ["TFLITE_METHODS", "Quantized", "quantize_tflite"]

TFLITE_METHODS = ("float16", "weight_only_int8", "dynamic_int8", "int8")


@dataclass(frozen=True)
class Quantized:
    blob: bytes
    recipe: str


def _version() -> str:
    from importlib.metadata import version

    return f"ai-edge-quantizer {version('ai-edge-quantizer')}"


def quantize_tflite(
    blob: bytes, method: str, calibration: list[np.ndarray] | None, *, int8_io: bool = False
) -> Quantized:
    """Quantize the float model `blob` with `method`; `calibration` (one [N, ...] array per
    model input) is needed for `int8`, whose inputs and outputs are int8 only with `int8_io`."""
    from ai_edge_quantizer import qtyping, quantizer, recipe

    if method == "weight_only_int8":
        q = quantizer.Quantizer(blob, recipe.weight_only_wi8_afp32())
        text = "weight-only int8 (per-channel symmetric weights, float32 compute)"
    elif method == "dynamic_int8":
        q = quantizer.Quantizer(blob, recipe.dynamic_wi8_afp32())
        text = (
            "dynamic-range int8 (per-channel symmetric weights, activations quantized at run time)"
        )
    elif method == "int8":
        blob = with_signature(blob)
        q = quantizer.Quantizer(blob, recipe.static_wi8_ai8())
        text = "full int8 (per-channel int8 weights, int8 activations from calibration"
        if int8_io:
            text += ", int8 inputs and outputs)"
        else:
            for op in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
                q.update_quantization_recipe(
                    regex=".*",
                    operation_name=op,
                    algorithm_key=quantizer.AlgorithmName.NO_QUANTIZE,
                )
            text += ", float32 inputs and outputs)"
    elif method == "float16":
        q = quantizer.Quantizer(blob)
        for op in (
            qtyping.TFLOperationName.FULLY_CONNECTED,
            qtyping.TFLOperationName.CONV_2D,
            qtyping.TFLOperationName.DEPTHWISE_CONV_2D,
            qtyping.TFLOperationName.CONV_2D_TRANSPOSE,
        ):
            q.update_quantization_recipe(
                regex=".*",
                operation_name=op,
                algorithm_key=quantizer.AlgorithmName.FLOAT_CASTING,
                op_config=qtyping.OpQuantizationConfig(
                    weight_tensor_config=qtyping.TensorQuantizationConfig(
                        num_bits=16, dtype=qtyping.TensorDataType.FLOAT
                    ),
                    compute_precision=qtyping.ComputePrecision.FLOAT,
                    explicit_dequantize=True,
                ),
            )
        text = "float16 weights of conv and fully connected layers, float32 compute"
    else:
        raise MethodUnavailable(f"{method}: not a method for a .tflite input")

    calibration_result = None
    if q.need_calibration:
        if calibration is None:
            raise MethodUnavailable(f"{method}: needs calibration samples (--data)")
        calibration_result = _calibrate(q, blob, calibration)
        text += f", calibrated on {len(calibration[0])} samples"
    try:
        with _quiet():
            result = q.quantize(calibration_result, enable_progress_report=False)
    except (ValueError, RuntimeError, KeyError) as e:
        raise MethodUnavailable(f"{method}: ai-edge-quantizer failed: {e}") from e
    quantized = copy_io_names(blob, bytes(result.quantized_model))
    return Quantized(quantized, f"{method}: {text}; {_version()}")


def _calibrate(q: object, blob: bytes, calibration: list[np.ndarray]) -> object:
    """Run the calibration samples through the model's (first) signature, matching its inputs
    to the interpreter's input details by tensor index."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=blob)
    key = next(iter(interpreter.get_signature_list()))
    runner = interpreter.get_signature_runner(key)
    by_tensor = {int(d["index"]): k for k, d in enumerate(interpreter.get_input_details())}
    names = {
        name: by_tensor[int(detail["index"])] for name, detail in runner.get_input_details().items()
    }
    samples = [
        {name: calibration[k][n][None].astype(np.float32) for name, k in names.items()}
        for n in range(len(calibration[0]))
    ]
    with _quiet():
        return q.calibrate({key: samples})  # type: ignore[attr-defined]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The quantizer's interpreters keep every tensor (its own choice, and it warns about it)
    and its calibrator draws a tqdm bar on stderr: keep both out of our output."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors.*")
        yield
