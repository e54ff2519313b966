"""Make the compression tests' models shaped like the ones published in public model zoos.

Published TFLite models are rarely made the way our own scripts make them: their weights are
often stored as float16 behind `DEQUANTIZE` ops (the converter's float16 option), many have no
SignatureDef, and detectors and segmenters have several or image-shaped outputs. This script
builds four small networks with seeded random weights (batch normalization given the statistics
of real inputs, as in make_foreign_model.py) and writes, beside itself:

| file | made as | input | outputs |
|---|---|---|---|
| `fp16_classifier.tflite` | float16 weights, with its signature | [1, 64, 64, 3] | probabilities [1, 10] |
| `fp16_nosig_classifier.tflite` | the same file with its SignatureDef removed | [1, 64, 64, 3] | [1, 10] |
| `fp16_detector.tflite` | float16 weights, no SignatureDef | [1, 96, 96, 3] | boxes [1, 288, 4] (y1, x1, y2, x2 in [0, 1]); class scores [1, 288, 3] |
| `float_segmenter.tflite` | float32 | [1, 64, 64, 3] | foreground mask [1, 64, 64, 1] in [0, 1] |
| `fp16_two_inputs.tflite` | float16 weights, no SignatureDef | image [1, 32, 32, 3] and features [1, 8] | probabilities [1, 5] |

    python tests/data/make_fp16_models.py        # needs TensorFlow; writes beside this file

No weights or data are downloaded.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from make_foreign_model import scenes, set_batch_norm_statistics  # noqa: E402

SEED = 16
HE = "he_normal"


def features(n: int, seed: int) -> np.ndarray:
    """`n` seeded feature vectors for the two-input model's second input."""
    return np.random.default_rng(seed).normal(0.0, 1.0, (n, 8)).astype(np.float32)


def _conv(layers, x, filters: int, stride: int, name: str):  # type: ignore[no-untyped-def]
    x = layers.Conv2D(
        filters, 3, strides=stride, padding="same", use_bias=False, kernel_initializer=HE, name=name
    )(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_relu")(x)


def classifier(keras):  # type: ignore[no-untyped-def]
    from keras import layers

    image = keras.Input(shape=(64, 64, 3), batch_size=1, name="image")
    x = image
    for i, filters in enumerate((16, 32, 64, 128)):
        x = _conv(layers, x, filters, 2, f"c{i}")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dense(
        10, kernel_initializer=keras.initializers.RandomNormal(stddev=1.0, seed=SEED), name="logits"
    )(x)
    return keras.Model(image, layers.Softmax(name="probs")(x), name="fp16_classifier")


def detector(keras):  # type: ignore[no-untyped-def]
    """An SSD-like head over a 12x12 feature map, two anchors per cell: 288 boxes."""
    from keras import layers

    image = keras.Input(shape=(96, 96, 3), batch_size=1, name="image")
    x = image
    for i, filters in enumerate((16, 32, 64)):
        x = _conv(layers, x, filters, 2, f"c{i}")
    x = _conv(layers, x, 128, 1, "c3")
    raw = layers.Conv2D(8, 1, name="box_head")(x)
    raw = layers.Activation("sigmoid", name="box_sigmoid")(layers.Reshape((288, 4))(raw))
    centre, size = raw[..., :2], raw[..., 2:] * 0.5
    boxes = layers.Concatenate(name="boxes")([centre - size * 0.5, centre + size * 0.5])
    scores = layers.Conv2D(6, 1, name="class_head")(x)
    scores = layers.Softmax(name="scores")(layers.Reshape((288, 3))(scores))
    return keras.Model(image, [boxes, scores], name="fp16_detector")


def segmenter(keras):  # type: ignore[no-untyped-def]
    from keras import layers

    image = keras.Input(shape=(64, 64, 3), batch_size=1, name="image")
    x = image
    for i, filters in enumerate((16, 32, 64)):
        x = _conv(layers, x, filters, 2, f"down{i}")
    x = _conv(layers, x, 64, 1, "middle")
    for i, filters in enumerate((32, 16, 8)):
        x = layers.UpSampling2D(2, name=f"up{i}")(x)
        x = _conv(layers, x, filters, 1, f"up{i}_conv")
    mask = layers.Conv2D(1, 1, activation="sigmoid", name="mask")(x)
    return keras.Model(image, mask, name="float_segmenter")


def two_inputs(keras):  # type: ignore[no-untyped-def]
    """An image and a feature vector (say, the camera's settings) into one classifier."""
    from keras import layers

    image = keras.Input(shape=(32, 32, 3), batch_size=1, name="image")
    features = keras.Input(shape=(8,), batch_size=1, name="features")
    x = image
    for i, filters in enumerate((16, 32, 64, 96)):
        x = _conv(layers, x, filters, 2, f"c{i}")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    f = layers.Dense(16, activation="relu", kernel_initializer=HE, name="features_dense")(features)
    x = layers.Concatenate(name="join")([x, f])
    x = layers.Dense(
        5, kernel_initializer=keras.initializers.RandomNormal(stddev=1.0, seed=SEED), name="logits"
    )(x)
    return keras.Model([image, features], layers.Softmax(name="probs")(x), name="fp16_two_inputs")


def strip_signatures(blob: bytes) -> bytes:
    """The same model without SignatureDefs, as many published models come."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(blob))
    model.signatureDefs = []
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def convert(tf, model, float16: bool) -> bytes:  # type: ignore[no-untyped-def]
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if float16:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    with contextlib.redirect_stdout(io.StringIO()):
        return bytes(converter.convert())


def main() -> int:
    import keras
    import tensorflow as tf

    made: dict[str, bytes] = {}
    for name, build, size, float16 in (
        ("classifier", classifier, 64, True),
        ("detector", detector, 96, True),
        ("segmenter", segmenter, 64, False),
        ("two_inputs", two_inputs, 32, True),
    ):
        keras.utils.set_random_seed(SEED)
        model = build(keras)
        images = scenes(64, SEED)  # 96x96
        if size != 96:
            images = tf.image.resize(images, (size, size)).numpy()
        inputs = images if len(model.inputs) == 1 else [images, features(64, SEED)]
        set_batch_norm_statistics(keras, model, inputs, np.random.default_rng(SEED))
        made[name] = convert(tf, model, float16)
    files = {
        "fp16_classifier.tflite": made["classifier"],
        "fp16_nosig_classifier.tflite": strip_signatures(made["classifier"]),
        "fp16_detector.tflite": strip_signatures(made["detector"]),
        "float_segmenter.tflite": made["segmenter"],
        "fp16_two_inputs.tflite": strip_signatures(made["two_inputs"]),
    }
    for file, blob in files.items():
        (HERE / file).write_bytes(blob)
        print(f"{file}: {len(blob)} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
