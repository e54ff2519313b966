"""Quantizing a float `.tflite` without TensorFlow, with ai-edge-quantizer.

| method | recipe | weights | activations |
|---|---|---|---|
| `weight_only_int8` | `weight_only_wi8_afp32` | int8 per channel, dequantized before each op | float32 |
| `dynamic_int8` | `dynamic_wi8_afp32` | int8 per channel | quantized on the fly by the kernels |
| `int8` | `static_wi8_ai8` | int8 per channel | int8, ranges from calibration data; int8 model input and output |
| `float16` | float casting of FULLY_CONNECTED, CONV_2D, DEPTHWISE_CONV_2D, CONV_2D_TRANSPOSE weights | float16, dequantized before each op | float32 |
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from cloud.compress.errors import InputRejected, MethodUnavailable

__all__ = ["TFLITE_METHODS", "Quantized", "quantize_tflite"]

TFLITE_METHODS = ("float16", "weight_only_int8", "dynamic_int8", "int8")


@dataclass(frozen=True)
class Quantized:
    blob: bytes
    recipe: str


def _version() -> str:
    from importlib.metadata import version

    return f"ai-edge-quantizer {version('ai-edge-quantizer')}"


def quantize_tflite(blob: bytes, method: str, calibration: np.ndarray | None) -> Quantized:
    """Quantize the float model `blob` with `method`; `calibration` is needed for `int8`."""
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
        q = quantizer.Quantizer(blob, recipe.static_wi8_ai8())
        text = "full int8 (per-channel int8 weights, int8 activations from calibration)"
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
        text += f", calibrated on {len(calibration)} samples"
    try:
        with _quiet():
            result = q.quantize(calibration_result, enable_progress_report=False)
    except (ValueError, RuntimeError, KeyError) as e:
        raise MethodUnavailable(f"{method}: ai-edge-quantizer failed: {e}") from e
    return Quantized(bytes(result.quantized_model), f"{method}: {text}; {_version()}")


def _calibrate(q: object, blob: bytes, calibration: np.ndarray) -> object:
    from ai_edge_litert.interpreter import Interpreter

    signatures = Interpreter(model_content=blob).get_signature_list()
    if len(signatures) != 1:
        raise MethodUnavailable(
            f"int8: calibration needs exactly one signature, the model has {len(signatures)}"
        )
    key, spec = next(iter(signatures.items()))
    if len(spec["inputs"]) != 1:
        raise InputRejected(f"signature {key!r} has {len(spec['inputs'])} inputs, expected one")
    name = spec["inputs"][0]
    samples = [{name: sample[None].astype(np.float32)} for sample in calibration]
    with _quiet():
        return q.calibrate({key: samples})  # type: ignore[attr-defined]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The quantizer's interpreters keep every tensor (its own choice, and it warns about it)
    and its calibrator draws a tqdm bar on stderr: keep both out of our output."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors.*")
        yield
