"""The compression worker's Keras path: TF converter, pruning, distillation, QAT.

Marked `train`: `make test-train` runs them in .venv-train, where TensorFlow is installed (the
[train] extra); `make test` deselects them. Real model (examples/models/digits.keras), real
training, real LiteRT. The worker imports TensorFlow itself, only on the Keras path.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from cloud.compress import CompressOptions, Report, compress
from device_profiles import load_profile
from device_profiles.profile import DeviceProfile
from shared.canonical import check_canonical_types

pytestmark = pytest.mark.train

REPO = Path(__file__).resolve().parents[2]
KERAS = REPO / "examples" / "models" / "digits.keras"
TRAIN = REPO / "examples" / "data" / "digits-train.npz"
EVAL = REPO / "examples" / "data" / "digits-eval.npz"
ALL = ("float16", "weight_only_int8", "dynamic_int8", "int8", "prune", "distill", "qat")
FAST = CompressOptions(latency_warmup=3, latency_runs=20)


@pytest.fixture(scope="module")
def profile() -> DeviceProfile:
    return load_profile("x86-gateway")


@pytest.fixture(scope="module")
def keras_report(
    tmp_path_factory: pytest.TempPathFactory, profile: DeviceProfile
) -> tuple[Report, Path]:
    out = tmp_path_factory.mktemp("keras")
    return compress(KERAS, profile, TRAIN, EVAL, ALL, out, options=FAST), out


def _drop(report: Report, method: str) -> float:
    base = report.baseline.accuracy
    acc = report.candidate(method).accuracy
    assert base is not None and acc is not None
    return base - acc


def test_every_method_is_built(keras_report: tuple[Report, Path]) -> None:
    report, out = keras_report
    assert report.input_kind == "keras" and report.skipped == ()
    assert [c.method for c in report.candidates] == list(ALL)
    assert report.baseline.accuracy is not None and report.baseline.accuracy >= 0.95
    for c in report.candidates:
        assert (out / f"{c.method}.tflite").stat().st_size == c.bytes
    assert "TFLiteConverter" in report.candidate("float16").recipe
    assert "ai-edge-quantizer" in report.candidate("weight_only_int8").recipe


def test_full_int8_is_under_030x_within_one_point(keras_report: tuple[Report, Path]) -> None:
    report, _ = keras_report
    int8 = report.candidate("int8")
    assert int8.bytes <= 0.30 * report.baseline.bytes
    assert _drop(report, "int8") <= 0.01
    assert int8.input_dtype == "float32" and int8.io_change is None  # int8 inside, float edges


def test_prune_75_percent_zstd_under_040x_within_one_point(
    keras_report: tuple[Report, Path],
) -> None:
    report, _ = keras_report
    prune = report.candidate("prune")
    assert prune.zstd_bytes <= 0.40 * report.baseline.zstd_bytes
    assert prune.no_effect is None  # the same bytes unpacked, but they compress: an effect
    assert _drop(report, "prune") <= 0.01
    # 75 % of every kernel is zero; only biases (~300 numbers) are left whole
    assert prune.nonzero_params <= 0.26 * prune.params
    assert "75% sparsity" in prune.recipe


def test_distill_under_035x_within_two_points(keras_report: tuple[Report, Path]) -> None:
    report, _ = keras_report
    distill = report.candidate("distill")
    assert distill.bytes <= 0.35 * report.baseline.bytes
    assert _drop(report, "distill") <= 0.02
    assert distill.params < 0.5 * report.baseline.params
    assert "temperature 4" in distill.recipe


def test_qat_is_int8_within_one_point(keras_report: tuple[Report, Path]) -> None:
    report, _ = keras_report
    qat = report.candidate("qat")
    assert (
        qat.input_dtype == "float32"
        and qat.io_change is None
        and qat.bytes <= 0.30 * report.baseline.bytes
    )
    assert _drop(report, "qat") <= 0.01


def test_provenance_names_the_keras_parent(keras_report: tuple[Report, Path]) -> None:
    report, out = keras_report
    prov = report.provenance
    assert prov is not None
    check_canonical_types(prov)
    assert prov["parent_sha256"] == hashlib.sha256(KERAS.read_bytes()).hexdigest()
    doc = json.loads((out / "report.json").read_text())
    assert doc["chosen"] == report.chosen == "dynamic_int8"
    assert doc["provenance"]["metrics"]["method"] == "dynamic_int8"


def test_saved_model_input(tmp_path: Path, profile: DeviceProfile) -> None:
    import keras

    model = keras.models.load_model(KERAS, compile=False)
    saved = tmp_path / "digits_savedmodel"
    model.export(str(saved), verbose=False)
    report = compress(
        saved,
        profile,
        TRAIN,
        EVAL,
        ["dynamic_int8", "int8", "prune"],
        tmp_path / "out",
        options=FAST,
    )
    assert report.input_kind == "saved_model"
    assert [c.method for c in report.candidates] == ["dynamic_int8", "int8"]
    assert [s.method for s in report.skipped] == ["prune"]
    assert report.candidate("dynamic_int8").bytes <= 0.35 * report.baseline.bytes
    assert report.provenance is not None and len(report.provenance["parent_sha256"]) == 64
