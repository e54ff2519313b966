"""Train the sample image classifier on scikit-learn's bundled digits.

The 8x8 digits (values 0..16) are upscaled 3x with nearest-neighbour, padded to 28x28x1 and
scaled to [0, 1], so the model takes MNIST-shaped NHWC input. Everything is seeded, and the
data ships with scikit-learn: nothing is downloaded.

Writes, under examples/:

    models/digits.keras, models/digits.tflite          the float32 classifier
    models/digits-ft.keras, models/digits-ft.tflite    same network, only the last Dense retrained
    models/digits.labels.txt                           0..9, one per line
    data/digits-train.npz, data/digits-eval.npz        x float32 [N,28,28,1], y int64

Run with TensorFlow installed (the [train] extra):

    python examples/train_digits.py
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

SEED = 1234
HERE = Path(__file__).resolve().parent


def load_digits_28() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits as float32 [N, 28, 28, 1] in [0, 1] and int64 labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.float32) / 16.0  # [N, 8, 8]
    big = np.repeat(np.repeat(images, 3, axis=1), 3, axis=2)  # [N, 24, 24]
    big = np.pad(big, ((0, 0), (2, 2), (2, 2)))  # [N, 28, 28]
    return big[..., None].astype(np.float32), bunch.target.astype(np.int64)


def split(x: np.ndarray, y: np.ndarray, eval_share: float = 0.25) -> tuple[np.ndarray, ...]:
    """A stratified, seeded split: the same rows land in eval on every run."""
    from sklearn.model_selection import train_test_split

    x_tr, x_ev, y_tr, y_ev = train_test_split(
        x, y, test_size=eval_share, random_state=SEED, stratify=y
    )
    return x_tr, x_ev, y_tr, y_ev


def build_model(keras):  # type: ignore[no-untyped-def]
    """Three conv blocks and a Dense(128) head: ~52k parameters, ~210 KB as float32 TFLite."""
    from keras import layers

    return keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1), name="image"),
            layers.Conv2D(16, 3, activation="relu", name="conv1"),  # 26x26
            layers.MaxPooling2D(name="pool1"),  # 13x13
            layers.Conv2D(32, 3, activation="relu", name="conv2"),  # 11x11
            layers.MaxPooling2D(name="pool2"),  # 5x5
            layers.Conv2D(32, 3, activation="relu", name="conv3"),  # 3x3
            layers.Flatten(name="flatten"),
            layers.Dense(128, activation="relu", name="dense"),
            layers.Dropout(0.2, name="dropout"),
            layers.Dense(10, activation="softmax", name="logits"),
        ],
        name="digits",
    )


def augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shift each image by up to one pixel and add a little noise."""
    out = np.empty_like(x)
    shifts = rng.integers(-1, 2, size=(len(x), 2))
    for i, (dy, dx) in enumerate(shifts):
        out[i] = np.roll(x[i], (int(dy), int(dx)), axis=(0, 1))
    out += rng.normal(0.0, 0.03, size=out.shape).astype(np.float32)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def save_weights_only_model(keras, model, path: Path) -> None:  # type: ignore[no-untyped-def]
    """Save architecture and weights without the optimizer state (a third of the size)."""
    bare = build_model(keras)
    bare.set_weights(model.get_weights())
    bare.save(path)


def to_tflite(tf, model) -> bytes:  # type: ignore[no-untyped-def]
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    with contextlib.redirect_stdout(io.StringIO()):  # the converter prints its temp export
        return bytes(converter.convert())


def tflite_accuracy(blob: bytes, x: np.ndarray, y: np.ndarray) -> float:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=blob, num_threads=1)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]["index"]
    out = interp.get_output_details()[0]["index"]
    hits = 0
    for xi, yi in zip(x, y, strict=True):
        interp.set_tensor(inp, xi[None])
        interp.invoke()
        hits += int(np.argmax(interp.get_tensor(out)[0]) == yi)
    return hits / len(y)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="examples/ folder to write into")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--ft-epochs", type=int, default=4)
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()

    models_dir = args.out / "models"
    data_dir = args.out / "data"
    models_dir.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)

    x, y = load_digits_28()
    x_tr, x_ev, y_tr, y_ev = split(x, y)
    np.savez_compressed(data_dir / "digits-train.npz", x=x_tr, y=y_tr)
    np.savez_compressed(data_dir / "digits-eval.npz", x=x_ev, y=y_ev)

    model = build_model(keras)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x_tr, y_tr, epochs=args.epochs, batch_size=32, shuffle=True, verbose=0)
    _, keras_acc = model.evaluate(x_ev, y_ev, verbose=0)
    save_weights_only_model(keras, model, models_dir / "digits.keras")
    blob = to_tflite(tf, model)
    (models_dir / "digits.tflite").write_bytes(blob)
    acc = tflite_accuracy(blob, x_ev, y_ev)

    (models_dir / "digits.labels.txt").write_text("".join(f"{i}\n" for i in range(10)))

    # Fine-tune: freeze everything but the output layer, retrain it on shifted, noisy copies.
    # Only the last Dense layer's 1290 numbers change, so a binary delta between the two
    # .tflite files is small.
    for layer in model.layers:
        layer.trainable = layer.name == "logits"
    model.compile(
        optimizer=keras.optimizers.Adam(5e-4),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    rng = np.random.default_rng(SEED)
    x_aug = np.concatenate([x_tr, augment(x_tr, rng)])
    y_aug = np.concatenate([y_tr, y_tr])
    model.fit(x_aug, y_aug, epochs=args.ft_epochs, batch_size=32, shuffle=True, verbose=0)
    for layer in model.layers:
        layer.trainable = True
    save_weights_only_model(keras, model, models_dir / "digits-ft.keras")
    ft_blob = to_tflite(tf, model)
    (models_dir / "digits-ft.tflite").write_bytes(ft_blob)
    ft_acc = tflite_accuracy(ft_blob, x_ev, y_ev)

    print(f"params            {model.count_params()}")
    print(f"train/eval        {len(y_tr)}/{len(y_ev)}  input [1, 28, 28, 1] float32")
    print(f"keras accuracy    {keras_acc:.4f}")
    print(f"digits.tflite     {len(blob)} bytes  eval accuracy {acc:.4f}")
    print(f"digits-ft.tflite  {len(ft_blob)} bytes  eval accuracy {ft_acc:.4f}")
    if acc < 0.95:
        print("accuracy below 0.95", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
