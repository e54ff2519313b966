"""The tflite-runtime fallback, run by `make test-fallback` in .venv-fallback (numpy<2, no LiteRT).

Imports only what that environment has: numpy, OpenCV, tflite-runtime and the agent's runtime
and processing packages.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from agent.processing import prep_for
from agent.runtime import backend, load_model

ROOT = Path(__file__).resolve().parents[3]
MODELS = ROOT / "examples" / "models"

pytestmark = pytest.mark.fallback


def test_without_litert_the_agent_picks_tflite_runtime() -> None:
    assert importlib.util.find_spec("ai_edge_litert") is None, "run me in .venv-fallback"
    assert np.__version__.startswith("1.")
    assert backend().name == "tflite_runtime"


def test_digits_model_runs_through_the_fallback_and_classifies() -> None:
    model = load_model(MODELS / "digits.tflite", threads=1)
    assert model.backend == "tflite_runtime"
    assert model.signature.inputs[0].shape == (1, 28, 28, 1)
    with np.load(ROOT / "examples" / "data" / "digits-eval.npz") as data:
        xs, ys = data["x"][:200], data["y"][:200]
    predictions = [int(np.argmax(model.invoke([x[None].astype(np.float32)])[0])) for x in xs]
    assert np.mean(np.array(predictions) == ys) > 0.95
    model.close()


def test_quantized_model_and_preprocessing_through_the_fallback() -> None:
    model = load_model(ROOT / "tests" / "data" / "tiny_uint8.tflite", threads=1)
    assert model.backend == "tflite_runtime"
    spec = model.signature.inputs[0]
    assert spec.dtype == "uint8" and spec.scale is not None
    frame = np.full((120, 160, 3), 128, dtype=np.uint8)
    x = prep_for(model.signature)(frame)[0]
    assert x.dtype == np.uint8 and np.all(x == round(128 / 255 / float(spec.scale)))
    scores = model.invoke([x])[0]
    assert scores.shape == (1, 4) and scores.dtype == np.uint8
    assert int(scores.astype(np.int32).sum()) > 0


def test_vibration_model_through_the_fallback() -> None:
    model = load_model(MODELS / "vibration.tflite", threads=1)
    window = np.sin(np.linspace(0, 20, 64 * 3, dtype=np.float32)).reshape(1, 64, 3)
    probabilities = model.invoke([window])[0]
    assert probabilities.shape == (1, 4)
    assert abs(float(probabilities.sum()) - 1.0) < 1e-3
