"""Keras and SavedModel inputs: loading and TensorFlow's TFLite converter.

Everything here needs TensorFlow (the `[train]` extra) and imports it inside the functions, so
importing this module stays cheap and a `.tflite` input never loads TensorFlow.

| method | converter settings |
|---|---|
| `float32` | no optimizations (the baseline) |
| `float16` | `Optimize.DEFAULT`, `supported_types = [float16]` |
| `dynamic_int8` | `Optimize.DEFAULT` |
| `int8` | `Optimize.DEFAULT`, representative dataset, `TFLITE_BUILTINS_INT8`; float32 input and output (quantized inside) unless `int8_io` |
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from cloud.compress.errors import InputRejected, MethodUnavailable

__all__ = ["CONVERTER_METHODS", "convert", "is_saved_model", "load_keras", "tensorflow"]

CONVERTER_METHODS = ("float32", "float16", "dynamic_int8", "int8")


def tensorflow() -> Any:
    """Import TensorFlow, or say that this method needs the `[train]` extra."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as e:
        raise MethodUnavailable(
            "needs TensorFlow: install the [train] extra (pip install 'litefleet[train]')"
        ) from e
    return tf


def is_saved_model(path: Path) -> bool:
    return path.is_dir() and (path / "saved_model.pb").is_file()


def load_keras(path: Path) -> Any:
    """Load a `.keras`/`.h5` model for inference and fine-tuning (no optimizer state)."""
    tensorflow()
    import keras

    try:
        return keras.models.load_model(path, compile=False)
    except (ValueError, TypeError, OSError) as e:
        raise InputRejected(f"{path}: Keras cannot load it: {e}") from e


def _version(tf: Any) -> str:
    return f"TensorFlow {tf.__version__} TFLiteConverter"


def convert(
    model: Any, method: str, representative: np.ndarray | None = None, *, int8_io: bool = False
) -> tuple[bytes, str]:
    """Convert a Keras model or a SavedModel folder (`Path`) with `method`; a full `int8`
    model keeps float32 inputs and outputs unless `int8_io`.

    Returns the `.tflite` bytes and a one-line recipe.
    """
    tf = tensorflow()
    if isinstance(model, Path):
        converter = tf.lite.TFLiteConverter.from_saved_model(str(model))
    else:
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if method == "float32":
        text = "float32 (no optimizations)"
    elif method == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
        text = "float16 weights"
    elif method == "dynamic_int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        text = "dynamic-range int8 (int8 weights, activations quantized at run time)"
    elif method == "int8":
        if representative is None:
            raise MethodUnavailable("int8: needs a representative dataset (--data)")
        samples = representative.astype(np.float32)

        def dataset() -> Any:
            for sample in samples:
                yield [sample[None]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        io_text = "float32 input/output"
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
            io_text = "int8 input/output"
        text = f"full int8 ({io_text}, {len(samples)} representative samples)"
    else:
        raise MethodUnavailable(f"{method}: not a converter method")
    # Keras 3 exports a temporary SavedModel for the converter and prints where, and the int8
    # path warns that the input has no statistics (the representative data gives them).
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
            blob = bytes(converter.convert())
    except Exception as e:  # the converter raises ConverterError, ValueError, ... by stage
        raise MethodUnavailable(f"{method}: TFLite converter failed: {e}") from e
    return blob, f"{method}: {text}; {_version(tf)}"
