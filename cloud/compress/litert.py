"""Running and inspecting `.tflite` models with LiteRT, the runtime the devices use.

`TFLiteModel` wraps one interpreter: it feeds real-valued inputs (quantizing them when the model
takes int8/uint8), returns real-valued outputs (dequantized), and times single inferences.
`weight_stats` reads the flatbuffer to count parameters without running anything.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from cloud.compress.errors import InputRejected

__all__ = ["TFLiteModel", "WeightStats", "weight_stats"]


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    scale: float
    zero_point: int

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0 and np.issubdtype(self.dtype, np.integer)


def _info(detail: dict[str, Any]) -> TensorInfo:
    scale, zero_point = detail["quantization"]
    return TensorInfo(
        name=str(detail["name"]),
        shape=tuple(int(d) for d in detail["shape"]),
        dtype=np.dtype(detail["dtype"]),
        scale=float(scale),
        zero_point=int(zero_point),
    )


class TFLiteModel:
    """One LiteRT interpreter over a model's bytes, with real-valued input and output."""

    def __init__(self, blob: bytes, threads: int = 1) -> None:
        try:
            self._interp = Interpreter(model_content=blob, num_threads=threads)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise InputRejected(f"LiteRT cannot load the model: {e}") from e
        inputs = self._interp.get_input_details()
        if len(inputs) != 1:
            raise InputRejected(f"expected a model with one input, found {len(inputs)}")
        self._in_index = int(inputs[0]["index"])
        self.input = _info(inputs[0])
        outputs = self._interp.get_output_details()
        self._out_indices = [int(o["index"]) for o in outputs]
        self.outputs = [_info(o) for o in outputs]

    def _feed(self, sample: np.ndarray) -> None:
        spec = self.input
        value = sample.reshape(spec.shape)
        if spec.quantized:
            info = np.iinfo(spec.dtype)
            value = np.round(value / spec.scale + spec.zero_point)
            value = np.clip(value, info.min, info.max)
        self._interp.set_tensor(self._in_index, value.astype(spec.dtype))

    def _output(self, k: int) -> np.ndarray:
        spec = self.outputs[k]
        raw = np.asarray(self._interp.get_tensor(self._out_indices[k]), dtype=np.float32)
        if spec.quantized:
            raw = (raw - spec.zero_point) * np.float32(spec.scale)
        return raw

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Run every sample of `x` ([N, ...] real values); return the outputs as float32.

        The first output is returned as [N, ...]; models with several outputs are compared on
        the first one, which is the classifier head of the models this worker handles.
        """
        results = []
        for sample in x:
            self._feed(sample)
            self._interp.invoke()
            results.append(self._output(0)[0] if self.outputs[0].shape[0] == 1 else self._output(0))
        return np.stack(results).astype(np.float32)

    def latency_ms(self, sample: np.ndarray, warmup: int, runs: int) -> tuple[float, float]:
        """Median and 95th percentile of `runs` timed inferences after `warmup` untimed ones."""
        self._feed(sample)
        for _ in range(warmup):
            self._interp.invoke()
        times = np.empty(runs, dtype=np.float64)
        for i in range(runs):
            start = time.perf_counter_ns()
            self._interp.invoke()
            times[i] = (time.perf_counter_ns() - start) / 1e6
        return float(np.percentile(times, 50)), float(np.percentile(times, 95))


@dataclass(frozen=True)
class WeightStats:
    params: int  # elements of constant weight tensors (kernels, biases), each buffer once
    nonzero_params: int
    float_model: bool  # no quantized tensor anywhere: a model the quantizers can start from


_WEIGHT_DTYPES = {0: np.float32, 1: np.float16, 3: np.uint8, 7: np.int16, 9: np.int8}
_INT32 = 2
_INT4 = 17


def weight_stats(blob: bytes) -> WeightStats:
    """Count the model's parameters from its flatbuffer (no interpreter needed)."""
    from ai_edge_litert.tools import flatbuffer_utils

    try:
        model = flatbuffer_utils.read_model_from_bytearray(bytearray(blob))
    except Exception as e:  # the flatbuffer reader raises whatever the bytes trigger
        raise InputRejected(f"not a TFLite flatbuffer: {e}") from e
    seen: set[int] = set()
    params = nonzero = 0
    float_model = True
    for subgraph in model.subgraphs or []:
        for tensor in subgraph.tensors or []:
            q = tensor.quantization
            quantized = q is not None and q.scale is not None and len(q.scale) > 0
            float_model = float_model and not quantized
            buffer = model.buffers[tensor.buffer] if tensor.buffer else None
            if buffer is None or buffer.data is None or tensor.buffer in seen:
                continue
            is_weight = (
                tensor.type in _WEIGHT_DTYPES
                or tensor.type == _INT4
                or (
                    tensor.type == _INT32 and quantized  # int32 biases of quantized layers
                )
            )
            if not is_weight:
                continue  # shape constants and the like
            seen.add(tensor.buffer)
            count = int(np.prod(tensor.shape)) if tensor.shape is not None else 0
            params += count
            nonzero += _nonzero(np.asarray(buffer.data, dtype=np.uint8), tensor.type, count, q)
    return WeightStats(params=params, nonzero_params=nonzero, float_model=float_model)


def _nonzero(raw: np.ndarray, tensor_type: int, count: int, q: Any) -> int:
    if tensor_type == _INT4:
        return count  # packed nibbles: not worth decoding for a statistic
    dtype = np.int32 if tensor_type == _INT32 else _WEIGHT_DTYPES[tensor_type]
    values = raw.view(dtype)[:count]
    zero = 0
    if tensor_type == 3 and q is not None and q.zeroPoint is not None and len(q.zeroPoint) == 1:
        zero = int(q.zeroPoint[0])  # uint8 weights: "zero" is the zero point
    return int(np.count_nonzero(values != zero))
