"""Make `digits-bad.tflite`: a model that loads and runs but must fail probation.

It is `digits-ft` with the columns of its last Dense layer rotated by one class, so for every
input it answers "the next digit". Its input/output signature is identical and it invokes
fine, so every pre-install check passes; only probation's agreement check with the model it
replaces (on the same frames) can catch it. The demo releases it to show an automatic rollback.

Run with TensorFlow installed (the [train] extra):

    python examples/make_bad_model.py
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

HERE = Path(__file__).resolve().parent


def main() -> int:
    import tensorflow as tf
    from tensorflow import keras

    model = keras.models.load_model(HERE / "models" / "digits-ft.keras", compile=False)
    logits = model.get_layer("logits")
    kernel, bias = logits.get_weights()
    logits.set_weights([np.roll(kernel, 1, axis=1), np.roll(bias, 1)])
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    with contextlib.redirect_stdout(io.StringIO()):
        blob = bytes(converter.convert())
    out = HERE / "models" / "digits-bad.tflite"
    out.write_bytes(blob)
    data = np.load(HERE / "data" / "digits-eval.npz")
    interpreter = tf.lite.Interpreter(model_content=blob)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]["index"]
    outp = interpreter.get_output_details()[0]["index"]
    shifted = 0
    for x, y in zip(data["x"][:200], data["y"][:200], strict=True):
        interpreter.set_tensor(inp, x[None])
        interpreter.invoke()
        shifted += int(np.argmax(interpreter.get_tensor(outp)) == (y + 1) % 10)
    print(f"{out}: {len(blob)} bytes; answers the next digit on {shifted}/200 eval images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
