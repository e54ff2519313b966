"""Generate the tiny quantized test models in this folder (committed; a few KB each).

    tiny_uint8.tflite   input [1, 16, 16, 3] uint8, output [1, 4] uint8 (full integer)
    tiny_int8.tflite    input [1, 16, 16, 3] int8,  output [1, 4] int8  (full integer)

A small seeded convolutional classifier over [0, 1] images, converted with a representative
dataset of random images. Needs TensorFlow:

    .venv-train/bin/python tests/data/make_tiny_quantized.py   (make test-train builds .venv-train)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

HERE = Path(__file__).resolve().parent


def build() -> tf.keras.Model:
    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((16, 16, 3))
    x = tf.keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = tf.keras.layers.MaxPooling2D()(x)
    x = tf.keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    outputs = tf.keras.layers.Dense(4, activation="softmax")(x)
    return tf.keras.Model(inputs, outputs)


def main() -> None:
    model = build()
    for name, dtype in (("tiny_uint8.tflite", tf.uint8), ("tiny_int8.tflite", tf.int8)):
        converter = tf.lite.TFLiteConverter.from_keras_model(model)

        def representative():  # type: ignore[no-untyped-def]
            rng = np.random.default_rng(1)
            for _ in range(32):
                yield [rng.random((1, 16, 16, 3), dtype=np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = dtype
        converter.inference_output_type = dtype
        (HERE / name).write_bytes(converter.convert())
        print(HERE / name, (HERE / name).stat().st_size)


if __name__ == "__main__":
    main()
