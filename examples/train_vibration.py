"""Train the sample sensor model on synthetic 3-axis vibration windows.

The windows come from ``vibration_signal.py`` beside this script (seeded; nothing is
downloaded). The model is a small 1-D CNN taking ``[1, 64, 3]`` float32 (x, y, z in g) and
returning the probabilities of normal, imbalance, bearing_fault, looseness.

Writes examples/models/vibration.tflite and examples/models/vibration.labels.txt.
Run with TensorFlow installed (the [train] extra):

    python examples/train_vibration.py
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import vibration_signal  # noqa: E402

SEED = 4321


def build_model(keras):  # type: ignore[no-untyped-def]
    from keras import layers

    return keras.Sequential(
        [
            keras.Input(shape=(vibration_signal.WINDOW, 3), name="window"),
            layers.Conv1D(16, 5, activation="relu", padding="same", name="conv1"),
            layers.MaxPooling1D(2, name="pool1"),
            layers.Conv1D(32, 5, activation="relu", padding="same", name="conv2"),
            layers.MaxPooling1D(2, name="pool2"),
            layers.Conv1D(32, 3, activation="relu", padding="same", name="conv3"),
            layers.GlobalAveragePooling1D(name="gap"),
            layers.Dense(32, activation="relu", name="dense"),
            layers.Dense(len(vibration_signal.CLASSES), activation="softmax", name="probs"),
        ],
        name="vibration",
    )


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
    parser.add_argument("--out", type=Path, default=HERE / "models")
    parser.add_argument("--per-class", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=25)
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()
    args.out.mkdir(parents=True, exist_ok=True)

    x_tr, y_tr = vibration_signal.dataset(args.per_class, seed=SEED)
    x_ev, y_ev = vibration_signal.dataset(args.per_class // 4, seed=SEED + 1)

    model = build_model(keras)
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x_tr, y_tr, epochs=args.epochs, batch_size=64, shuffle=True, verbose=0)

    with contextlib.redirect_stdout(io.StringIO()):
        blob = bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    (args.out / "vibration.tflite").write_bytes(blob)
    (args.out / "vibration.labels.txt").write_text(
        "".join(f"{name}\n" for name in vibration_signal.CLASSES)
    )
    acc = tflite_accuracy(blob, x_ev, y_ev)
    print(f"params            {model.count_params()}")
    print(f"train/eval        {len(y_tr)}/{len(y_ev)}  input [1, 64, 3] float32")
    print(f"vibration.tflite  {len(blob)} bytes  eval accuracy {acc:.4f}")
    return 0 if acc >= 0.95 else 1


if __name__ == "__main__":
    raise SystemExit(main())
