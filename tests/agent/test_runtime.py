"""The runtime: real .tflite files in real LiteRT interpreters."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pytest

from agent.runtime import backend, load_model
from shared.documents import IOSignature
from shared.errors import InvalidModel

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "examples" / "models" / "digits.tflite"
VIBRATION = ROOT / "examples" / "models" / "vibration.tflite"
TINY_INT8 = ROOT / "tests" / "data" / "tiny_int8.tflite"
TINY_UINT8 = ROOT / "tests" / "data" / "tiny_uint8.tflite"


def test_litert_is_the_first_choice() -> None:
    assert backend().name == "litert"


def test_digits_model_classifies_held_out_digits() -> None:
    model = load_model(DIGITS, threads=1)
    with np.load(ROOT / "examples" / "data" / "digits-eval.npz") as data:
        xs, ys = data["x"][:100], data["y"][:100]
    predictions = [int(np.argmax(model.invoke([x[None].astype(np.float32)])[0])) for x in xs]
    assert np.mean(np.array(predictions) == ys) > 0.95
    assert model.sha256 == hashlib.sha256(DIGITS.read_bytes()).hexdigest()
    assert model.backend == "litert"
    model.close()


def test_signature_is_read_from_the_model() -> None:
    digits = load_model(DIGITS, threads=1).signature
    assert digits.inputs[0].shape == (1, 28, 28, 1)
    assert digits.inputs[0].dtype == "float32" and not digits.inputs[0].quantized
    assert digits.outputs[0].shape == (1, 10)
    vibration = load_model(VIBRATION, threads=1).signature
    assert vibration.inputs[0].shape == (1, 64, 3)


def test_quantized_signature_carries_scale_as_decimal_string_and_zero_point() -> None:
    spec = load_model(TINY_INT8, threads=1).signature.inputs[0]
    assert spec.dtype == "int8"
    assert spec.zero_point == -128
    assert spec.scale is not None and abs(float(spec.scale) - 1 / 255) < 1e-5
    assert spec.scale == repr(float(spec.scale))
    # what goes into a signed release parses back to the same signature
    sig = load_model(TINY_UINT8, threads=1).signature
    assert IOSignature.parse(sig.to_dict(), "io") == sig


def test_sample_input_fits_every_input_and_invokes() -> None:
    for path in (DIGITS, VIBRATION, TINY_INT8, TINY_UINT8):
        model = load_model(path, threads=1)
        sample = model.sample_input()
        for array, spec in zip(sample, model.signature.inputs, strict=True):
            assert array.shape == spec.shape and array.dtype == np.dtype(spec.dtype)
        outputs = model.invoke(sample)
        assert outputs[0].shape == model.signature.outputs[0].shape


@pytest.mark.parametrize(
    "content", [b"", b"not a model at all", b"\x00\x00\x00\x00TFL3" + b"\x00" * 64]
)
def test_garbage_is_invalid_model(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(content)
    with pytest.raises(InvalidModel) as e:
        load_model(bad)
    assert e.value.reason == "invalid_model"


def test_truncated_model_is_invalid(tmp_path: Path) -> None:
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(DIGITS.read_bytes()[: DIGITS.stat().st_size // 2])
    with pytest.raises(InvalidModel):
        load_model(cut)


def test_missing_file_is_invalid_model(tmp_path: Path) -> None:
    with pytest.raises(InvalidModel, match="cannot read"):
        load_model(tmp_path / "absent.tflite")


def test_missing_delegate_warns_and_runs_on_cpu(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="agent.runtime.model"):
        model = load_model(DIGITS, threads=1, delegates=("libedgetpu-absent.so.1",))
    assert model.delegates == ()
    assert any(
        "libedgetpu-absent.so.1" in r.getMessage() and "CPU" in r.getMessage()
        for r in caplog.records
    )
    assert model.invoke(model.sample_input())[0].shape == (1, 10)


def test_closed_model_refuses_to_invoke() -> None:
    model = load_model(DIGITS, threads=1)
    sample = model.sample_input()
    model.close()
    assert model.closed
    with pytest.raises(RuntimeError, match="closed"):
        model.invoke(sample)


def test_wrong_input_shape_raises_and_model_keeps_working() -> None:
    model = load_model(DIGITS, threads=1)
    with pytest.raises(ValueError):
        model.invoke([np.zeros((1, 10, 10, 1), np.float32)])
    assert model.invoke(model.sample_input())[0].shape == (1, 10)
