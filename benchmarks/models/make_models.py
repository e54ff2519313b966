"""Generate third-party-style image models for `litefleet-agent bench`, without downloads.

Keras application architectures with `weights=None` (seeded random initialisation), converted
to float32 and to full int8 (uint8 or int8 input/output; a representative dataset of random
images). The files go into a cache folder (default .bench-models/, git-ignored); nothing here is
committed. Needs TensorFlow (the [train] extra), e.g.:

    .venv-train/bin/python benchmarks/models/make_models.py --out .bench-models   (make test-train builds .venv-train)
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import tensorflow as tf


def mobilenet_v2_035() -> tf.keras.Model:
    return tf.keras.applications.MobileNetV2(weights=None, alpha=0.35, input_shape=(160, 160, 3))


def mobilenet_v2_050() -> tf.keras.Model:
    return tf.keras.applications.MobileNetV2(weights=None, alpha=0.5, input_shape=(160, 160, 3))


def mobilenet_v2_035_128() -> tf.keras.Model:
    """About 2 ms per invoke on one x86 core: the smallest model the loop's ratio target covers."""
    return tf.keras.applications.MobileNetV2(weights=None, alpha=0.35, input_shape=(128, 128, 3))


def mobilenet_v3_small() -> tf.keras.Model:
    return tf.keras.applications.MobileNetV3Small(weights=None, input_shape=(224, 224, 3))


def efficientnet_b0() -> tf.keras.Model:
    return tf.keras.applications.EfficientNetB0(weights=None, input_shape=(224, 224, 3))


def resnet_small() -> tf.keras.Model:
    """A ResNet-style network: stem, three stages of two residual blocks, 128x128 input."""
    inputs = tf.keras.Input((128, 128, 3))
    x = tf.keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(inputs)
    for filters, stride in ((32, 1), (64, 2), (128, 2)):
        for block in range(2):
            s = stride if block == 0 else 1
            shortcut = x
            y = tf.keras.layers.Conv2D(filters, 3, strides=s, padding="same")(x)
            y = tf.keras.layers.BatchNormalization()(y)
            y = tf.keras.layers.ReLU()(y)
            y = tf.keras.layers.Conv2D(filters, 3, padding="same")(y)
            y = tf.keras.layers.BatchNormalization()(y)
            if s != 1 or shortcut.shape[-1] != filters:
                shortcut = tf.keras.layers.Conv2D(filters, 1, strides=s)(shortcut)
            x = tf.keras.layers.ReLU()(tf.keras.layers.Add()([y, shortcut]))
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    outputs = tf.keras.layers.Dense(100, activation="softmax")(x)
    return tf.keras.Model(inputs, outputs)


MODELS: dict[str, Callable[[], tf.keras.Model]] = {
    "mobilenet_v2_035_160": mobilenet_v2_035,
    "mobilenet_v2_050_160": mobilenet_v2_050,
    "mobilenet_v2_035_128": mobilenet_v2_035_128,
    "mobilenet_v3_small_224": mobilenet_v3_small,
    "efficientnet_b0_224": efficientnet_b0,
    "resnet_small_128": resnet_small,
}


def convert(model: tf.keras.Model, quantize: str | None) -> bytes:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantize:
        shape = model.input_shape[1:]

        def representative() -> Iterator[list[np.ndarray]]:
            rng = np.random.default_rng(1)
            for _ in range(20):
                yield [rng.random((1, *shape), dtype=np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8 if quantize == "uint8" else tf.int8
        converter.inference_output_type = converter.inference_input_type
    data: bytes = converter.convert()
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(".bench-models"))
    parser.add_argument("--only", nargs="*", help="model names (default: all)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, build in MODELS.items():
        if args.only and name not in args.only:
            continue
        tf.keras.utils.set_random_seed(0)
        model = build()
        for suffix, quantize in (("float32", None), ("int8", "int8"), ("uint8", "uint8")):
            path = args.out / f"{name}_{suffix}.tflite"
            if path.exists():
                continue
            path.write_bytes(convert(model, quantize))
            print(f"{path} {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
