"""Affine quantization of TFLite tensors: real = (q - zero_point) * scale."""

from __future__ import annotations

import numpy as np

from shared.documents import TensorSpec

__all__ = ["dequantize", "quantize", "real_range"]


def quantize(real: np.ndarray, scale: float, zero_point: int, dtype: np.dtype) -> np.ndarray:
    """q = clip(round(real / scale) + zero_point) in `dtype` (round half to even, as TFLite)."""
    info = np.iinfo(dtype)
    q = np.rint(np.asarray(real, dtype=np.float64) / scale) + zero_point
    result: np.ndarray = np.clip(q, info.min, info.max).astype(dtype)
    return result


def dequantize(values: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Real values of an output tensor (float tensors pass through as float32)."""
    if spec.scale is None:
        return np.asarray(values, dtype=np.float32)
    zero_point = spec.zero_point or 0
    return (values.astype(np.float32) - np.float32(zero_point)) * np.float32(float(spec.scale))


def real_range(spec: TensorSpec) -> tuple[float, float] | None:
    """The real interval a quantized integer tensor can represent, or None."""
    if spec.scale is None:
        return None
    info = np.iinfo(np.dtype(spec.dtype))
    scale, zero_point = float(spec.scale), spec.zero_point or 0
    return (info.min - zero_point) * scale, (info.max - zero_point) * scale
