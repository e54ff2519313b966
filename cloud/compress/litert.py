"""Running and inspecting `.tflite` models with LiteRT, the runtime the devices use.

`TFLiteModel` wraps one interpreter: it feeds real-valued inputs (quantizing them when the model
takes int8/uint8), returns every output real-valued (dequantized), and times single inferences.
`weight_stats` reads the flatbuffer to count parameters without running anything.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
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
    """One LiteRT interpreter over a model's bytes, with real-valued inputs and outputs.

    Inputs and outputs are taken from the interpreter's details (in their order), so a model
    needs no SignatureDef and may have several of each.
    """

    def __init__(self, blob: bytes, threads: int = 1) -> None:
        try:
            self._interp = Interpreter(model_content=blob, num_threads=threads)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise InputRejected(f"LiteRT cannot load the model: {e}") from e
        inputs = self._interp.get_input_details()
        outputs = self._interp.get_output_details()
        if not inputs or not outputs:
            raise InputRejected("the model has no inputs or no outputs")
        self._in_indices = [int(d["index"]) for d in inputs]
        self.inputs = [_info(d) for d in inputs]
        self._out_indices = [int(o["index"]) for o in outputs]
        self.outputs = [_info(o) for o in outputs]

    @property
    def input(self) -> TensorInfo:
        """The first input (the only one of most models)."""
        return self.inputs[0]

    def _feed(self, samples: Sequence[np.ndarray]) -> None:
        for index, spec, sample in zip(self._in_indices, self.inputs, samples, strict=True):
            value = sample.reshape(spec.shape)
            if spec.quantized:
                info = np.iinfo(spec.dtype)
                value = np.round(value / spec.scale + spec.zero_point)
                value = np.clip(value, info.min, info.max)
            self._interp.set_tensor(index, value.astype(spec.dtype))

    def _output(self, k: int) -> np.ndarray:
        spec = self.outputs[k]
        raw = np.asarray(self._interp.get_tensor(self._out_indices[k]), dtype=np.float32)
        if spec.quantized:
            raw = (raw - spec.zero_point) * np.float32(spec.scale)
        return raw

    def predict(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run every sample (`inputs[k]` is [N, ...] real values for input k); return each
        output as float32 [N, ...] (its batch dimension of 1 dropped)."""
        results: list[list[np.ndarray]] = [[] for _ in self.outputs]
        for n in range(len(inputs[0])):
            self._feed([x[n] for x in inputs])
            self._interp.invoke()
            for k, spec in enumerate(self.outputs):
                out = self._output(k)
                results[k].append(out[0] if len(spec.shape) > 1 and spec.shape[0] == 1 else out)
        return [np.stack(r).astype(np.float32) for r in results]

    def latency_ms(
        self, samples: Sequence[np.ndarray], warmup: int, runs: int
    ) -> tuple[float, float]:
        """Median and 95th percentile of `runs` timed inferences after `warmup` untimed ones;
        `samples` holds one sample per input."""
        self._feed(samples)
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
