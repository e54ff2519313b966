"""OTA update figures for a float32 model whose fine-tune changes only the last layer.

Prints one JSON line: full and delta artifact bytes (zstd level 19, as `litefleet release`
makes them), their ratio, time from deployment received to model active (delta and full
paths, HTTP on loopback, probation excluded), and the inference loop's gaps: across the swap
itself (last result of the old model to first of the new) and the largest between any two
results while the update ran (verification, download, load and smoke test included), each
also in frame intervals of the paced synthetic camera.

The models, by `--models`:

    examples   (default) examples/models/digits.tflite and digits-ft.tflite (~210 KB, the same
               network with only its last Dense layer retrained): in every clone, no TensorFlow
    large      a ~5 MB pair made once with TensorFlow and cached in
               $XDG_CACHE_HOME/litefleet/benchmarks (default ~/.cache/...); the interpreter is
               $LITEFLEET_TF_PYTHON, else .venv-train/bin/python (`make bench-large` builds
               .venv-train and runs this)

    .venv/bin/python benchmarks/ota_update.py [--fps 50] [--runs 3] [--models examples|large]
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "agent" / "update"))

MAKE_MODELS = r"""
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, tensorflow as tf
out = sys.argv[1]
tf.keras.utils.set_random_seed(0)
inputs = tf.keras.Input((28, 28, 1), batch_size=1, name="image")
x = tf.keras.layers.Flatten()(inputs)
x = tf.keras.layers.Dense(1024, activation="relu")(x)
x = tf.keras.layers.Dense(512, activation="relu")(x)
last = tf.keras.layers.Dense(10, activation="softmax", name="logits")
model = tf.keras.Model(inputs, last(x))
def save(name):
    data = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    open(os.path.join(out, name), "wb").write(data)
save("base.tflite")
kernel, bias = last.get_weights()
rng = np.random.default_rng(1)
last.set_weights([kernel + rng.normal(0, 0.01, kernel.shape).astype("float32"), bias + 0.01])
save("finetuned.tflite")
"""


def models(kind: str) -> tuple[bytes, bytes]:
    if kind == "examples":
        folder = REPO / "examples" / "models"
        return (folder / "digits.tflite").read_bytes(), (folder / "digits-ft.tflite").read_bytes()
    cache = (
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "litefleet" / "benchmarks"
    )
    base, tuned = cache / "base.tflite", cache / "finetuned.tflite"
    if not (base.exists() and tuned.exists()):
        cache.mkdir(parents=True, exist_ok=True)
        python = os.environ.get("LITEFLEET_TF_PYTHON", str(REPO / ".venv-train" / "bin" / "python"))
        if not Path(python).exists():
            raise SystemExit(
                f"--models large needs TensorFlow: {python} does not exist; run "
                "`make bench-large` (it builds .venv-train) or set LITEFLEET_TF_PYTHON"
            )
        subprocess.run(
            [python, "-c", MAKE_MODELS, str(cache)], check=True, stdout=subprocess.DEVNULL
        )
    return base.read_bytes(), tuned.read_bytes()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fps", type=int, default=50, help="pace of the synthetic camera")
    parser.add_argument("--runs", type=int, default=3, help="updates per path (median reported)")
    parser.add_argument(
        "--models",
        choices=("examples", "large"),
        default="examples",
        help="the digits pair from examples/models (default) or a ~5 MB pair made with TensorFlow",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    from conftest import ArtifactServer, Bench, open_device, write_config

    from agent.loop import build_loop
    from agent.runtime import load_model
    from shared.documents import IOSignature, ProbationPolicy, TensorSpec
    from shared.keys import SigningKey

    base, tuned = models(args.models)
    io = IOSignature(
        (TensorSpec("image", (1, 28, 28, 1), "float32"),),
        (TensorSpec("probs", (1, 10), "float32"),),
    )
    keys = [SigningKey.generate()]
    results: dict[str, list[float]] = {
        "delta_s": [],
        "full_s": [],
        "swap_gap_ms": [],
        "update_gap_ms": [],
    }
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        server = ArtifactServer(tmp / "served")
        server.root.mkdir()
        (tmp / "base.tflite").write_bytes(base)
        # probation never settles during the measurement: it is excluded by design
        policy = ProbationPolicy(min_inferences=10**6, max_duration_s=3600)
        try:
            for run in range(args.runs):
                for path in ("delta", "full"):
                    work = tmp / f"{path}-{run}"
                    work.mkdir()
                    config = write_config(
                        work,
                        keys,
                        initial=tmp / "base.tflite",
                        source=f"synthetic:image?fps={args.fps}",
                    )
                    device = open_device(config)
                    stop = threading.Event()
                    loop = build_loop(device.config, load_model(device.updater.recover()), stop)
                    stamps: list[tuple[float, str]] = []
                    loop.add_listener(lambda r, s=stamps: s.append((r.ts, r.model_sha256)))
                    loop.start()
                    device.updater.attach(loop)
                    while len(stamps) < 20:
                        time.sleep(0.01)
                    bench = Bench(server.root, keys, base_url=server.url)
                    release = bench.release(
                        tuned,
                        1,
                        bases=[base] if path == "delta" else None,
                        io=io,
                        probation=policy,
                        level=19,
                    )
                    sizes["full_bytes"] = release["signed"]["artifact"]["size"]
                    if path == "delta":
                        sizes["delta_bytes"] = release["signed"]["deltas"][0]["size"]
                    data = bench.deployment(release)
                    mark = time.monotonic()
                    outcome = device.updater.handle_deployment(data)
                    elapsed = time.monotonic() - mark
                    if outcome.phase != "probation" or outcome.via != path:
                        raise SystemExit(f"update did not activate via {path}: {outcome}")
                    time.sleep(0.3)
                    around = [t for t in stamps if t[0] >= mark]
                    gap = max(b[0] - a[0] for a, b in itertools.pairwise(around))
                    swap = next(b[0] - a[0] for a, b in itertools.pairwise(around) if a[1] != b[1])
                    results[f"{path}_s"].append(elapsed)
                    results["swap_gap_ms"].append(swap * 1000)
                    results["update_gap_ms"].append(gap * 1000)
                    loop.stop()
                    loop.model.close()
                    device.close()
        finally:
            server.close()

    def median(values: list[float]) -> float:
        ordered = sorted(values)
        return ordered[len(ordered) // 2]

    interval_ms = 1000.0 / args.fps
    print(
        json.dumps(
            {
                "benchmark": "ota_update",
                "models": args.models,
                "model_bytes": len(tuned),
                "full_bytes": sizes["full_bytes"],
                "delta_bytes": sizes["delta_bytes"],
                "delta_ratio": round(sizes["delta_bytes"] / sizes["full_bytes"], 4),
                "received_to_active_delta_s": round(median(results["delta_s"]), 3),
                "received_to_active_full_s": round(median(results["full_s"]), 3),
                "frame_interval_ms": round(interval_ms, 1),
                "max_swap_gap_ms": round(max(results["swap_gap_ms"]), 1),
                "max_swap_gap_intervals": round(max(results["swap_gap_ms"]) / interval_ms, 2),
                "max_gap_during_update_ms": round(max(results["update_gap_ms"]), 1),
                "max_gap_during_update_intervals": round(
                    max(results["update_gap_ms"]) / interval_ms, 2
                ),
                "load_average_1m": round(os.getloadavg()[0], 2),
                "runs": args.runs,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
