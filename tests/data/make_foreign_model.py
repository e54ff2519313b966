"""Make `foreign_mobilenet.tflite`: a float model of an architecture the project never trains.

The compression tests need a float `.tflite` that nobody on the project wrote the training for:
different layers (depthwise convolutions, inverted residual blocks with additions, ReLU6,
batch normalization folded by the converter), RGB input at another size. This builds a
MobileNetV2-style network (width multiplier 0.35, 96x96x3 input, 10 classes, shortened to
five inverted-residual blocks so the file stays small) with seeded random weights, gives the
batch-normalization layers seeded non-trivial statistics, and converts it with TensorFlow's
TFLite converter. No weights or data are downloaded.

    python tests/data/make_foreign_model.py        # needs TensorFlow; writes beside this file
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

SEED = 96
ALPHA = 0.35
HERE = Path(__file__).resolve().parent
HE = "he_normal"  # variance-preserving for ReLU: random weights still carry the image through


def _channels(c: float) -> int:
    """MobileNetV2 rounds every width to a multiple of 8."""
    return max(8, int(c * ALPHA + 4) // 8 * 8)


def build(keras):  # type: ignore[no-untyped-def]
    from keras import layers

    def block(x, expansion: int, out: int, stride: int, name: str):  # type: ignore[no-untyped-def]
        inputs = x
        c_in = x.shape[-1]
        if expansion != 1:
            x = layers.Conv2D(
                c_in * expansion, 1, use_bias=False, kernel_initializer=HE, name=f"{name}_expand"
            )(x)
            x = layers.BatchNormalization(name=f"{name}_expand_bn")(x)
            x = layers.ReLU(6.0, name=f"{name}_expand_relu")(x)
        x = layers.DepthwiseConv2D(
            3,
            strides=stride,
            padding="same",
            use_bias=False,
            depthwise_initializer=HE,
            name=f"{name}_dw",
        )(x)
        x = layers.BatchNormalization(name=f"{name}_dw_bn")(x)
        x = layers.ReLU(6.0, name=f"{name}_dw_relu")(x)
        x = layers.Conv2D(out, 1, use_bias=False, kernel_initializer=HE, name=f"{name}_project")(x)
        x = layers.BatchNormalization(name=f"{name}_project_bn")(x)
        if stride == 1 and c_in == out:
            x = layers.Add(name=f"{name}_add")([inputs, x])
        return x

    image = keras.Input(shape=(96, 96, 3), name="rgb")
    x = layers.Conv2D(
        _channels(32),
        3,
        strides=2,
        padding="same",
        use_bias=False,
        kernel_initializer=HE,
        name="stem",
    )(image)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu")(x)
    x = block(x, 1, _channels(16), 1, "b0")
    x = block(x, 6, _channels(24), 2, "b1")
    x = block(x, 6, _channels(24), 1, "b2")
    x = block(x, 6, _channels(32), 2, "b3")
    x = block(x, 6, _channels(32), 1, "b4")
    x = layers.Conv2D(128, 1, use_bias=False, kernel_initializer=HE, name="head")(x)
    x = layers.BatchNormalization(name="head_bn")(x)
    x = layers.ReLU(6.0, name="head_relu")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dense(
        10, name="logits", kernel_initializer=keras.initializers.RandomNormal(stddev=1.0, seed=SEED)
    )(x)
    probs = layers.Softmax(name="probs")(x)
    return keras.Model(image, probs, name="foreign_mobilenet_v2_035_96")


def scenes(n: int, seed: int) -> np.ndarray:
    """`n` seeded 96x96 RGB images in [0, 1]: a colour gradient with a few flat rectangles."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:96, 0:96] / 95.0
    out = np.empty((n, 96, 96, 3), dtype=np.float32)
    for i in range(n):
        slope = rng.uniform(-1.0, 1.0, (2, 3))
        image = slope[0] * xx[..., None] + slope[1] * yy[..., None] + rng.uniform(0.0, 1.0, 3)
        for _ in range(int(rng.integers(1, 5))):
            y0, x0 = rng.integers(0, 80, 2)
            h, w = rng.integers(8, 48, 2)
            image[y0 : y0 + h, x0 : x0 + w] = rng.uniform(0.0, 1.0, 3)
        out[i] = np.clip(image, 0.0, 1.0)
    return out


def set_batch_norm_statistics(keras, model, images: np.ndarray, rng: np.random.Generator) -> None:  # type: ignore[no-untyped-def]
    """Give every batch normalization the statistics of its real input on `images` (layer by
    layer, as training would leave them) and a random scale and shift, so the converter folds
    non-trivial values and the output depends on the image."""
    for layer in model.layers:
        if layer.__class__.__name__ != "BatchNormalization":
            continue
        probe = keras.Model(model.input, layer.input)
        act = np.asarray(probe(images, training=False)).reshape(-1, layer.gamma.shape[0])
        n = act.shape[1]
        layer.set_weights(
            [
                rng.uniform(0.7, 1.3, n).astype(np.float32),  # gamma
                rng.normal(0.0, 0.2, n).astype(np.float32),  # beta
                act.mean(axis=0).astype(np.float32),  # moving mean
                (act.var(axis=0) + 1e-3).astype(np.float32),  # moving variance
            ]
        )


def main() -> int:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(SEED)
    model = build(keras)
    set_batch_norm_statistics(keras, model, scenes(64, SEED), np.random.default_rng(SEED))
    with contextlib.redirect_stdout(io.StringIO()):
        blob = bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    out = HERE / "foreign_mobilenet.tflite"
    out.write_bytes(blob)
    print(f"{out.name}: {len(blob)} bytes, {model.count_params()} parameters, input [1, 96, 96, 3]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
